package core

import (
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// maxRecent bounds the committed-entry cache the core attaches to
// ApplyCommitted; beyond it the apply actor reads storage.
const maxRecent = 4096

func (c *Core) logger() *slog.Logger { return c.cfg.Logger }

// ---- loading ----

func (c *Core) load(st *messages.InitialState) error {
	if st == nil {
		st = &messages.InitialState{}
	}
	if id := st.GetIdentity(); id != nil {
		if id.GetNodeId() != 0 && id.GetNodeId() != c.cfg.ID {
			return fmt.Errorf("core: storage belongs to node %d, not %d", id.GetNodeId(), c.cfg.ID)
		}
		if id.GetClusterId() != "" && id.GetClusterId() != c.cfg.ClusterID {
			return fmt.Errorf("core: storage belongs to cluster %q, not %q", id.GetClusterId(), c.cfg.ClusterID)
		}
		if id.GetGroupId() != c.cfg.GroupID {
			return fmt.Errorf("core: storage belongs to group %d, not %d", id.GetGroupId(), c.cfg.GroupID)
		}
	}
	c.snap = st.GetSnapshot()
	if c.snap == nil {
		c.snap = &messages.SnapshotMeta{}
	}
	first, last := st.GetFirstIndex(), st.GetLastIndex()
	if first == 0 {
		first = c.snap.GetIndex() + 1
	}
	if last < first-1 {
		if last != 0 {
			return fmt.Errorf("core: initial state: last index %d before first index %d", last, first)
		}
		last = first - 1
	}
	if first > c.snap.GetIndex()+1 {
		return fmt.Errorf("core: initial state: log starts at %d after snapshot index %d", first, c.snap.GetIndex())
	}
	if last < c.snap.GetIndex() {
		return fmt.Errorf("core: initial state: log ends at %d before snapshot index %d", last, c.snap.GetIndex())
	}
	baseKnown := first-1 == c.snap.GetIndex()
	ti, err := NewTermIndex(first, last, st.GetTermRuns(), c.snap.GetTerm(), baseKnown)
	if err != nil {
		return err
	}
	if t, ok := ti.Term(c.snap.GetIndex()); ok && c.snap.GetIndex() >= first && t != c.snap.GetTerm() {
		return fmt.Errorf("core: initial state: snapshot term %d differs from log term %d at %d", c.snap.GetTerm(), t, c.snap.GetIndex())
	}
	c.ti = ti
	hs := st.GetHardState()
	c.term, c.vote = hs.GetTerm(), hs.GetVote()
	if ti.LastTerm() > c.term {
		return fmt.Errorf("core: initial state: log term %d above hard state term %d", ti.LastTerm(), c.term)
	}
	if c.snap.GetTerm() > c.term {
		return fmt.Errorf("core: initial state: snapshot term %d above hard state term %d", c.snap.GetTerm(), c.term)
	}
	c.commit = max(min(hs.GetCommit(), last), c.snap.GetIndex())
	var prev uint64
	for _, m := range st.GetMemberships() {
		if m.GetIndex() <= c.snap.GetIndex() {
			continue
		}
		if m.GetIndex() > last || m.GetIndex() <= prev {
			return fmt.Errorf("core: initial state: membership at %d out of order or beyond the log", m.GetIndex())
		}
		prev = m.GetIndex()
		c.confs = append(c.confs, m)
	}
	c.hsEmitted = hsVals{c.term, c.vote}
	c.durable = last
	c.applied = c.snap.GetIndex()
	c.applyEmitted = c.snap.GetIndex()
	c.nextSeq = 1
	c.role = c.followerRole()
	c.lastSoft = SoftState{Role: c.role, Term: c.term}
	c.resetElection()
	c.maybeApply()
	return nil
}

// ---- small accessors ----

func (c *Core) termAt(i uint64) (uint64, bool) {
	if i == c.snap.GetIndex() && i > 0 {
		return c.snap.GetTerm(), true
	}
	return c.ti.Term(i)
}

func (c *Core) hdr(to uint64) *messages.Header {
	return &messages.Header{ClusterId: c.cfg.ClusterID, GroupId: c.cfg.GroupID, From: c.cfg.ID, To: to, Term: c.term}
}

func (c *Core) followerRole() messages.Role {
	m, _ := c.latestConf()
	if isVoter(m, c.cfg.ID) {
		return messages.Role_ROLE_FOLLOWER
	}
	return messages.Role_ROLE_LEARNER
}

// promotable reports whether this node may start an election: its storage
// works and it is a voter of its latest configuration, or that
// configuration is not committed yet and it is a voter of the committed one.
//
// The second case is a leader that appended a C_new which removes it and
// crashed before C_new committed. The other voters may lack C_new, and
// their logs are then behind this node's, so none of them can win without
// its vote, which it must refuse them. It campaigns under C_new instead,
// counting only C_new's voters, as a leader outside C_new does until C_new
// commits (Raft thesis, 4.2.2), and steps down once it has.
func (c *Core) promotable() bool {
	if c.storageErr != nil || c.stopped {
		return false
	}
	m, idx := c.latestConf()
	if isVoter(m, c.cfg.ID) {
		return true
	}
	if idx <= c.commit {
		return false
	}
	committed, _ := c.committedConf()
	return isVoter(committed, c.cfg.ID)
}

func (c *Core) committedInTerm() bool {
	t, ok := c.termAt(c.commit)
	return ok && t == c.term
}

func (c *Core) resetElection() {
	c.electionElapsed = 0
	e := c.cfg.ElectionTicks
	c.randomizedElectionTimeout = e + c.cfg.Rand.IntN(e)
}

func (c *Core) leaderAddress(id uint64) string {
	m, _ := c.latestConf()
	return m.GetAddresses()[id]
}

func errOf(code messages.ErrorCode, format string, args ...any) *messages.Error {
	return &messages.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (c *Core) notLeader() *messages.Error {
	e := errOf(messages.ErrorCode_ERROR_CODE_NOT_LEADER, "node %d is not the leader", c.cfg.ID)
	if c.leader != 0 && c.leader != c.cfg.ID {
		e.LeaderId = c.leader
		e.LeaderAddress = c.leaderAddress(c.leader)
	}
	return e
}

// ---- output ----

// pendingAppend returns the StorageAppend of the Ready being built,
// creating it when needed. Everything persisted between two Ready calls
// goes into one append: one fsync.
func (c *Core) pendingAppend() *messages.StorageAppend {
	if n := len(c.rd.Persist); n > 0 {
		return c.rd.Persist[n-1]
	}
	ap := &messages.StorageAppend{GroupId: c.cfg.GroupID, Seq: c.nextSeq}
	c.nextSeq++
	c.rd.Persist = append(c.rd.Persist, ap)
	c.pendingSeq = append(c.pendingSeq, seqMark{seq: ap.Seq, last: c.ti.LastIndex()})
	return ap
}

func (c *Core) hardState() *messages.HardState {
	return &messages.HardState{Term: c.term, Vote: c.vote, Commit: c.commit}
}

// hsVals are the term and vote of the hard state last queued for storage.
type hsVals struct{ term, vote uint64 }

// persistHardState queues the hard state for the next append.
func (c *Core) persistHardState() {
	ap := c.pendingAppend()
	hs := c.hardState()
	ap.HardState = hs
	c.hsEmitted = hsVals{hs.Term, hs.Vote}
}

// unpersisted returns the seq that output produced now depends on: the
// append being built, or the newest one not yet durable; 0 when everything
// is durable.
func (c *Core) unpersisted() uint64 {
	if n := len(c.rd.Persist); n > 0 {
		return c.rd.Persist[n-1].Seq
	}
	if c.nextSeq-1 > c.durableSeq {
		return c.nextSeq - 1
	}
	return 0
}

// send queues a wire message. It waits for every append queued so far to
// be durable: a reply never reveals a term, vote or entry that a crash
// could take back.
func (c *Core) send(m proto.Message) {
	if s := c.unpersisted(); s != 0 {
		c.held = append(c.held, heldItem{seq: s, kind: heldSend, msg: m})
		return
	}
	c.rd.Send = append(c.rd.Send, m)
}

// respond answers a client now.
func (c *Core) respond(h Handle, m proto.Message) {
	c.rd.Responses = append(c.rd.Responses, Response{Handle: h, Msg: m})
}

// respondDurable answers a client once what is queued now is durable.
func (c *Core) respondDurable(h Handle, m proto.Message) {
	if s := c.unpersisted(); s != 0 {
		c.held = append(c.held, heldItem{seq: s, kind: heldResponse, msg: Response{Handle: h, Msg: m}})
		return
	}
	c.respond(h, m)
}

func (c *Core) applyDurable(m proto.Message) {
	if s := c.unpersisted(); s != 0 {
		c.held = append(c.held, heldItem{seq: s, kind: heldApply, msg: m})
		return
	}
	c.rd.Apply = append(c.rd.Apply, m)
}

func (c *Core) releaseHeld() {
	k := 0
	for ; k < len(c.held) && c.held[k].seq <= c.durableSeq; k++ {
		h := c.held[k]
		switch h.kind {
		case heldSend:
			c.rd.Send = append(c.rd.Send, h.msg.(proto.Message))
		case heldResponse:
			c.rd.Responses = append(c.rd.Responses, h.msg.(Response))
		case heldApply:
			c.rd.Apply = append(c.rd.Apply, h.msg.(proto.Message))
		}
	}
	c.held = c.held[k:]
}

// notify queues (or updates) the ReplicationNotify of the Ready being
// built. Entries are the leader's new entries, in order.
func (c *Core) notify(entries []*messages.Entry, heartbeat bool) {
	if c.role != messages.Role_ROLE_LEADER {
		return
	}
	var n *messages.ReplicationNotify
	if k := len(c.rd.Replicate); k > 0 {
		if last, ok := c.rd.Replicate[k-1].(*messages.ReplicationNotify); ok && last.Term == c.term {
			n = last
		}
	}
	if n == nil {
		n = &messages.ReplicationNotify{Term: c.term}
		c.rd.Replicate = append(c.rd.Replicate, n)
	}
	n.Entries = append(n.Entries, entries...)
	n.LastIndex = c.ti.LastIndex()
	n.LastTerm = c.ti.LastTerm()
	n.Commit = c.commit
	n.DurableIndex = c.durable
	n.FirstIndex = c.ti.FirstIndex()
	if c.snap.GetIndex() > 0 {
		n.Snapshot = c.snap
	}
	if heartbeat {
		n.Heartbeat = true
		n.ReadSeq = c.readSeq
	}
}

func (c *Core) updateSoft() {
	s := SoftState{Role: c.role, Term: c.term, Leader: c.leader}
	if s != c.lastSoft {
		c.lastSoft = s
		// A copy, so that s stays on the stack: this runs on every input
		// and the state rarely changes.
		changed := s
		c.rd.SoftState = &changed
	}
}

// ---- the local log ----

// appendLocal appends entries to the log index and the pending append.
// entries[0].Index may be at most LastIndex()+1; the caller has truncated.
func (c *Core) appendLocal(entries ...*messages.Entry) {
	if len(entries) == 0 {
		return
	}
	ap := c.pendingAppend()
	if n := len(ap.Entries); n > 0 {
		first := entries[0].GetIndex()
		// A truncation within the same Ready replaces the pending suffix.
		k := 0
		for k < n && ap.Entries[k].GetIndex() < first {
			k++
		}
		ap.Entries = ap.Entries[:k]
	}
	for _, e := range entries {
		if err := c.ti.Append(e.GetIndex(), e.GetTerm()); err != nil {
			// Callers validate first; this is a bug, not an input error.
			c.logger().Error("raftor: append out of order", "err", err)
			return
		}
		ap.Entries = append(ap.Entries, e)
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			c.confs = append(c.confs, &messages.MembershipEntry{Index: e.GetIndex(), Term: e.GetTerm(), Membership: e.GetMembership()})
		}
		if n := len(c.recent); n == 0 || c.recent[n-1].GetIndex()+1 == e.GetIndex() {
			c.recent = append(c.recent, e)
		} else {
			c.recent = append(c.recent[:0], e)
		}
	}
	if len(c.recent) > maxRecent {
		c.recent = slices.Delete(c.recent, 0, len(c.recent)-maxRecent)
	}
	c.pendingSeq[len(c.pendingSeq)-1].last = c.ti.LastIndex()
	// Term and vote must be durable before anything that depends on them
	// leaves the node; the commit index need not be (Raft's volatile
	// state), and goes along only when the hard state is written anyway.
	// Rewriting the hard state with every append would put one key into
	// every table a Pebble log flushes, so that the tables overlapped and
	// Pebble's compactions rewrote the log over and over (7.5 times what
	// was flushed in store's TestSteadyLogIsNotRewrittenByCompactions;
	// none without it).
	if c.hsEmitted != (hsVals{c.term, c.vote}) {
		c.persistHardState()
	}
	c.refreshFollowerRole()
}

// truncateAfter drops the uncommitted suffix after i.
func (c *Core) truncateAfter(i uint64) {
	c.ti.TruncateAfter(i)
	for len(c.confs) > 0 && c.confs[len(c.confs)-1].GetIndex() > i {
		c.confs = c.confs[:len(c.confs)-1]
	}
	for len(c.recent) > 0 && c.recent[len(c.recent)-1].GetIndex() > i {
		c.recent = c.recent[:len(c.recent)-1]
	}
	c.durable = min(c.durable, i)
	for k := range c.pendingSeq {
		c.pendingSeq[k].last = min(c.pendingSeq[k].last, i)
	}
	c.refreshFollowerRole()
}

// refreshFollowerRole switches between follower and learner when the
// configuration in force changes.
func (c *Core) refreshFollowerRole() {
	if c.role == messages.Role_ROLE_FOLLOWER || c.role == messages.Role_ROLE_LEARNER {
		c.role = c.followerRole()
	}
}

// ---- commit and apply ----

func (c *Core) commitTo(i uint64) {
	i = min(i, c.ti.LastIndex())
	if i <= c.commit {
		return
	}
	c.commit = i
	c.onCommit()
}

func (c *Core) onCommit() {
	c.maybeApply()
	if c.role == messages.Role_ROLE_LEADER {
		c.notify(nil, false)
		c.leaderOnCommit()
	}
}

// maybeApply hands newly committed, durable entries to the apply actor
// together with the writes waiting for them.
func (c *Core) maybeApply() {
	upto := min(c.commit, c.durable)
	if upto <= c.applyEmitted {
		return
	}
	ac := &messages.ApplyCommitted{Term: c.term, CommitIndex: upto}
	from := c.applyEmitted + 1
	if n := len(c.recent); n > 0 && c.recent[0].GetIndex() <= from && c.recent[n-1].GetIndex() >= upto {
		lo := from - c.recent[0].GetIndex()
		hi := upto - c.recent[0].GetIndex() + 1
		ac.Entries = slices.Clone(c.recent[lo:hi])
		c.recent = c.recent[hi:]
	} else {
		for len(c.recent) > 0 && c.recent[0].GetIndex() <= upto {
			c.recent = c.recent[1:]
		}
	}
	k := 0
	for k < len(c.waiters) && c.waiters[k].GetIndex() <= upto {
		k++
	}
	ac.Waiters = slices.Clone(c.waiters[:k])
	c.waiters = c.waiters[k:]
	c.applyEmitted = upto
	c.rd.Apply = append(c.rd.Apply, ac)
}

// ---- tick ----

func (c *Core) tick() {
	if c.stopped {
		return
	}
	c.now++
	if c.role == messages.Role_ROLE_LEADER {
		c.tickLeader()
	} else {
		c.tickFollower()
	}
	c.updateSoft()
}

func (c *Core) tickFollower() {
	c.electionElapsed++
	if t := c.transfer; t != nil && t.stepped {
		t.elapsed++
		if t.elapsed >= c.cfg.ElectionTicks {
			c.respond(t.h, &messages.TransferLeaderResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_TIMEOUT, "transfer to %d did not finish", t.target)})
			c.transfer = nil
		}
	}
	if c.electionElapsed < c.randomizedElectionTimeout {
		return
	}
	if !c.promotable() {
		// A learner or removed node forgets a leader it cannot hear, so that
		// it does not point clients at a dead node forever.
		c.resetElection()
		c.leader = 0
		return
	}
	c.hup(false)
}

