package core

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// ---- writes ----

func (c *Core) refuseWrite() *messages.Error {
	switch {
	case c.stopped:
		return errOf(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped")
	case c.storageErr != nil:
		return c.storageErr
	case c.role != messages.Role_ROLE_LEADER:
		return c.notLeader()
	case c.transfer != nil:
		return errOf(messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS, "leadership is moving to %d", c.transfer.target)
	}
	return nil
}

func (c *Core) propose(h Handle, req *messages.ClientWriteRequest) {
	fail := func(e *messages.Error) { c.respond(h, &messages.ClientWriteResponse{Error: e}) }
	if e := c.refuseWrite(); e != nil {
		fail(e)
		return
	}
	if req == nil {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "nil write"))
		return
	}
	if c.ti.LastIndex()-c.commit >= uint64(c.cfg.MaxUncommittedWrites) {
		fail(errOf(messages.ErrorCode_ERROR_CODE_OVERLOADED, "%d uncommitted entries", c.ti.LastIndex()-c.commit))
		return
	}
	e := &messages.Entry{Term: c.term, Index: c.ti.LastIndex() + 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL,
		Data: req.GetData(), Command: req.GetCommand(), Request: req.GetRequest()}
	if n := messages.EntrySize(e); n > c.cfg.MaxEntryBytes {
		fail(errOf(messages.ErrorCode_ERROR_CODE_TOO_LARGE, "entry of %d bytes over the limit of %d", n, c.cfg.MaxEntryBytes))
		return
	}
	c.appendLocal(e)
	// Waiters stay sorted by index: a waiter left from an earlier term may
	// sit at a higher index whose entry was since cut from the log.
	w := &messages.ApplyWaiter{Index: e.Index, Term: e.Term, Handle: uint64(h)}
	at, _ := slices.BinarySearchFunc(c.waiters, e.Index+1, func(x *messages.ApplyWaiter, i uint64) int {
		return cmp.Compare(x.GetIndex(), i)
	})
	c.waiters = slices.Insert(c.waiters, at, w)
	c.notify([]*messages.Entry{e}, false)
}

func (c *Core) afterWrite() {
	c.maybeCommit()
	c.updateSoft()
}

// ---- reads ----

func (c *Core) readIndex(h Handle, req *messages.ReadIndexRequest) {
	defer c.updateSoft()
	if e := c.refuseRead(); e != nil {
		c.respond(h, &messages.ReadIndexResponse{Error: e})
		return
	}
	r := &readReq{h: h, req: req}
	c.reads = append(c.reads, r)
	if !c.committedInTerm() {
		// The leader's commit index is only known to be current once an
		// entry of its own term committed (Raft paper, section 8).
		r.state = readWaitBlank
		return
	}
	c.startRead(r)
	c.checkReads()
}

