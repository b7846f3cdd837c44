package core

import (
	"math"
	"slices"

	"github.com/raftor/raftor/messages"
)

// Core is the Raft state machine of one node of one group. It is not safe
// for concurrent use: one actor owns it.
type Core struct {
	cfg     Config
	stopped bool

	// Hard state. term and vote are persisted before any reply that depends
	// on them; commit is persisted when something else is.
	term, vote, commit uint64
	hsEmitted          hsVals

	role   messages.Role
	leader uint64

	ti   *TermIndex
	snap *messages.SnapshotMeta
	// confs are the membership entries after snap.Index, in log order. The
	// latest is in force even uncommitted; truncation reverts to an older
	// one.
	confs []*messages.MembershipEntry

	// durable is the last index known durable and matching the current log;
	// entries above it are on their way to disk. applied is what the apply
	// actor reported, applyEmitted what it was asked to apply.
	durable      uint64
	applied      uint64
	applyEmitted uint64

	// Logical clock.
	now                       uint64
	electionElapsed           int
	heartbeatElapsed          int
	randomizedElectionTimeout int

	// Candidate state.
	votes            map[uint64]bool
	campaignTransfer bool

	// Leader state.
	peers     map[uint64]*peer
	readSeq   uint64
	roundTick map[uint64]uint64
	reads     []*readReq
	transfer  *transferState
	change    *confChange
	// leaseRevoked is set once a transfer began in this leadership: its
	// target may campaign with the transfer flag, which voters grant
	// even while they hear this leader, at any time its TimeoutNow
	// arrives. Acknowledgements no longer bound when another leader can be
	// elected, so reads take a quorum round until the next leadership.
	leaseRevoked bool

	// waiters are the writes not yet handed to the apply actor, by index.
	waiters []*messages.ApplyWaiter

	// Output and persistence bookkeeping.
	rd         Ready
	lastSoft   SoftState
	nextSeq    uint64
	durableSeq uint64
	pendingSeq []seqMark
	held       []heldItem
	recent     []*messages.Entry

	// Snapshots.
	snapSeq      uint64
	snapBuilding bool
	// appliedBytes counts the entry bytes the apply actor reported applied
	// since this core started; snapBytes is its value at the index of the
	// latest snapshot, so appliedBytes-snapBytes is what SnapshotBytes is
	// compared with. The apply actor keeps applying while a snapshot is
	// built, and the snapshot lands at an index the core learns only when
	// it is done: byteMarks records (applied, appliedBytes) at each apply
	// result while one is built, so that the count restarts exactly at the
	// snapshot's index.
	appliedBytes uint64
	snapBytes    uint64
	byteMarks    []byteMark
	snapWaiters  []Handle
	install      *installState
	restoreSeq   uint64
	restoring    bool

	storageErr *messages.Error
}

type peer struct {
	id       uint64
	learner  bool
	match    uint64
	next     uint64
	mode     messages.ReplicationMode
	heard    bool   // heard from in the current check-quorum period
	readAck  uint64 // highest heartbeat round acknowledged
	ackTick  uint64 // send tick of the newest acknowledged round (lease)
	lastTick uint64 // tick of the last report that heard from it
	reach    bool
	inflE    uint64
	inflB    uint64
	needSnap bool
}

// byteMark is the apply progress at one ApplyResult: entries up to index
// added up to total bytes.
type byteMark struct {
	index, total uint64
}

type readState int

const (
	readWaitBlank readState = iota
	readWaitQuorum
	readWaitApply
	readDone
)

type readReq struct {
	h     Handle
	req   *messages.ReadIndexRequest
	index uint64
	seq   uint64
	state readState
}

type transferState struct {
	target  uint64
	h       Handle
	elapsed int
	sent    bool
	// stepped is set once this node stepped down during the transfer: it
	// then only waits to learn who leads.
	stepped bool
}

type changeKind int

const (
	changeVoters changeKind = iota
	changeAddLearner
	changeRemoveLearner
)

type confChange struct {
	h            Handle
	kind         changeKind
	index        uint64 // index of the configuration entry that finishes it
	joint        bool   // waiting for C_old,new to commit
	learner      uint64
	waitCaughtUp bool
	committed    bool
}

