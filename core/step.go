package core

import (
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

func (c *Core) step(msg proto.Message) (err error) {
	if c.stopped {
		return stepErr(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped")
	}
	defer c.updateSoft()
	switch m := msg.(type) {
	case *messages.VoteRequest:
		return c.stepVoteRequest(m)
	case *messages.VoteResponse:
		return c.stepVoteResponse(m)
	case *messages.AppendEntriesRequest:
		return c.stepAppend(m)
	case *messages.InstallSnapshotRequest:
		return c.stepInstallSnapshot(m)
	case *messages.TimeoutNowRequest:
		return c.stepTimeoutNow(m)
	case *messages.AppendEntriesResponse, *messages.InstallSnapshotResponse:
		// These answer a ReplicationStream; a newer term in them still
		// matters to the core.
		h := headerOf(m)
		if err := c.checkHeader(h, m, false); err != nil {
			return err
		}
		if h.GetTerm() > c.term {
			c.becomeFollower(h.GetTerm(), 0)
			return nil
		}
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "%T belongs to a replication stream", m)
	case *messages.WireReject:
		return stepErr(m.GetError().GetCode(), "peer %d refused %s: %s", m.GetHeader().GetFrom(), m.GetMessageType(), m.GetError().GetMessage())
	case *messages.StorageAppendResult:
		return c.stepAppendResult(m)
	case *messages.ReplicationReport:
		return c.stepReport(m)
	case *messages.ApplyResult:
		return c.stepApplyResult(m)
	case *messages.SnapshotBuilt:
		return c.stepSnapshotBuilt(m)
	case *messages.StoragePurgeResult:
		return c.stepPurgeResult(m)
	case *messages.StorageSnapshotChunkWritten:
		return c.stepChunkWritten(m)
	case *messages.SnapshotRestored:
		return c.stepSnapshotRestored(m)
	case *messages.Tick:
		c.tick()
		return nil
	case nil:
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "nil message")
	default:
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "unexpected message %T", msg)
	}
}

type withHeader interface{ GetHeader() *messages.Header }

func headerOf(m proto.Message) *messages.Header {
	if h, ok := m.(withHeader); ok {
		return h.GetHeader()
	}
	return nil
}

// checkHeader validates the header of a wire message. strangerOK lets a
// message through from a node outside the configuration (appends and
// snapshots from a leader this node has not heard of yet).
func (c *Core) checkHeader(h *messages.Header, m proto.Message, strangerOK bool) error {
	if c.storageErr != nil {
		return stepErr(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "storage failed: %s", c.storageErr.GetMessage())
	}
	if h == nil {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "%T without header", m)
	}
	if h.GetClusterId() != c.cfg.ClusterID || h.GetGroupId() != c.cfg.GroupID {
		c.reject(h, m, messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER, "message for cluster %q group %d", h.GetClusterId(), h.GetGroupId())
		return stepErr(messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER, "message for cluster %q group %d", h.GetClusterId(), h.GetGroupId())
	}
	if h.GetTo() != c.cfg.ID {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "message addressed to %d", h.GetTo())
	}
	if h.GetFrom() == 0 || h.GetFrom() == c.cfg.ID {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "message from node %d", h.GetFrom())
	}
	if h.GetTerm() == 0 {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "message with term 0")
	}
	if !strangerOK {
		conf, _ := c.latestConf()
		// A node outside its own configuration (new, or not caught up)
		// cannot judge who belongs, so it listens to everyone.
		if isMember(conf, c.cfg.ID) && !isMember(conf, h.GetFrom()) {
			c.reject(h, m, messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, "node %d is not in the configuration", h.GetFrom())
			return stepErr(messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, "node %d is not in the configuration", h.GetFrom())
		}
	}
	return nil
}

func (c *Core) reject(h *messages.Header, m proto.Message, code messages.ErrorCode, format string, args ...any) {
	if h.GetFrom() == 0 {
		return
	}
	rh := c.hdr(h.GetFrom())
	rh.ClusterId, rh.GroupId = h.GetClusterId(), h.GetGroupId()
	c.rd.Send = append(c.rd.Send, &messages.WireReject{Header: rh, Error: errOf(code, format, args...),
		MessageType: string(m.ProtoReflect().Descriptor().FullName())})
}