func (c *Core) tickLeader() {
	c.heartbeatElapsed++
	c.electionElapsed++
	if c.electionElapsed >= c.cfg.ElectionTicks {
		c.electionElapsed = 0
		if c.cfg.CheckQuorum {
			m, _ := c.latestConf()
			if !quorumHas(m, func(id uint64) bool { return id == c.cfg.ID || (c.peers[id] != nil && c.peers[id].heard) }) {
				c.logger().Info("raftor: leader lost contact with a quorum, stepping down", "term", c.term)
				c.becomeFollower(c.term, 0)
				return
			}
		}
		for _, p := range c.peers {
			p.heard = false
		}
	}
	if t := c.transfer; t != nil {
		t.elapsed++
		if t.elapsed >= c.cfg.ElectionTicks {
			c.logger().Info("raftor: leader transfer timed out", "target", t.target)
			c.respond(t.h, &messages.TransferLeaderResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_TIMEOUT, "transfer to %d did not finish within an election timeout", t.target)})
			c.transfer = nil
		}
	}
	if c.heartbeatElapsed >= c.cfg.HeartbeatTicks {
		c.heartbeatElapsed = 0
		c.heartbeatRound()
	}
}

// heartbeatRound starts a new numbered heartbeat round.
func (c *Core) heartbeatRound() uint64 {
	c.readSeq++
	c.roundTick[c.readSeq] = c.now
	horizon := uint64(4 * c.cfg.ElectionTicks)
	for s, t := range c.roundTick {
		if t+horizon < c.now {
			delete(c.roundTick, s)
		}
	}
	c.notify(nil, true)
	return c.readSeq
}

