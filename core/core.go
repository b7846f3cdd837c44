// Package core holds the Raft decisions of a RaftCore actor as plain,
// deterministic code: elections (with pre-vote and check-quorum), the
// follower side of log replication, the commit rule, membership changes
// through joint consensus, leader transfer and linearizable reads.
//
// A Core has no goroutines, reads no clock and does no I/O. Time arrives as
// Tick calls and randomness through Config.Rand. Everything the core wants
// done (persist, send, replicate, apply, answer) accumulates in a Ready that
// the caller drains; results of that work are stepped back in. The core
// keeps no entry payloads: it indexes the terms of its log (TermIndex) and
// lets entries pass through on their way to storage and the apply actor.
//
// The actor layer is a thin loop around it:
//
//	for msg := range mailbox {
//		switch m := msg.(type) {
//		case *messages.Tick:
//			c.Tick()
//		case *messages.ClientWriteRequest:
//			c.Propose(handleFor(sender), m)
//		default:
//			if err := c.Step(m); err != nil { log at debug }
//		}
//		if c.HasReady() { execute(c.Ready()) }
//	}
package core

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Config configures one Core. Zero values of the optional fields take the
// defaults named in their comments.
type Config struct {
	// ClusterID and GroupID must match the Header of every wire message.
	ClusterID string
	GroupID   uint64
	// ID is this node's ID; it must not be 0.
	ID uint64

	// ElectionTicks is the minimum election timeout in ticks; each timeout
	// is drawn from [ElectionTicks, 2*ElectionTicks). Default 10.
	ElectionTicks int
	// HeartbeatTicks is the leader's heartbeat interval; it must be lower
	// than ElectionTicks. Default 1.
	HeartbeatTicks int
	// Rand draws randomized election timeouts. Nil uses a source seeded
	// from ID, so a run is reproducible.
	Rand *rand.Rand

	// PreVote makes a node ask whether it could win before it raises its
	// term, so a partitioned node does not depose a healthy leader.
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum within an election timeout, and makes voters ignore vote
	// requests while they hear from a leader (leader stickiness).
	CheckQuorum bool
	// LeaseRead answers read index requests from the leader's lease (a
	// quorum heard within the minimum election timeout) without a heartbeat
	// round. It relies on bounded clock drift and requires CheckQuorum.
	LeaseRead bool

	// MaxUncommittedWrites bounds the leader's uncommitted entries; writes
	// beyond it get OVERLOADED. Default 10000.
	MaxUncommittedWrites int
	// MaxEntryBytes bounds the encoded size of one entry; bigger writes get
	// TOO_LARGE. Default 1 MiB.
	MaxEntryBytes int
	// MaxAppendEntries and MaxAppendBytes bound one AppendEntriesRequest.
	// The core validates incoming requests against twice these limits (a
	// peer may be configured differently). Defaults 512 and 4 MiB.
	MaxAppendEntries int
	MaxAppendBytes   uint64

	// SnapshotEntries asks the apply actor for a snapshot once this many
	// entries were applied since the last one; 0 disables automatic
	// snapshots. SnapshotTrailing entries are kept in the log after a
	// snapshot so that slightly lagging peers need no snapshot. Default 1024.
	SnapshotEntries  uint64
	SnapshotTrailing uint64
	// SnapshotBytes asks for a snapshot once the entries applied since the
	// last one add up to this many bytes (as ApplyResult.applied_bytes
	// reports them), whichever of SnapshotEntries and SnapshotBytes comes
	// first; 0 disables it. It bounds the log of a workload with large
	// entries, where a count alone would let the log grow to gigabytes.
	// The count starts again at zero when the node starts: bytes applied
	// before a restart are not remembered (SnapshotEntries, which counts
	// indexes, still bounds the log then).
	SnapshotBytes uint64

	// Logger receives debug and warning lines; nil discards them.
	Logger *slog.Logger
}