// ---- votes ----

func (c *Core) inLease() bool {
	return c.cfg.CheckQuorum && c.leader != 0 && c.electionElapsed < c.cfg.ElectionTicks
}

func (c *Core) stepVoteRequest(m *messages.VoteRequest) error {
	h := m.GetHeader()
	if err := c.checkHeader(h, m, false); err != nil {
		return err
	}
	reply := func(granted bool, term uint64, reason string) {
		rh := c.hdr(h.GetFrom())
		rh.Term = term
		r := &messages.VoteResponse{Header: rh, Granted: granted, PreVote: m.GetPreVote(), RejectReason: reason}
		if mutationVotePersist {
			c.rd.Send = append(c.rd.Send, r)
			return
		}
		c.send(r)
	}
	if h.GetTerm() > c.term {
		if !m.GetLeadershipTransfer() && c.inLease() {
			// Leader stickiness: while a leader is heard, a vote request is
			// not even allowed to raise our term (disruptive servers).
			reply(false, c.term, "a leader is active")
			return nil
		}
		if !m.GetPreVote() {
			c.becomeFollower(h.GetTerm(), 0)
		}
	}
	if h.GetTerm() < c.term {
		reply(false, c.term, "stale term")
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "vote request of term %d below %d", h.GetTerm(), c.term)
	}
	upToDate := m.GetLastLogTerm() > c.ti.LastTerm() ||
		(m.GetLastLogTerm() == c.ti.LastTerm() && m.GetLastLogIndex() >= c.ti.LastIndex())
	// A node votes once per term, and not while it follows a leader. A
	// pre-vote changes nothing, so it is granted for any future term.
	canVote := c.vote == h.GetFrom() || (c.vote == 0 && c.leader == 0) ||
		(m.GetPreVote() && h.GetTerm() > c.term)
	switch {
	case !canVote:
		reply(false, c.term, "already voted or following a leader")
	case !upToDate:
		reply(false, c.term, "candidate log is behind")
	case m.GetPreVote():
		reply(true, h.GetTerm(), "")
	default:
		c.vote = h.GetFrom()
		c.resetElection()
		c.persistHardState()
		reply(true, c.term, "")
	}
	return nil
}

func (c *Core) stepVoteResponse(m *messages.VoteResponse) error {
	h := m.GetHeader()
	if err := c.checkHeader(h, m, false); err != nil {
		return err
	}
	if h.GetTerm() > c.term && !(m.GetPreVote() && m.GetGranted() && h.GetTerm() == c.term+1) {
		c.becomeFollower(h.GetTerm(), 0)
		return nil
	}
	switch {
	case m.GetPreVote() && c.role == messages.Role_ROLE_PRE_CANDIDATE && h.GetTerm() == c.term+1:
	case !m.GetPreVote() && c.role == messages.Role_ROLE_CANDIDATE && h.GetTerm() == c.term:
	case m.GetPreVote() && c.role == messages.Role_ROLE_PRE_CANDIDATE && !m.GetGranted() && h.GetTerm() == c.term:
		// Refusal from a voter at our own term (it sees a leader).
	default:
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "vote response of term %d not for this election", h.GetTerm())
	}
	conf, _ := c.latestConf()
	if !isVoter(conf, h.GetFrom()) {
		return stepErr(messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, "vote from non-voter %d", h.GetFrom())
	}
	if _, seen := c.votes[h.GetFrom()]; !seen {
		c.votes[h.GetFrom()] = m.GetGranted()
	}
	c.checkVotes()
	return nil
}

// ---- appends ----