// ---- elections ----

func (c *Core) hup(transfer bool) {
	if c.role == messages.Role_ROLE_LEADER || !c.promotable() {
		return
	}
	if c.cfg.PreVote && !transfer {
		c.becomePreCandidate()
	} else {
		c.becomeCandidate(transfer)
	}
}

func (c *Core) voteRequests(term uint64, pre bool) {
	m, _ := c.latestConf()
	for _, id := range members(m) {
		if id == c.cfg.ID || !isVoter(m, id) {
			continue
		}
		h := c.hdr(id)
		h.Term = term
		c.send(&messages.VoteRequest{Header: h, LastLogIndex: c.ti.LastIndex(), LastLogTerm: c.ti.LastTerm(),
			PreVote: pre, LeadershipTransfer: c.campaignTransfer && !pre})
	}
}

func (c *Core) becomePreCandidate() {
	c.role = messages.Role_ROLE_PRE_CANDIDATE
	c.leader = 0
	c.campaignTransfer = false
	c.resetElection()
	c.votes = map[uint64]bool{c.cfg.ID: true}
	c.logger().Debug("raftor: starting pre-vote", "term", c.term+1)
	c.voteRequests(c.term+1, true)
	c.checkVotes()
}

func (c *Core) becomeCandidate(transfer bool) {
	c.stepDownLeader()
	c.role = messages.Role_ROLE_CANDIDATE
	c.term++
	c.vote = c.cfg.ID
	c.leader = 0
	c.campaignTransfer = transfer
	c.resetElection()
	c.votes = map[uint64]bool{c.cfg.ID: true}
	c.persistHardState()
	c.logger().Debug("raftor: starting election", "term", c.term, "transfer", transfer)
	c.voteRequests(c.term, false)
	c.checkVotes()
}