func (cfg *Config) withDefaults() Config {
	c := *cfg
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.MaxUncommittedWrites == 0 {
		c.MaxUncommittedWrites = 10000
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = 1 << 20
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 512
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = 4 << 20
	}
	if c.SnapshotTrailing == 0 {
		c.SnapshotTrailing = 1024
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(c.ID, c.GroupID))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first configuration error, with defaults applied.
func (cfg *Config) Validate() error {
	c := cfg.withDefaults()
	switch {
	case c.ID == 0:
		return errors.New("core: config: ID must not be 0")
	case c.ElectionTicks < 0 || c.HeartbeatTicks < 0:
		return errors.New("core: config: ElectionTicks and HeartbeatTicks must be positive")
	case c.HeartbeatTicks >= c.ElectionTicks:
		return fmt.Errorf("core: config: HeartbeatTicks (%d) must be lower than ElectionTicks (%d)", c.HeartbeatTicks, c.ElectionTicks)
	case c.ElectionTicks > 1<<20:
		return fmt.Errorf("core: config: ElectionTicks %d is unreasonably large", c.ElectionTicks)
	case c.LeaseRead && !c.CheckQuorum:
		return errors.New("core: config: LeaseRead requires CheckQuorum")
	case c.MaxUncommittedWrites < 0 || c.MaxEntryBytes < 0 || c.MaxAppendEntries < 0:
		return errors.New("core: config: limits must not be negative")
	}
	return nil
}

// StepError is the error Step returns for a message it refused or found
// stale. Code says why; the caller may log it and drop the message. Where
// Raft answers such a message (a stale term), the answer is in Ready.Send.
type StepError struct {
	Code messages.ErrorCode
	Msg  string
}

func (e *StepError) Error() string { return "core: " + e.Code.String() + ": " + e.Msg }

// Is makes errors.Is(err, &StepError{Code: c}) match on the code.
func (e *StepError) Is(target error) bool {
	t, ok := target.(*StepError)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrStaleTerm     = &StepError{Code: messages.ErrorCode_ERROR_CODE_STALE_TERM}
	ErrWrongCluster  = &StepError{Code: messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER}
	ErrUnknownSender = &StepError{Code: messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER}
	ErrInvalid       = &StepError{Code: messages.ErrorCode_ERROR_CODE_INVALID}
	ErrStopped       = &StepError{Code: messages.ErrorCode_ERROR_CODE_STOPPED}
)

func stepErr(code messages.ErrorCode, format string, args ...any) error {
	return &StepError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Status is a cheap snapshot of the core's state for tests and metrics.
type Status struct {
	ID        uint64
	Role      messages.Role
	Term      uint64
	Vote      uint64
	Leader    uint64
	Commit    uint64
	Applied   uint64
	Durable   uint64
	LastIndex uint64
	LastTerm  uint64
	// FirstIndex is the first index of the log; SnapshotIndex the last
	// index covered by the latest snapshot.
	FirstIndex    uint64
	SnapshotIndex uint64
	// BytesSinceSnapshot is the size of the entries applied since the latest
	// snapshot, the count that Config.SnapshotBytes is compared with.
	BytesSinceSnapshot uint64
	Membership         *messages.Membership
	// MembershipIndex is the log index of Membership (the latest one,
	// in force even when uncommitted).
	MembershipIndex uint64
	// Transferring is the target of a leader transfer in progress, or 0.
	Transferring uint64
}

// Proposal is one write of ProposeBatch.
type Proposal struct {
	Handle  Handle
	Request *messages.ClientWriteRequest
}

// New makes a Core from what storage holds. st may be nil for an empty
// node. It returns an error when cfg is invalid or st is inconsistent (for
// example term runs that do not cover the log, or an identity that names
// another node).
func New(cfg Config, st *messages.InitialState) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg.withDefaults()}
	if err := c.load(st); err != nil {
		return nil, err
	}
	return c, nil
}

// ID returns the node's ID.
func (c *Core) ID() uint64 { return c.cfg.ID }

// Tick advances the logical clock by one tick: election timeouts,
// heartbeats, check-quorum, transfer and lease expiry.
func (c *Core) Tick() { c.tick() }

// Step feeds one message to the core: a wire RPC (*messages.VoteRequest,
// *messages.VoteResponse, *messages.AppendEntriesRequest,
// *messages.InstallSnapshotRequest, *messages.TimeoutNowRequest) or an
// internal result (*messages.StorageAppendResult,
// *messages.ReplicationReport, *messages.ApplyResult,
// *messages.SnapshotBuilt, *messages.SnapshotRestored,
// *messages.StoragePurgeResult, *messages.StorageSnapshotChunkWritten).
//
// A message that is refused (wrong cluster, unknown sender, malformed) or
// stale returns a *StepError; Raft's answer to it, if any, is in Ready.Send.
// Step never panics on any input.
func (c *Core) Step(msg proto.Message) error { return c.step(msg) }

// Request dispatches a client request by type to Propose, ReadIndex,
// Initialize, AddLearner, ChangeMembership, RemoveLearner, TransferLeader or
// TriggerSnapshot. It returns an error only for a type it does not know.
func (c *Core) Request(h Handle, msg proto.Message) error {
	switch m := msg.(type) {
	case *messages.ClientWriteRequest:
		c.Propose(h, m)
	case *messages.ReadIndexRequest:
		c.ReadIndex(h, m)
	case *messages.InitializeRequest:
		c.Initialize(h, m)
	case *messages.AddLearnerRequest:
		c.AddLearner(h, m)
	case *messages.ChangeMembershipRequest:
		c.ChangeMembership(h, m)
	case *messages.RemoveLearnerRequest:
		c.RemoveLearner(h, m)
	case *messages.TransferLeaderRequest:
		c.TransferLeader(h, m)
	case *messages.TriggerSnapshotRequest:
		c.TriggerSnapshot(h, m)
	default:
		return stepErr(messages.ErrorCode_ERROR_CODE_INVALID, "unknown request type %T", msg)
	}
	return nil
}