// validateAppend checks an AppendEntriesRequest for nonsense that no
// correct leader sends.
func (c *Core) validateAppend(m *messages.AppendEntriesRequest) error {
	ents := m.GetEntries()
	if m.GetHeartbeat() && len(ents) > 0 {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "heartbeat with entries")
	}
	if m.GetPrevLogIndex() > math.MaxUint64/2 || uint64(len(ents)) > math.MaxUint64/2-m.GetPrevLogIndex() {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "prev_log_index %d out of range", m.GetPrevLogIndex())
	}
	if m.GetPrevLogTerm() > m.GetHeader().GetTerm() {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "prev_log_term %d above the leader's term", m.GetPrevLogTerm())
	}
	if m.GetPrevLogIndex() == 0 && m.GetPrevLogTerm() != 0 {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "prev_log_term %d at index 0", m.GetPrevLogTerm())
	}
	if limit := 2 * c.cfg.MaxAppendEntries; len(ents) > max(limit, 1024) {
		return stepErr(messages.ErrorCode_ERROR_CODE_TOO_LARGE, "%d entries in one append", len(ents))
	}
	prevTerm := m.GetPrevLogTerm()
	for k, e := range ents {
		if e == nil {
			return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "nil entry")
		}
		if e.GetIndex() != m.GetPrevLogIndex()+uint64(k)+1 {
			return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "entry %d has index %d, want %d", k, e.GetIndex(), m.GetPrevLogIndex()+uint64(k)+1)
		}
		if e.GetTerm() == 0 || e.GetTerm() < prevTerm || e.GetTerm() > m.GetHeader().GetTerm() {
			return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "entry %d has term %d out of order", e.GetIndex(), e.GetTerm())
		}
		prevTerm = e.GetTerm()
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			if err := validateMembership(e.GetMembership()); err != nil {
				return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "entry %d: %v", e.GetIndex(), err)
			}
		}
	}
	return nil
}

// acceptLeader handles the term of a message from a node that claims to
// lead term t. It returns false (after answering) when the claim is stale.
func (c *Core) acceptLeader(h *messages.Header) bool {
	if h.GetTerm() < c.term {
		return false
	}
	if h.GetTerm() > c.term || c.role != messages.Role_ROLE_FOLLOWER && c.role != messages.Role_ROLE_LEARNER {
		c.becomeFollower(h.GetTerm(), h.GetFrom())
	}
	c.leader = h.GetFrom()
	c.electionElapsed = 0
	c.noteLeader()
	return true
}

func (c *Core) stepAppend(m *messages.AppendEntriesRequest) error {
	h := m.GetHeader()
	if err := c.checkHeader(h, m, true); err != nil {
		return err
	}
	if err := c.validateAppend(m); err != nil {
		return err
	}
	resp := func() *messages.AppendEntriesResponse {
		return &messages.AppendEntriesResponse{Header: c.hdr(h.GetFrom()), Seq: m.GetSeq(), ReadSeq: m.GetReadSeq(),
			Heartbeat: m.GetHeartbeat(), LastLogIndex: c.ti.LastIndex()}
	}
	if h.GetTerm() < c.term {
		// Tell the stale leader about the newer term so that it steps down.
		c.send(resp())
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "append of term %d below %d", h.GetTerm(), c.term)
	}
	if h.GetTerm() == c.term && c.role == messages.Role_ROLE_LEADER {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "append from %d in my own term %d as leader", h.GetFrom(), c.term)
	}
	c.acceptLeader(h)
	if c.install != nil && c.install.term < c.term {
		c.install = nil
	}
	if m.GetHeartbeat() {
		// A heartbeat never matches or truncates the log. Its commit is
		// capped by the leader at what it knows this node holds.
		c.commitTo(min(m.GetLeaderCommit(), c.ti.LastIndex()))
		r := resp()
		r.Success = true
		// The answer acknowledges leadership only, nothing on disk, so it
		// does not wait for appends being fsynced: heartbeats (and read
		// index) never queue behind a slow disk.
		c.rd.Send = append(c.rd.Send, r)
		return nil
	}
	prev := m.GetPrevLogIndex()
	if prev > c.ti.LastIndex() {
		r := resp()
		r.ConflictIndex = c.ti.LastIndex() + 1
		c.send(r)
		return nil
	}
	if prev > c.commit {
		// Committed entries match the leader's by the Log Matching and
		// Leader Completeness properties; above commit the term decides.
		t, _ := c.termAt(prev)
		if t != m.GetPrevLogTerm() {
			r := resp()
			r.ConflictTerm = t
			r.ConflictIndex = max(c.ti.FirstInTerm(prev), c.commit+1)
			c.send(r)
			return nil
		}
	}
	ents := m.GetEntries()
	for k, e := range ents {
		i := e.GetIndex()
		if i <= c.commit {
			continue
		}
		if t, ok := c.termAt(i); ok && i <= c.ti.LastIndex() {
			if t == e.GetTerm() {
				continue
			}
			// A real conflict: only now is the uncommitted suffix dropped.
			c.truncateAfter(i - 1)
		}
		c.appendLocal(ents[k:]...)
		break
	}
	match := prev + uint64(len(ents))
	c.commitTo(min(m.GetLeaderCommit(), match))
	r := resp()
	r.Success = true
	r.MatchIndex = match
	c.send(r)
	return nil
}