func (c *Core) checkVotes() {
	m, _ := c.latestConf()
	switch tally(m, c.votes) {
	case voteWon:
		if c.role == messages.Role_ROLE_PRE_CANDIDATE {
			c.becomeCandidate(false)
		} else {
			c.becomeLeader()
		}
	case voteLost:
		c.becomeFollower(c.term, 0)
	}
}

// becomeFollower steps down into term. A higher term clears the vote; a
// step-down within the same term keeps it (PITFALLS #2).
//
// The election timer restarts only for a leader that steps down (its timer
// counted check-quorum periods). Otherwise it keeps running: it restarts
// only on an append from the current leader, on starting an election or on
// granting a vote (PITFALLS #8), so that a stream of hopeless elections
// cannot keep a healthy majority from electing a leader.
func (c *Core) becomeFollower(term, leader uint64) {
	wasLeader := c.role == messages.Role_ROLE_LEADER
	c.stepDownLeader()
	if term > c.term {
		c.term = term
		c.vote = 0
		c.persistHardState()
	}
	c.role = c.followerRole()
	c.leader = leader
	c.votes = nil
	if wasLeader {
		c.resetElection()
	}
	c.noteLeader()
}

// noteLeader settles a transfer this node started once it learns who leads.
func (c *Core) noteLeader() {
	t := c.transfer
	if t == nil || !t.stepped || c.leader == 0 {
		return
	}
	if c.leader == t.target {
		c.respond(t.h, &messages.TransferLeaderResponse{})
	} else {
		c.respond(t.h, &messages.TransferLeaderResponse{Error: c.notLeader()})
	}
	c.transfer = nil
}