// Propose appends a client write on the leader. Errors (NOT_LEADER with the
// leader's id and address, OVERLOADED, TOO_LARGE, TRANSFER_IN_PROGRESS,
// STORAGE_FAILED) come back as a Response. On success h becomes a waiter of
// the entry's (index, term) in a later ApplyCommitted, and the apply actor
// answers it; a waiter whose entry was replaced is answered ABORTED, one
// whose outcome cannot be known (the node stops) UNKNOWN_OUTCOME.
func (c *Core) Propose(h Handle, req *messages.ClientWriteRequest) {
	c.propose(h, req)
	c.afterWrite()
}

// ProposeBatch proposes several writes at once; they share one persist and
// one replication notification.
func (c *Core) ProposeBatch(ps []Proposal) {
	for _, p := range ps {
		c.propose(p.Handle, p.Request)
	}
	c.afterWrite()
}

// ReadIndex asks for a linearizable read point. The leader waits for the
// first entry of its term to commit, records its commit index, confirms its
// leadership with a quorum heartbeat round (or its lease with LeaseRead)
// and answers with the read index; with wait_applied it answers only once
// applied reaches it.
func (c *Core) ReadIndex(h Handle, req *messages.ReadIndexRequest) { c.readIndex(h, req) }

// Initialize forms a new cluster on an empty node: it writes the membership
// as entry 1 of term 1. Initialize either one founding node (the others
// learn the membership from it) or every founding node with exactly the same
// membership: two different entries 1 of term 1 would break log matching.
// A node that already has state answers ALREADY_INITIALIZED. The answer
// comes once the entry is durable.
func (c *Core) Initialize(h Handle, req *messages.InitializeRequest) { c.initialize(h, req) }

// AddLearner adds a learner (leader only). The answer comes once the change
// committed (and, with wait_caught_up, once the learner holds the log up to
// the entry that added it).
func (c *Core) AddLearner(h Handle, req *messages.AddLearnerRequest) { c.addLearner(h, req) }

// ChangeMembership sets the voters through joint consensus: C_old,new is
// appended, and once it commits C_new; the answer comes when C_new commits.
// New voters must be learners already. One change at a time.
func (c *Core) ChangeMembership(h Handle, req *messages.ChangeMembershipRequest) {
	c.changeMembership(h, req)
}

// RemoveLearner removes a learner (leader only).
func (c *Core) RemoveLearner(h Handle, req *messages.RemoveLearnerRequest) { c.removeLearner(h, req) }

// TransferLeader hands leadership to target: the leader stops taking writes,
// brings the target up to date and sends it TimeoutNow. The answer comes
// when this node learns the target leads, or TIMEOUT after an election
// timeout (and the leader takes writes again).
func (c *Core) TransferLeader(h Handle, req *messages.TransferLeaderRequest) {
	c.transferLeader(h, req)
}

// TriggerSnapshot asks the apply actor for a snapshot now; the answer comes
// with SnapshotBuilt.
func (c *Core) TriggerSnapshot(h Handle, req *messages.TriggerSnapshotRequest) {
	c.triggerSnapshot(h, req)
}

// Stop answers everything still pending: writes whose outcome is unknown get
// UNKNOWN_OUTCOME, every other request STOPPED. The answers are returned,
// not put in Ready; after Stop the core refuses all input.
func (c *Core) Stop() []Response { return c.stop() }

// Status returns a snapshot of the core's state.
func (c *Core) Status() Status { return c.status() }

// Metrics returns the node's metrics (peers filled on the leader from the
// replication reports).
func (c *Core) Metrics() *messages.Metrics { return c.metrics() }

// Campaign starts an election now, as if the election timeout had passed
// (with pre-vote when configured). It is a no-op on a leader or on a node
// that may not vote. Tests and operators use it; Raft itself does not need
// it.
func (c *Core) Campaign() {
	if c.stopped {
		return
	}
	c.hup(false)
	c.updateSoft()
}

// TermIndex returns a copy of the index of the log's terms (the entries
// this node holds, durable or not). Simulators use it to check that logs
// match.
func (c *Core) TermIndex() *TermIndex { return c.ti.Clone() }