func (c *Core) stepTimeoutNow(m *messages.TimeoutNowRequest) error {
	h := m.GetHeader()
	if err := c.checkHeader(h, m, false); err != nil {
		return err
	}
	if h.GetTerm() < c.term {
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "timeout-now of term %d below %d", h.GetTerm(), c.term)
	}
	if !c.acceptLeader(h) {
		return nil
	}
	if !c.promotable() {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "timeout-now to a node that cannot vote")
	}
	c.logger().Info("raftor: leader transfer: starting election", "from", h.GetFrom(), "term", c.term+1)
	c.becomeCandidate(true)
	return nil
}

// ---- storage, replication and apply results ----

func (c *Core) stepAppendResult(m *messages.StorageAppendResult) error {
	if m.GetGroupId() != c.cfg.GroupID {
		return stepErr(messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER, "append result for group %d", m.GetGroupId())
	}
	if m.GetError() != nil {
		c.failStorage(m.GetError())
		return stepErr(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "storage append failed: %s", m.GetError().GetMessage())
	}
	if m.GetSeq() <= c.durableSeq || m.GetSeq() >= c.nextSeq {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "append result seq %d not outstanding", m.GetSeq())
	}
	for _, r := range c.rd.Persist {
		if r.Seq <= m.GetSeq() {
			return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "append result seq %d for an append not yet handed out", m.GetSeq())
		}
	}
	c.durableSeq = m.GetSeq()
	k := 0
	for ; k < len(c.pendingSeq) && c.pendingSeq[k].seq <= m.GetSeq(); k++ {
		c.durable = c.pendingSeq[k].last
	}
	c.pendingSeq = c.pendingSeq[k:]
	c.releaseHeld()
	if c.role == messages.Role_ROLE_LEADER {
		c.notify(nil, false)
		c.maybeCommit()
	}
	c.maybeApply()
	return nil
}

func (c *Core) failStorage(e *messages.Error) {
	if c.storageErr != nil {
		return
	}
	c.logger().Error("raftor: storage failed; this node stops taking part", "err", e.GetMessage())
	c.storageErr = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Message: e.GetMessage()}
	if c.role == messages.Role_ROLE_LEADER {
		c.stepDownLeader()
		c.role = c.followerRole()
		c.leader = 0
	}
	// Nothing that waited for a durable append will ever be sent.
	for _, h := range c.held {
		if h.kind == heldResponse {
			r := h.msg.(Response)
			c.respond(r.Handle, failedResponse(r.Msg, c.storageErr))
		}
	}
	c.held = nil
}

func failedResponse(m proto.Message, e *messages.Error) proto.Message {
	switch m.(type) {
	case *messages.InitializeResponse:
		return &messages.InitializeResponse{Error: e}
	default:
		return m
	}
}