// stepDownLeader clears leader-only state when a leader stops leading.
// Pending writes stay: their entries may still commit (PITFALLS #16).
func (c *Core) stepDownLeader() {
	if c.role != messages.Role_ROLE_LEADER {
		return
	}
	c.rd.Replicate = append(c.rd.Replicate, &messages.ReplicationStop{Term: c.term})
	c.peers = nil
	keep := c.reads[:0]
	for _, r := range c.reads {
		if r.state == readDone {
			continue
		}
		if r.state == readWaitApply {
			keep = append(keep, r)
			continue
		}
		c.respond(r.h, &messages.ReadIndexResponse{Error: c.notLeader()})
	}
	c.reads = keep
	if ch := c.change; ch != nil {
		c.respond(ch.h, &messages.MembershipChangeResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME,
			"leadership lost while the change was in progress; it may still take effect")})
		c.change = nil
	}
	if c.transfer != nil {
		c.transfer.stepped = true
		c.transfer.elapsed = 0
	}
}

func (c *Core) becomeLeader() {
	c.role = messages.Role_ROLE_LEADER
	c.leader = c.cfg.ID
	c.votes = nil
	c.electionElapsed = 0
	c.heartbeatElapsed = 0
	c.peers = map[uint64]*peer{}
	c.roundTick = map[uint64]uint64{}
	c.leaseRevoked = false
	if t := c.transfer; t != nil {
		// Leadership came back here before the target took it.
		c.respond(t.h, &messages.TransferLeaderResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_TIMEOUT,
			"node %d did not take over; node %d leads again", t.target, c.cfg.ID)})
		c.transfer = nil
	}
	c.logger().Info("raftor: became leader", "term", c.term, "last_index", c.ti.LastIndex())
	c.reconcilePeers()
	blank := &messages.Entry{Term: c.term, Index: c.ti.LastIndex() + 1, Kind: messages.EntryKind_ENTRY_KIND_BLANK}
	c.appendLocal(blank)
	c.notify([]*messages.Entry{blank}, false)
	c.maybeCommit()
}