type seqMark struct{ seq, last uint64 }

type heldKind int

const (
	heldSend heldKind = iota
	heldResponse
	heldApply
)

type heldItem struct {
	seq  uint64
	kind heldKind
	msg  any
}

type installState struct {
	leader uint64
	term   uint64
	meta   *messages.SnapshotMeta // as the leader sent it
	// local is the meta storage recorded once the body was durable. Its ID
	// is the receiving store's own (a store never takes a file name from the
	// network), so it is what the log's base and the restore refer to.
	local *messages.SnapshotMeta
	seq   uint64 // seq of the leader's last InstallSnapshotRequest
}

// ---- membership helpers ----

func (c *Core) latestConf() (*messages.Membership, uint64) {
	if n := len(c.confs); n > 0 {
		return c.confs[n-1].GetMembership(), c.confs[n-1].GetIndex()
	}
	return c.snap.GetMembership(), c.snap.GetMembershipIndex()
}

func (c *Core) committedConf() (*messages.Membership, uint64) {
	for k := len(c.confs) - 1; k >= 0; k-- {
		if c.confs[k].GetIndex() <= c.commit {
			return c.confs[k].GetMembership(), c.confs[k].GetIndex()
		}
	}
	return c.snap.GetMembership(), c.snap.GetMembershipIndex()
}

func isVoter(m *messages.Membership, id uint64) bool {
	return slices.Contains(m.GetVoters(), id) || slices.Contains(m.GetVotersOutgoing(), id)
}

func isMember(m *messages.Membership, id uint64) bool {
	return isVoter(m, id) || slices.Contains(m.GetLearners(), id)
}

// members lists every node of m (both voter halves and learners), sorted.
func members(m *messages.Membership) []uint64 {
	var out []uint64
	out = append(out, m.GetVoters()...)
	out = append(out, m.GetVotersOutgoing()...)
	out = append(out, m.GetLearners()...)
	slices.Sort(out)
	return slices.Compact(out)
}

// quorumIndex returns the highest index that a majority of ids holds. An
// empty set places no constraint (it is the absent half of a non-joint
// configuration).
func quorumIndex(ids []uint64, match func(uint64) uint64) uint64 {
	if len(ids) == 0 {
		return math.MaxUint64
	}
	vals := make([]uint64, len(ids))
	for k, id := range ids {
		vals[k] = match(id)
	}
	slices.Sort(vals)
	slices.Reverse(vals)
	return vals[len(vals)/2]
}

// jointIndex is the commit point of m: during joint consensus the lower of
// the two halves' majorities.
func jointIndex(m *messages.Membership, match func(uint64) uint64) uint64 {
	if len(m.GetVoters()) == 0 {
		return 0
	}
	return min(quorumIndex(m.GetVoters(), match), quorumIndex(m.GetVotersOutgoing(), match))
}

type voteResult int

const (
	votePending voteResult = iota
	voteWon
	voteLost
)

func halfResult(ids []uint64, votes map[uint64]bool) voteResult {
	if len(ids) == 0 {
		return voteWon
	}
	granted, rejected := 0, 0
	for _, id := range ids {
		if v, ok := votes[id]; ok {
			if v {
				granted++
			} else {
				rejected++
			}
		}
	}
	q := len(ids)/2 + 1
	switch {
	case granted >= q:
		return voteWon
	case rejected > len(ids)-q:
		return voteLost
	}
	return votePending
}

// tally counts votes in both halves of m: a joint election needs a
// majority of each.
func tally(m *messages.Membership, votes map[uint64]bool) voteResult {
	if len(m.GetVoters()) == 0 {
		return voteLost
	}
	a, b := halfResult(m.GetVoters(), votes), halfResult(m.GetVotersOutgoing(), votes)
	switch {
	case a == voteLost || b == voteLost:
		return voteLost
	case a == voteWon && b == voteWon:
		return voteWon
	}
	return votePending
}

// quorumHas reports whether a majority of each half satisfies ok.
func quorumHas(m *messages.Membership, ok func(uint64) bool) bool {
	votes := map[uint64]bool{}
	for _, id := range members(m) {
		votes[id] = ok(id)
	}
	return tally(m, votes) == voteWon
}