func (c *Core) stepReport(m *messages.ReplicationReport) error {
	if m.GetHigherTerm() > c.term {
		c.becomeFollower(m.GetHigherTerm(), 0)
		return nil
	}
	if c.role != messages.Role_ROLE_LEADER || m.GetTerm() != c.term {
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "replication report of term %d", m.GetTerm())
	}
	p := c.peers[m.GetPeer()]
	if p == nil {
		return stepErr(messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, "report for unknown peer %d", m.GetPeer())
	}
	// match only moves forward, and never past what the leader holds.
	if mi := min(m.GetMatchIndex(), c.ti.LastIndex()); mi > p.match {
		p.match = mi
	}
	p.next, p.mode, p.reach = m.GetNextIndex(), m.GetMode(), m.GetReachable()
	p.inflE, p.inflB, p.needSnap = m.GetInflightEntries(), m.GetInflightBytes(), m.GetNeedsSnapshot()
	if m.GetHeard() {
		p.heard = true
		p.lastTick = c.now
	}
	if rs := min(m.GetReadSeq(), c.readSeq); rs > p.readAck {
		p.readAck = rs
		if t, ok := c.roundTick[rs]; ok && t > p.ackTick {
			p.ackTick = t
		}
	}
	if p.needSnap && c.snap.GetIndex() == 0 {
		c.requestSnapshot()
	}
	c.maybeCommit()
	if c.role != messages.Role_ROLE_LEADER {
		return nil
	}
	c.checkReads()
	c.checkTransfer()
	c.finishChange()
	return nil
}

func (c *Core) stepApplyResult(m *messages.ApplyResult) error {
	if m.GetError() != nil {
		c.failStorage(m.GetError())
		return stepErr(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "apply failed: %s", m.GetError().GetMessage())
	}
	if m.GetAppliedIndex() > c.applyEmitted {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "applied index %d beyond what was handed out (%d)", m.GetAppliedIndex(), c.applyEmitted)
	}
	if m.GetAppliedIndex() > c.applied {
		c.applied = m.GetAppliedIndex()
		// Bytes count only with progress: a repeated report (a restarted
		// apply actor) must not count the same entries twice.
		c.appliedBytes += m.GetAppliedBytes()
		if c.snapBuilding {
			c.markBytes()
		}
	}
	keep := c.reads[:0]
	for _, r := range c.reads {
		if r.state == readDone {
			continue
		}
		if r.state == readWaitApply && c.applied >= r.index {
			c.respond(r.h, &messages.ReadIndexResponse{ReadIndex: r.index})
			continue
		}
		keep = append(keep, r)
	}
	c.reads = keep
	if c.snapshotDue() {
		c.requestSnapshot()
	}
	return nil
}

// snapshotDue is the automatic snapshot policy: enough entries or enough
// bytes were applied since the latest snapshot.
func (c *Core) snapshotDue() bool {
	if n := c.cfg.SnapshotEntries; n > 0 && c.applied >= c.snap.GetIndex()+n {
		return true
	}
	if n := c.cfg.SnapshotBytes; n > 0 && c.appliedBytes-c.snapBytes >= n {
		return true
	}
	return false
}

// maxByteMarks bounds the marks kept during one snapshot build, which can
// take long (a large state machine, a slow disk).
const maxByteMarks = 1024

// markBytes records the apply progress while a snapshot is built. When the
// marks fill up, every other one goes (the first, taken when the build was
// asked for, stays): bytesAt then answers from an earlier mark, which
// counts a few more bytes as applied after the snapshot and makes the next
// one come a little early, never late.
func (c *Core) markBytes() {
	if len(c.byteMarks) >= maxByteMarks {
		k := 1
		for i := 2; i < len(c.byteMarks); i += 2 {
			c.byteMarks[k] = c.byteMarks[i]
			k++
		}
		c.byteMarks = c.byteMarks[:k]
	}
	c.byteMarks = append(c.byteMarks, byteMark{index: c.applied, total: c.appliedBytes})
}

// bytesAt returns appliedBytes as it stood when entries up to index were
// applied, from the marks taken while a snapshot was built. The apply actor
// builds at its own applied index, never below what it reported, so the
// first mark (taken when the build was asked for) is at or below index.
func (c *Core) bytesAt(index uint64) uint64 {
	total := c.snapBytes
	for _, m := range c.byteMarks {
		if m.index > index {
			break
		}
		total = m.total
	}
	return total
}

// ---- snapshots ----