// reconcilePeers starts replication to every node of the latest and of the
// committed configuration, and stops it for the others. A removed node keeps
// receiving the log until its removal commits, so that it learns of it.
func (c *Core) reconcilePeers() {
	if c.role != messages.Role_ROLE_LEADER {
		return
	}
	latest, _ := c.latestConf()
	committed, _ := c.committedConf()
	want := map[uint64]bool{}
	for _, id := range append(members(latest), members(committed)...) {
		if id != c.cfg.ID {
			want[id] = true
		}
	}
	ids := make([]uint64, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if c.peers[id] != nil {
			c.peers[id].learner = !isVoter(latest, id)
			continue
		}
		p := &peer{id: id, learner: !isVoter(latest, id), next: c.ti.LastIndex() + 1, reach: true}
		c.peers[id] = p
		addr, ok := latest.GetAddresses()[id]
		if !ok {
			addr = committed.GetAddresses()[id] // removed, until the removal commits
		}
		start := &messages.ReplicationStart{
			Term: c.term, Peer: id, Address: addr, Learner: p.learner,
			NextIndex: p.next, Commit: c.commit, FirstIndex: c.ti.FirstIndex(), LastIndex: c.ti.LastIndex(),
			TermRuns: c.ti.Runs(), DurableIndex: c.durable,
		}
		if c.snap.GetIndex() > 0 {
			start.Snapshot = c.snap
		}
		c.rd.Replicate = append(c.rd.Replicate, start)
	}
	stop := []uint64{}
	for id := range c.peers {
		if !want[id] {
			stop = append(stop, id)
		}
	}
	slices.Sort(stop)
	for _, id := range stop {
		delete(c.peers, id)
		c.rd.Replicate = append(c.rd.Replicate, &messages.ReplicationStop{Term: c.term, Peer: id})
	}
}