func (c *Core) refuseRead() *messages.Error {
	switch {
	case c.stopped:
		return errOf(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped")
	case c.role != messages.Role_ROLE_LEADER:
		return c.notLeader()
	}
	return nil
}

// startRead records the read index and asks a quorum to confirm that this
// node still leads, sharing one heartbeat round among the reads of a Ready.
func (c *Core) startRead(r *readReq) {
	r.index = c.commit
	r.state = readWaitQuorum
	if c.leaseValid() || mutationStaleRead {
		r.seq = 0
		c.confirmRead(r)
		return
	}
	if k := len(c.rd.Replicate); k > 0 {
		if n, ok := c.rd.Replicate[k-1].(*messages.ReplicationNotify); ok && n.Heartbeat && n.Term == c.term {
			r.seq = n.ReadSeq
			return
		}
	}
	r.seq = c.heartbeatRound()
}

// leaseValid reports whether a quorum acknowledged a heartbeat round sent
// recently enough that no other leader can have been elected since: voters
// ignore elections for ElectionTicks after hearing from a leader. One tick
// of margin covers clock drift between ticks. A leadership that began a
// leader transfer holds no lease any more (leaseRevoked): the transfer's
// election is granted whatever the voters heard.
func (c *Core) leaseValid() bool {
	if !c.cfg.LeaseRead || !c.cfg.CheckQuorum || c.transfer != nil || c.leaseRevoked || !c.committedInTerm() {
		return false
	}
	lease := uint64(c.cfg.ElectionTicks - 1)
	m, _ := c.latestConf()
	return quorumHas(m, func(id uint64) bool {
		if id == c.cfg.ID {
			return true
		}
		p := c.peers[id]
		return p != nil && p.ackTick > 0 && p.ackTick+lease > c.now
	})
}

func (c *Core) checkReads() {
	defer c.pruneReads()
	if c.role != messages.Role_ROLE_LEADER {
		return
	}
	m, _ := c.latestConf()
	for _, r := range c.reads {
		if r.state == readWaitQuorum && quorumHas(m, func(id uint64) bool {
			return id == c.cfg.ID || (c.peers[id] != nil && c.peers[id].readAck >= r.seq)
		}) {
			c.confirmRead(r)
		}
	}
}

// confirmRead answers a confirmed read, or parks it until applied reaches
// its index. It reports whether the read was answered.
func (c *Core) confirmRead(r *readReq) bool {
	if r.req.GetWaitApplied() && c.applied < r.index {
		r.state = readWaitApply
		return false
	}
	c.respond(r.h, &messages.ReadIndexResponse{ReadIndex: r.index})
	r.state = readDone
	return true
}

// pruneReads drops the reads that were answered.
func (c *Core) pruneReads() {
	c.reads = slices.DeleteFunc(c.reads, func(r *readReq) bool { return r.state == readDone })
}

// ---- leader transfer ----

func (c *Core) transferLeader(h Handle, req *messages.TransferLeaderRequest) {
	defer c.updateSoft()
	fail := func(e *messages.Error) { c.respond(h, &messages.TransferLeaderResponse{Error: e}) }
	if e := c.refuseWrite(); e != nil {
		fail(e)
		return
	}
	target := req.GetTarget()
	if target == c.cfg.ID {
		c.respond(h, &messages.TransferLeaderResponse{})
		return
	}
	m, _ := c.latestConf()
	if !slices.Contains(m.GetVoters(), target) {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node %d is not a voter", target))
		return
	}
	c.transfer = &transferState{target: target, h: h}
	c.leaseRevoked = true
	c.logger().Info("raftor: transferring leadership", "target", target, "term", c.term)
	c.checkTransfer()
}

// checkTransfer sends TimeoutNow once the target holds the whole log.
func (c *Core) checkTransfer() {
	t := c.transfer
	if t == nil || t.sent || t.stepped {
		return
	}
	if p := c.peers[t.target]; p != nil && p.match >= c.ti.LastIndex() && p.match <= c.durable {
		t.sent = true
		c.send(&messages.TimeoutNowRequest{Header: c.hdr(t.target)})
	}
}

// ---- membership ----

func (c *Core) refuseChange() *messages.Error {
	if e := c.refuseWrite(); e != nil {
		return e
	}
	latest, idx := c.latestConf()
	switch {
	case c.change != nil:
		return errOf(messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS, "a membership change is in progress")
	case !c.committedInTerm():
		// PITFALLS #10: a leader commits an entry of its term first.
		return errOf(messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS, "the leader has not committed an entry of its term yet")
	case idx > c.commit || len(latest.GetVotersOutgoing()) > 0:
		return errOf(messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS, "the latest configuration is not committed yet")
	}
	return nil
}

func cloneMembership(m *messages.Membership) *messages.Membership {
	n := &messages.Membership{
		Voters:         slices.Clone(m.GetVoters()),
		VotersOutgoing: slices.Clone(m.GetVotersOutgoing()),
		Learners:       slices.Clone(m.GetLearners()),
		Addresses:      map[uint64]string{},
	}
	for k, v := range m.GetAddresses() {
		n.Addresses[k] = v
	}
	return n
}

func (c *Core) addLearner(h Handle, req *messages.AddLearnerRequest) {
	defer c.updateSoft()
	fail := func(e *messages.Error) { c.respond(h, &messages.MembershipChangeResponse{Error: e}) }
	if e := c.refuseChange(); e != nil {
		fail(e)
		return
	}
	id := req.GetNodeId()
	cur, idx := c.latestConf()
	switch {
	case id == 0:
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node id 0"))
		return
	case isVoter(cur, id):
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node %d is already a voter", id))
		return
	case slices.Contains(cur.GetLearners(), id) && cur.GetAddresses()[id] == req.GetAddress():
		c.change = &confChange{h: h, kind: changeAddLearner, index: idx, learner: id, waitCaughtUp: req.GetWaitCaughtUp(), committed: true}
		c.finishChange()
		return
	}
	next := cloneMembership(cur)
	if !slices.Contains(next.Learners, id) {
		next.Learners = append(next.Learners, id)
		slices.Sort(next.Learners)
	}
	next.Addresses[id] = req.GetAddress()
	c.change = &confChange{h: h, kind: changeAddLearner, learner: id, waitCaughtUp: req.GetWaitCaughtUp()}
	c.change.index = c.appendConf(next)
}

func (c *Core) removeLearner(h Handle, req *messages.RemoveLearnerRequest) {
	defer c.updateSoft()
	fail := func(e *messages.Error) { c.respond(h, &messages.MembershipChangeResponse{Error: e}) }
	if e := c.refuseChange(); e != nil {
		fail(e)
		return
	}
	cur, _ := c.latestConf()
	id := req.GetNodeId()
	if !slices.Contains(cur.GetLearners(), id) {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node %d is not a learner", id))
		return
	}
	next := cloneMembership(cur)
	next.Learners = slices.DeleteFunc(next.Learners, func(x uint64) bool { return x == id })
	delete(next.Addresses, id)
	c.change = &confChange{h: h, kind: changeRemoveLearner}
	c.change.index = c.appendConf(next)
}

func (c *Core) changeMembership(h Handle, req *messages.ChangeMembershipRequest) {
	defer c.updateSoft()
	fail := func(e *messages.Error) { c.respond(h, &messages.MembershipChangeResponse{Error: e}) }
	if e := c.refuseChange(); e != nil {
		fail(e)
		return
	}
	cur, idx := c.latestConf()
	voters := slices.Clone(req.GetVoters())
	slices.Sort(voters)
	if len(voters) == 0 {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "no voters"))
		return
	}
	for k, id := range voters {
		if id == 0 || (k > 0 && voters[k-1] == id) {
			fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "voter 0 or duplicate voter %d", id))
			return
		}
		if !slices.Contains(cur.GetVoters(), id) && !slices.Contains(cur.GetLearners(), id) {
			fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node %d must be added as a learner first", id))
			return
		}
	}
	old := slices.Sorted(slices.Values(cur.GetVoters()))
	if slices.Equal(old, voters) {
		c.respond(h, &messages.MembershipChangeResponse{Membership: cur, Index: idx})
		return
	}
	// C_old,new: voters is C_new, voters_outgoing C_old. Every decision
	// needs a majority of both until C_new is appended.
	joint := cloneMembership(cur)
	joint.Voters = voters
	joint.VotersOutgoing = old
	joint.Learners = slices.DeleteFunc(joint.Learners, func(x uint64) bool { return slices.Contains(voters, x) })
	for _, id := range old {
		if slices.Contains(voters, id) {
			continue
		}
		if req.GetRetainAsLearners() {
			joint.Learners = append(joint.Learners, id)
		}
	}
	slices.Sort(joint.Learners)
	c.change = &confChange{h: h, kind: changeVoters, joint: true}
	c.change.index = c.appendConf(joint)
}

// ---- initialize ----

func (c *Core) initialize(h Handle, req *messages.InitializeRequest) {
	defer c.updateSoft()
	fail := func(e *messages.Error) { c.respond(h, &messages.InitializeResponse{Error: e}) }
	switch {
	case c.stopped:
		fail(errOf(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped"))
		return
	case c.storageErr != nil:
		fail(c.storageErr)
		return
	case c.ti.LastIndex() > 0 || c.term > 0:
		fail(errOf(messages.ErrorCode_ERROR_CODE_ALREADY_INITIALIZED, "node %d already has state (term %d, last index %d)", c.cfg.ID, c.term, c.ti.LastIndex()))
		return
	}
	m := req.GetMembership()
	if err := validateMembership(m); err != nil {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "membership: %v", err))
		return
	}
	if len(m.GetVotersOutgoing()) > 0 {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "initial membership cannot be joint"))
		return
	}
	if !isMember(m, c.cfg.ID) {
		fail(errOf(messages.ErrorCode_ERROR_CODE_INVALID, "node %d is not in the membership", c.cfg.ID))
		return
	}
	// Every founding node writes the same entry 1 of term 1, so the logs of
	// nodes initialized with the same membership agree.
	c.term = 1
	c.persistHardState()
	c.appendLocal(&messages.Entry{Term: 1, Index: 1, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: cloneMembership(m)})
	c.role = c.followerRole()
	c.respondDurable(h, &messages.InitializeResponse{})
}