func (c *Core) requestSnapshot() {
	if c.snapBuilding || c.applied == 0 {
		return
	}
	c.snapBuilding = true
	// The marks of the previous build are spent; start from here.
	c.byteMarks = append(c.byteMarks[:0], byteMark{index: c.applied, total: c.appliedBytes})
	c.snapSeq++
	c.rd.Apply = append(c.rd.Apply, &messages.BuildSnapshot{Seq: c.snapSeq})
}

func (c *Core) triggerSnapshot(h Handle, _ *messages.TriggerSnapshotRequest) {
	if c.stopped {
		c.respond(h, &messages.TriggerSnapshotResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped")})
		return
	}
	if c.applied == 0 {
		c.respond(h, &messages.TriggerSnapshotResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_INVALID, "nothing applied yet")})
		return
	}
	c.snapWaiters = append(c.snapWaiters, h)
	c.requestSnapshot()
	c.updateSoft()
}

func (c *Core) stepSnapshotBuilt(m *messages.SnapshotBuilt) error {
	if m.GetSeq() != c.snapSeq || !c.snapBuilding {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot result seq %d not outstanding", m.GetSeq())
	}
	c.snapBuilding = false
	meta := m.GetMeta()
	answer := func(r *messages.TriggerSnapshotResponse) {
		for _, h := range c.snapWaiters {
			c.respond(h, r)
		}
		c.snapWaiters = nil
	}
	if m.GetError() != nil {
		answer(&messages.TriggerSnapshotResponse{Error: m.GetError()})
		return stepErr(m.GetError().GetCode(), "snapshot failed: %s", m.GetError().GetMessage())
	}
	if t, ok := c.termAt(meta.GetIndex()); meta.GetIndex() > c.applied || !ok || t != meta.GetTerm() {
		answer(&messages.TriggerSnapshotResponse{Error: errOf(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot at %d does not match the log", meta.GetIndex())})
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot at %d (term %d) does not match the log", meta.GetIndex(), meta.GetTerm())
	}
	answer(&messages.TriggerSnapshotResponse{Meta: meta})
	if meta.GetIndex() <= c.snap.GetIndex() {
		return nil
	}
	c.snapBytes = c.bytesAt(meta.GetIndex())
	c.setSnapshot(meta)
	if meta.GetIndex() > c.cfg.SnapshotTrailing {
		if purge := meta.GetIndex() - c.cfg.SnapshotTrailing; purge >= c.ti.FirstIndex() {
			c.rd.Storage = append(c.rd.Storage, &messages.StoragePurge{GroupId: c.cfg.GroupID, Index: purge})
		}
	}
	c.notify(nil, false)
	return nil
}

// setSnapshot records meta as the latest snapshot; membership entries it
// covers fold into it.
func (c *Core) setSnapshot(meta *messages.SnapshotMeta) {
	c.snap = meta
	k := 0
	for k < len(c.confs) && c.confs[k].GetIndex() <= meta.GetIndex() {
		k++
	}
	c.confs = c.confs[k:]
}

func (c *Core) stepPurgeResult(m *messages.StoragePurgeResult) error {
	if m.GetError() != nil {
		return stepErr(m.GetError().GetCode(), "purge failed: %s", m.GetError().GetMessage())
	}
	first := m.GetFirstIndex()
	if first <= c.ti.FirstIndex() {
		return nil
	}
	if first-1 > c.snap.GetIndex() {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "purge to %d beyond snapshot %d", first-1, c.snap.GetIndex())
	}
	t, ok := c.termAt(first - 1)
	if !ok {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "purge to %d of unknown term", first-1)
	}
	c.ti.CompactTo(first-1, t)
	c.notify(nil, false)
	return nil
}

func (c *Core) stepInstallSnapshot(m *messages.InstallSnapshotRequest) error {
	h := m.GetHeader()
	if err := c.checkHeader(h, m, true); err != nil {
		return err
	}
	meta := m.GetMeta()
	if meta == nil || meta.GetId() == "" || meta.GetIndex() == 0 || meta.GetTerm() == 0 || meta.GetTerm() > h.GetTerm() {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot without valid meta")
	}
	if err := validateMembership(meta.GetMembership()); err != nil {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot membership: %v", err)
	}
	resp := &messages.InstallSnapshotResponse{Header: c.hdr(h.GetFrom()), SnapshotId: meta.GetId(), Seq: m.GetSeq()}
	if h.GetTerm() < c.term {
		c.send(resp)
		return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "snapshot of term %d below %d", h.GetTerm(), c.term)
	}
	if h.GetTerm() == c.term && c.role == messages.Role_ROLE_LEADER {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot from %d in my own term as leader", h.GetFrom())
	}
	c.acceptLeader(h)
	resp.Header = c.hdr(h.GetFrom())
	if meta.GetIndex() <= c.commit {
		// Nothing to install: everything it covers is committed here.
		resp.Done = true
		resp.NextOffset = meta.GetSize()
		c.send(resp)
		return nil
	}
	if c.install != nil && c.install.meta.GetId() != meta.GetId() && m.GetOffset() != 0 {
		resp.NextOffset = 0
		c.send(resp)
		return nil
	}
	c.install = &installState{leader: h.GetFrom(), term: c.term, meta: meta, seq: m.GetSeq()}
	c.rd.Storage = append(c.rd.Storage, &messages.StorageWriteSnapshotChunk{GroupId: c.cfg.GroupID, Seq: m.GetSeq(),
		Meta: meta, Offset: m.GetOffset(), Data: m.GetData(), Done: m.GetDone()})
	return nil
}