func (c *Core) selfMatch(id uint64) uint64 {
	if id == c.cfg.ID {
		// The leader counts itself only up to what is on its disk
		// (PITFALLS #3).
		if mutationSelfDurable {
			return c.ti.LastIndex()
		}
		return c.durable
	}
	if p := c.peers[id]; p != nil {
		return p.match
	}
	return 0
}

// maybeCommit advances the leader's commit index to the highest index a
// quorum holds, but only by counting an entry of the current term
// (Raft paper, figure 8): earlier entries commit with it.
func (c *Core) maybeCommit() {
	if c.role != messages.Role_ROLE_LEADER {
		return
	}
	m, _ := c.latestConf()
	idx := jointIndex(m, c.selfMatch)
	if idx <= c.commit || idx > c.ti.LastIndex() {
		return
	}
	if t, ok := c.termAt(idx); !ok || (t != c.term && !mutationFigure8) {
		return
	}
	c.commit = idx
	c.onCommit()
}

// leaderOnCommit runs what waits for a commit on the leader: reads waiting
// for the term's first entry, the next step of a membership change, and
// stepping down once a configuration without this node committed.
func (c *Core) leaderOnCommit() {
	if c.committedInTerm() {
		for _, r := range c.reads {
			if r.state == readWaitBlank {
				c.startRead(r)
			}
		}
		c.checkReads()
	}
	latest, idx := c.latestConf()
	if idx <= c.commit && len(latest.GetVotersOutgoing()) > 0 && c.committedInTerm() {
		// C_old,new committed: move on to C_new. A leader elected during
		// the joint phase does the same.
		final := &messages.Membership{Voters: latest.GetVoters(), Learners: latest.GetLearners(), Addresses: map[uint64]string{}}
		for _, id := range members(final) {
			if a, ok := latest.GetAddresses()[id]; ok {
				final.Addresses[id] = a
			}
		}
		e := c.appendConf(final)
		if ch := c.change; ch != nil && ch.joint {
			ch.joint = false
			ch.index = e
		}
		return
	}
	if ch := c.change; ch != nil && ch.index <= c.commit && !ch.joint {
		ch.committed = true
		c.finishChange()
	}
	c.reconcilePeers()
	if idx <= c.commit && !isVoter(latest, c.cfg.ID) {
		c.logger().Info("raftor: leader is not in the committed configuration, stepping down", "term", c.term)
		c.becomeFollower(c.term, 0)
	}
}

func (c *Core) finishChange() {
	ch := c.change
	if ch == nil || !ch.committed {
		return
	}
	if ch.waitCaughtUp {
		p := c.peers[ch.learner]
		if p == nil || p.match < ch.index {
			return
		}
	}
	m, idx := c.committedConf()
	c.respond(ch.h, &messages.MembershipChangeResponse{Membership: m, Index: idx})
	c.change = nil
}

func (c *Core) appendConf(m *messages.Membership) uint64 {
	e := &messages.Entry{Term: c.term, Index: c.ti.LastIndex() + 1, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: m}
	c.appendLocal(e)
	c.notify([]*messages.Entry{e}, false)
	c.reconcilePeers()
	c.maybeCommit()
	return e.GetIndex()
}