// ---- stop, status, metrics ----

func (c *Core) stop() []Response {
	if c.stopped {
		return nil
	}
	var out []Response
	add := func(h Handle, m proto.Message) { out = append(out, Response{Handle: h, Msg: m}) }
	stopped := errOf(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped")
	for _, w := range c.waiters {
		add(Handle(w.GetHandle()), &messages.ClientWriteResponse{Index: w.GetIndex(), Term: w.GetTerm(),
			Error: errOf(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "node stopped before the write was applied; it may still commit")})
	}
	for _, r := range c.reads {
		if r.state != readDone {
			add(r.h, &messages.ReadIndexResponse{Error: stopped})
		}
	}
	if ch := c.change; ch != nil {
		add(ch.h, &messages.MembershipChangeResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "node stopped during the change")})
	}
	if t := c.transfer; t != nil {
		add(t.h, &messages.TransferLeaderResponse{Error: stopped})
	}
	for _, h := range c.snapWaiters {
		add(h, &messages.TriggerSnapshotResponse{Error: stopped})
	}
	for _, h := range c.held {
		if h.kind == heldResponse {
			r := h.msg.(Response)
			add(r.Handle, failedResponse(r.Msg, stopped))
		}
	}
	c.waiters, c.reads, c.change, c.transfer, c.snapWaiters, c.held = nil, nil, nil, nil, nil, nil
	c.stopped = true
	return out
}

func (c *Core) status() Status {
	m, idx := c.latestConf()
	s := Status{
		ID: c.cfg.ID, Role: c.role, Term: c.term, Vote: c.vote, Leader: c.leader, Commit: c.commit,
		Applied: c.applied, Durable: c.durable, LastIndex: c.ti.LastIndex(), LastTerm: c.ti.LastTerm(),
		FirstIndex: c.ti.FirstIndex(), SnapshotIndex: c.snap.GetIndex(), Membership: m, MembershipIndex: idx,
		BytesSinceSnapshot: c.appliedBytes - c.snapBytes,
	}
	if c.transfer != nil {
		s.Transferring = c.transfer.target
	}
	return s
}

func (c *Core) metrics() *messages.Metrics {
	m, idx := c.latestConf()
	out := &messages.Metrics{
		ClusterId: c.cfg.ClusterID, GroupId: c.cfg.GroupID, NodeId: c.cfg.ID, Role: c.role, Term: c.term,
		LeaderId: c.leader, LastLogIndex: c.ti.LastIndex(), LastLogTerm: c.ti.LastTerm(), CommitIndex: c.commit,
		AppliedIndex: c.applied, SnapshotIndex: c.snap.GetIndex(), FirstLogIndex: c.ti.FirstIndex(),
		Membership: m, MembershipIndex: idx, PendingWrites: uint64(len(c.waiters)), StorageError: c.storageErr,
	}
	if c.leader != 0 {
		out.LeaderAddress = m.GetAddresses()[c.leader]
	}
	ids := make([]uint64, 0, len(c.peers))
	for id := range c.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := c.peers[id]
		pm := &messages.PeerMetrics{NodeId: id, Voter: isVoter(m, id), MatchIndex: p.match, NextIndex: p.next,
			Mode: p.mode, Reachable: p.reach, InflightEntries: p.inflE, InflightBytes: p.inflB}
		if last := c.ti.LastIndex(); last > p.match {
			pm.Lag = last - p.match
		}
		out.Peers = append(out.Peers, pm)
	}
	return out
}