func (c *Core) stepChunkWritten(m *messages.StorageSnapshotChunkWritten) error {
	in := c.install
	// Storage answers the last chunk with the meta it recorded, whose ID is
	// its own: match on the snapshot's position in the log, not on its ID.
	if in == nil || in.term != c.term || m.GetMeta().GetIndex() != in.meta.GetIndex() || m.GetMeta().GetTerm() != in.meta.GetTerm() {
		if !m.GetDone() || m.GetError() != nil || m.GetMeta().GetIndex() <= c.snap.GetIndex() || m.GetMeta().GetTerm() == 0 {
			return stepErr(messages.ErrorCode_ERROR_CODE_STALE_TERM, "snapshot chunk result for no install in progress")
		}
		// Storage finished an install this core no longer waits for (the
		// term moved on while the last chunk was written). Storage has
		// made the snapshot the log's base already (SnapshotWriter.Install),
		// so the core must follow, or its next append would land below the
		// store's base and fail the storage. The snapshot holds committed
		// entries only, so taking it is safe in any term; no leader waits
		// for the answer, and an install of this term stays as it is.
		c.adoptSnapshot(m.GetMeta())
		return nil
	}
	resp := &messages.InstallSnapshotResponse{Header: c.hdr(in.leader), SnapshotId: in.meta.GetId(), Seq: m.GetSeq(),
		NextOffset: m.GetNextOffset(), Error: m.GetError()}
	if m.GetError() != nil || !m.GetDone() {
		if m.GetError() != nil {
			c.install = nil
		}
		c.send(resp)
		return nil
	}
	// The body is durable and verified: make it the log's base, then
	// restore the state machine from it, then tell the leader.
	meta := m.GetMeta()
	if meta.GetId() == "" {
		meta = in.meta
	}
	in.local = meta
	if meta.GetIndex() <= c.commit && c.applyEmitted >= meta.GetIndex() {
		// Everything the snapshot holds is committed here and went to the
		// state machine: storage compacted the log to it, the core follows,
		// and nothing needs restoring.
		c.adoptSnapshot(meta)
		c.install = nil
		resp.Done = true
		c.send(resp)
		return nil
	}
	c.adoptSnapshot(meta)
	in.seq = m.GetSeq()
	return nil
}

// adoptSnapshot makes meta, which storage has installed, the log's base:
// the log is compacted to it (or dropped whole when its entry at meta's
// index conflicts or is missing), the commit index rises to it, and the
// state machine restores from it. Writes waiting at or below it are
// answered UNKNOWN_OUTCOME.
func (c *Core) adoptSnapshot(meta *messages.SnapshotMeta) {
	if meta.GetIndex() <= c.snap.GetIndex() {
		return
	}
	if t, ok := c.termAt(meta.GetIndex()); ok && t == meta.GetTerm() && meta.GetIndex() <= c.ti.LastIndex() {
		c.ti.CompactTo(meta.GetIndex(), meta.GetTerm())
	} else {
		// The entry at the snapshot's index conflicts or is missing: the
		// whole log goes (PITFALLS #15).
		c.truncateAfter(c.ti.FirstIndex() - 1)
		c.ti.CompactTo(meta.GetIndex(), meta.GetTerm())
		c.recent = nil
	}
	c.setSnapshot(meta)
	c.commit = max(c.commit, meta.GetIndex())
	c.durable = max(c.durable, meta.GetIndex())
	ap := c.pendingAppend()
	ap.Snapshot = meta
	c.pendingSeq[len(c.pendingSeq)-1].last = c.ti.LastIndex()
	c.persistHardState()
	c.refreshFollowerRole()
	if c.applyEmitted >= meta.GetIndex() {
		// Every entry the snapshot holds went to the state machine
		// already (a snapshot adopted late): nothing to restore.
		return
	}
	c.restoreSeq++
	c.restoring = true
	c.applyDurable(&messages.RestoreSnapshot{Seq: c.restoreSeq, Meta: meta})
	c.applyEmitted = max(c.applyEmitted, meta.GetIndex())
	// Writes waiting at or below the snapshot can no longer be told apart.
	k := 0
	for k < len(c.waiters) && c.waiters[k].GetIndex() <= meta.GetIndex() {
		w := c.waiters[k]
		c.respond(Handle(w.GetHandle()), &messages.ClientWriteResponse{Index: w.GetIndex(), Term: w.GetTerm(),
			Error: errOf(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "replaced by a snapshot from the leader")})
		k++
	}
	c.waiters = c.waiters[k:]
}

func (c *Core) stepSnapshotRestored(m *messages.SnapshotRestored) error {
	// Two installs may overlap (the second arrives while the first restore
	// waits for its fsync); their restores complete in order.
	if m.GetSeq() > c.restoreSeq || m.GetSeq() == 0 || !c.restoring {
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "snapshot restore seq %d not outstanding", m.GetSeq())
	}
	if m.GetError() != nil {
		c.failStorage(m.GetError())
		return stepErr(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "restore failed: %s", m.GetError().GetMessage())
	}
	c.restoring = m.GetSeq() < c.restoreSeq
	c.applied = max(c.applied, m.GetMeta().GetIndex())
	// The state machine is the snapshot now: nothing applied since.
	c.snapBytes = c.appliedBytes
	in := c.install
	if in != nil && in.local.GetId() != m.GetMeta().GetId() && in.term == c.term {
		// The restore of a snapshot adopted from an earlier term; the
		// install of this term goes on.
		c.maybeApply()
		return nil
	}
	c.install = nil
	if in != nil && in.term == c.term && in.local.GetId() == m.GetMeta().GetId() {
		c.send(&messages.InstallSnapshotResponse{Header: c.hdr(in.leader), SnapshotId: in.meta.GetId(), Seq: in.seq,
			NextOffset: in.meta.GetSize(), Done: true})
	}
	c.maybeApply()
	return nil
}

// validateMembership checks a configuration for nonsense.
func validateMembership(m *messages.Membership) error {
	if m == nil {
		return errString("missing membership")
	}
	seen := map[uint64]bool{}
	for _, id := range m.GetVoters() {
		if id == 0 || seen[id] {
			return errString("voter 0 or duplicate voter")
		}
		seen[id] = true
	}
	if len(m.GetVoters()) == 0 {
		return errString("no voters")
	}
	out := map[uint64]bool{}
	for _, id := range m.GetVotersOutgoing() {
		if id == 0 || out[id] {
			return errString("outgoing voter 0 or duplicate")
		}
		out[id] = true
	}
	l := map[uint64]bool{}
	for _, id := range m.GetLearners() {
		if id == 0 || seen[id] || l[id] {
			return errString("learner 0, duplicate, or also a voter")
		}
		l[id] = true
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }
