package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
	"github.com/raftor/raftor/store"
)

// Node is one member of a Raft group, running as actors in an actor system
// that the application owns. Its methods are safe for concurrent use and
// may be called from any goroutine except from inside an actor's Receive
// (they wait for an answer): an application actor sends the messages.*
// requests to PID() instead and handles the response as a message.
type Node struct {
	cfg    Config
	system *actor.ActorSystem
	sm     store.StateMachine
	st     store.Store
	log    *slog.Logger
	peers  PeerResolver

	corePID, storagePID, applyPID *actor.PID
	writer                        *storageWriter
	lane                          *storageLane
	replEnv                       *replEnv

	metrics atomic.Pointer[messages.Metrics]

	mu       sync.Mutex
	watchers map[int]chan *messages.Metrics
	nextW    int
	stopped  bool
	stopOnce sync.Once
	done     chan struct{}
	// pool is the default dispatcher the node made for itself (nil when
	// Config.Dispatcher came from the caller); Stop closes it.
	pool *workerPool

	// Reply processes kept for reuse by calls (newReply, putReply).
	replyMu       sync.Mutex
	freeReplies   []*replyProcess
	repliesClosed bool
}

// WriteResult is the state machine's answer to a committed write.
type WriteResult struct {
	// Index and Term are the log position of the write.
	Index, Term uint64
	// Data is the state machine's result bytes, Typed its typed result.
	Data  []byte
	Typed *anypb.Any
}

// Decode unmarshals the typed result into m.
func (r *WriteResult) Decode(m proto.Message) error {
	if r.Typed == nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: "the state machine returned no typed result"}
	}
	return r.Typed.UnmarshalTo(m)
}

// Start runs a node in system: its RaftCore, storage and apply actors. sm
// is the user's state machine and st the node's store; the node does not
// close either. A node with an empty store waits for Initialize (on one
// founding node) or to hear from a leader of a cluster that lists it.
func Start(system *actor.ActorSystem, cfg Config, sm store.StateMachine, st store.Store) (*Node, error) {
	if system == nil || sm == nil || st == nil {
		return nil, errors.New("raftor: Start needs an actor system, a state machine and a store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var pool *workerPool
	if cfg.Dispatcher == nil {
		pool = newWorkerPool()
		cfg.Dispatcher = pool
	}
	if id := st.Identity(); id != nil && (id.GetClusterId() != cfg.ClusterID || id.GetNodeId() != cfg.NodeID) {
		return nil, fmt.Errorf("raftor: the store belongs to cluster %q node %d, not cluster %q node %d",
			id.GetClusterId(), id.GetNodeId(), cfg.ClusterID, cfg.NodeID)
	}
	n := &Node{cfg: cfg, system: system, sm: sm, st: st, log: cfg.Logger.With(slog.Uint64("node", cfg.NodeID)),
		watchers: map[int]chan *messages.Metrics{}, done: make(chan struct{}),
		pool: pool}
	n.peers = cfg.Peers
	if n.peers == nil {
		n.peers = namedPeers{system: system, clusterID: cfg.ClusterID, groupID: cfg.GroupID}
	}
	name := func(part string) string { return actorName(cfg.ClusterID, cfg.GroupID, cfg.NodeID, part) }
	n.corePID = actor.NewPID(system.Address(), CoreName(cfg.ClusterID, cfg.GroupID, cfg.NodeID))
	if _, taken := system.ProcessRegistry.GetLocal(n.corePID.GetId()); taken {
		return nil, fmt.Errorf("raftor: node %d of cluster %q group %d already runs in this actor system", cfg.NodeID, cfg.ClusterID, cfg.GroupID)
	}
	var opts []actor.PropsOption
	if cfg.Dispatcher != nil {
		opts = append(opts, actor.WithDispatcher(cfg.Dispatcher))
	}

	var err error
	if sw := cfg.SharedWriter; sw != nil {
		if !sameStore(sw.Store(), st) {
			return nil, errors.New("raftor: Config.SharedWriter writes another store than the one handed to Start")
		}
		n.writer = sw.w
		if n.lane, err = n.writer.register(cfg.GroupID, system, false); err != nil {
			return nil, err
		}
	} else {
		n.writer = newStorageWriter(st, n.log, cfg.InlineStorage)
		n.lane, _ = n.writer.register(cfg.GroupID, system, true)
	}
	n.storagePID, err = system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return newStorageActor(n.lane, cfg.GroupID, st, n.log)
	}, opts...), name("storage"))
	if err != nil {
		n.lane.close()
		return nil, fmt.Errorf("raftor: spawn storage actor: %w", err)
	}
	applyStarts := new(int)
	n.applyPID, err = system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return newApplyActor(cfg.GroupID, sm, st, n.storagePID, n.corePID, n.log, applyStarts)
	}, opts...), name("apply"))
	if err != nil {
		_ = system.Root.StopFuture(n.storagePID).Wait()
		return nil, fmt.Errorf("raftor: spawn apply actor: %w", err)
	}
	n.replEnv = &replEnv{clusterID: cfg.ClusterID, group: cfg.GroupID, self: cfg.NodeID, storage: n.storagePID,
		dispatch: cfg.Dispatcher, log: n.log, cfg: replication.Config{
			MaxAppendEntries: cfg.MaxAppendEntries, MaxAppendBytes: cfg.MaxAppendBytes,
			MaxInflight: cfg.MaxInflightAppends, SnapshotChunkBytes: cfg.SnapshotChunkBytes,
			RequestTimeoutTicks: max(1, int(cfg.ReplicationTimeout/cfg.TickInterval)),
		}}
	if _, err := system.Root.SpawnNamed(newRaftCoreProps(n), n.corePID.GetId()); err != nil {
		_ = system.Root.StopFuture(n.applyPID).Wait()
		_ = system.Root.StopFuture(n.storagePID).Wait()
		return nil, fmt.Errorf("raftor: spawn raftcore actor: %w", err)
	}
	return n, nil
}

func (n *Node) coreConfig() core.Config {
	c := n.cfg
	return core.Config{
		ClusterID: c.ClusterID, GroupID: c.GroupID, ID: c.NodeID,
		ElectionTicks: c.ElectionTicks, HeartbeatTicks: c.HeartbeatTicks,
		PreVote: !c.DisablePreVote, CheckQuorum: !c.DisableCheckQuorum, LeaseRead: c.LeaseRead,
		MaxUncommittedWrites: c.MaxPendingWrites, MaxEntryBytes: c.MaxEntryBytes,
		MaxAppendEntries: c.MaxAppendEntries, MaxAppendBytes: c.MaxAppendBytes,
		SnapshotEntries: c.SnapshotEntries, SnapshotTrailing: c.SnapshotTrailing, SnapshotBytes: c.SnapshotBytes,
		Logger: n.log,
	}
}

// PID is the node's RaftCore actor. Application actors send it the
// requests of messages/client.proto (ClientWriteRequest, ReadIndexRequest,
// AddLearnerRequest, ...) with a sender and get the response back.
func (n *Node) PID() *actor.PID { return n.corePID }

// ID returns the node's ID.
func (n *Node) ID() uint64 { return n.cfg.NodeID }

// Initialize forms a new cluster with membership (voters and their
// addresses). Call it on one founding node (or on each: the others answer
// ALREADY_INITIALIZED once they hold the configuration).
func (n *Node) Initialize(ctx context.Context, membership *messages.Membership) error {
	resp, err := n.call(ctx, &messages.InitializeRequest{Membership: membership})
	if err != nil {
		return err
	}
	return FromProto(resp.(*messages.InitializeResponse).GetError())
}

// ClientWrite replicates data as a command and returns the state machine's
// result once the write is committed and applied. A write sent to a
// follower is forwarded to the leader. On a TIMEOUT or UNKNOWN_OUTCOME
// error the write may or may not have been applied.
func (n *Node) ClientWrite(ctx context.Context, data []byte) (*WriteResult, error) {
	// A copy of data: on a timeout the call returns while the entry may
	// still be on its way, and the caller may reuse its buffer.
	return n.write(ctx, &messages.ClientWriteRequest{Data: bytes.Clone(data)})
}

// ClientWriteCommand is ClientWrite with a typed command; decode the typed
// result with WriteResult.Decode.
func (n *Node) ClientWriteCommand(ctx context.Context, cmd proto.Message) (*WriteResult, error) {
	a, err := anypb.New(cmd)
	if err != nil {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: err.Error()}
	}
	return n.write(ctx, &messages.ClientWriteRequest{Command: a})
}

// Write sends a full ClientWriteRequest (to set a RequestID for
// deduplication, or no_forward).
func (n *Node) Write(ctx context.Context, req *messages.ClientWriteRequest) (*WriteResult, error) {
	if req == nil {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: "nil write request"}
	}
	// The node fills in timeout_ms, and the entry may still be on its way
	// when the call returns: work on a copy of the caller's request.
	return n.write(ctx, proto.Clone(req).(*messages.ClientWriteRequest))
}

// write sends req, which the node owns from now on.
func (n *Node) write(ctx context.Context, req *messages.ClientWriteRequest) (*WriteResult, error) {
	followed := stagesOn && stages.begin()
	resp, err := n.call(ctx, req)
	if err != nil {
		if followed {
			stages.end(0)
		}
		return nil, err
	}
	r := resp.(*messages.ClientWriteResponse)
	if followed {
		stages.end(r.GetIndex())
	}
	if err := FromProto(r.GetError()); err != nil {
		return nil, err
	}
	return &WriteResult{Index: r.GetIndex(), Term: r.GetTerm(), Data: r.GetResult(), Typed: r.GetTypedResult()}, nil
}

// ReadIndex returns a read index from the leader: once a state machine has
// applied up to it, reading that state machine is linearizable.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	resp, err := n.call(ctx, &messages.ReadIndexRequest{})
	if err != nil {
		return 0, err
	}
	r := resp.(*messages.ReadIndexResponse)
	return r.GetReadIndex(), FromProto(r.GetError())
}

// EnsureLinearizable returns once this node's state machine holds every
// write acknowledged before the call: a read of the local state machine
// after it is linearizable. On a follower the read index comes from the
// leader and the wait is local.
func (n *Node) EnsureLinearizable(ctx context.Context) error {
	resp, err := n.call(ctx, &messages.ReadIndexRequest{WaitApplied: true})
	if err != nil {
		return err
	}
	return FromProto(resp.(*messages.ReadIndexResponse).GetError())
}

// IsLeader reports whether this node is the leader, as of its latest
// metrics (no round trip: use EnsureLinearizable to be sure).
func (n *Node) IsLeader() bool {
	m := n.metrics.Load()
	return m != nil && m.GetRole() == messages.Role_ROLE_LEADER
}

// Leader returns the leader this node knows of, 0 when it knows none.
func (n *Node) Leader() (id uint64, address string) {
	m := n.metrics.Load()
	return m.GetLeaderId(), m.GetLeaderAddress()
}

// AddLearner adds node id at address as a learner and returns once the
// change is committed and the learner caught up with the log.
func (n *Node) AddLearner(ctx context.Context, id uint64, address string) error {
	return n.change(ctx, &messages.AddLearnerRequest{NodeId: id, Address: address, WaitCaughtUp: true})
}

// ChangeMembership makes voters the exact set of voters (through joint
// consensus when needed). New voters must be learners already; removed
// voters leave the cluster.
func (n *Node) ChangeMembership(ctx context.Context, voters []uint64) error {
	return n.change(ctx, &messages.ChangeMembershipRequest{Voters: voters})
}

// RemoveLearner removes a learner.
func (n *Node) RemoveLearner(ctx context.Context, id uint64) error {
	return n.change(ctx, &messages.RemoveLearnerRequest{NodeId: id})
}

func (n *Node) change(ctx context.Context, req proto.Message) error {
	resp, err := n.call(ctx, req)
	if err != nil {
		return err
	}
	return FromProto(resp.(*messages.MembershipChangeResponse).GetError())
}

// TransferLeader hands leadership to target and returns once target leads.
// It must be called on the leader.
func (n *Node) TransferLeader(ctx context.Context, target uint64) error {
	resp, err := n.call(ctx, &messages.TransferLeaderRequest{Target: target})
	if err != nil {
		return err
	}
	return FromProto(resp.(*messages.TransferLeaderResponse).GetError())
}

// TriggerSnapshot takes a snapshot of the state machine now and returns
// its meta once it is stored.
func (n *Node) TriggerSnapshot(ctx context.Context) (*messages.SnapshotMeta, error) {
	resp, err := n.call(ctx, &messages.TriggerSnapshotRequest{})
	if err != nil {
		return nil, err
	}
	r := resp.(*messages.TriggerSnapshotResponse)
	return r.GetMeta(), FromProto(r.GetError())
}

// Metrics returns the node's latest metrics. It never blocks: RaftCore
// publishes them after each batch of work.
func (n *Node) Metrics() *messages.Metrics {
	if m := n.metrics.Load(); m != nil {
		return m
	}
	return &messages.Metrics{ClusterId: n.cfg.ClusterID, GroupId: n.cfg.GroupID, NodeId: n.cfg.NodeID}
}

// WatchMetrics returns a channel that receives the node's metrics when
// they change. A slow reader sees the latest metrics, not every change.
// cancel closes the channel; Stop closes every channel.
func (n *Node) WatchMetrics() (<-chan *messages.Metrics, func()) {
	ch := make(chan *messages.Metrics, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		close(ch)
		return ch, func() {}
	}
	id := n.nextW
	n.nextW++
	n.watchers[id] = ch
	if m := n.metrics.Load(); m != nil {
		ch <- m
	}
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if c, ok := n.watchers[id]; ok {
			delete(n.watchers, id)
			close(c)
		}
	}
}

// StorageStats returns the node's storage counters: its own appends and
// the Append calls (fsyncs) that carried them, shared with other groups'
// appends when the node uses a SharedWriter.
func (n *Node) StorageStats() StorageStats { return n.lane.stats() }

// publish makes m the node's metrics and hands it to the watchers; changed
// says the caller knows it differs from the last one, which spares the
// comparison.
func (n *Node) publish(m *messages.Metrics, changed bool) {
	old := n.metrics.Swap(m)
	if !changed && old != nil && proto.Equal(old, m) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ch := range n.watchers {
		// Replace a value the reader has not taken yet.
		select {
		case <-ch:
		default:
		}
		ch <- m
	}
}

func (n *Node) publishFailure(e *messages.Error) {
	m := proto.Clone(n.Metrics()).(*messages.Metrics)
	m.StorageError = e
	n.publish(m, true)
}

// Stop answers every waiting request (STOPPED, or UNKNOWN_OUTCOME for a
// write that may still commit), stops the node's actors and its storage
// writer (a SharedWriter only finishes the node's queued work and goes on
// for the other groups), and closes the metrics watchers. The actor
// system, the state machine and the store stay open. Stop is idempotent; like every blocking
// method it must not be called from inside an actor's Receive.
func (n *Node) Stop() error {
	n.stopOnce.Do(n.stop)
	return nil
}

func (n *Node) stop() {
	root := n.system.Root
	// 1. RaftCore answers everyone and stops its replication actors.
	n.await(n.corePID, &coreStop{}, 30*time.Second)
	// 2. Every request queued behind that was answered STOPPED.
	n.await(n.corePID, &coreDrain{}, 30*time.Second)
	_ = root.StopFuture(n.corePID).Wait()
	// 3. The apply actor applies what was committed and handed to it, and
	// answers the writes it cannot apply any more.
	n.await(n.applyPID, &applyStop{}, 30*time.Second)
	_ = root.StopFuture(n.applyPID).Wait()
	// The storage actor finishes the queued writes as it stops.
	_ = root.StopFuture(n.storagePID).Wait()

	n.mu.Lock()
	n.stopped = true
	for id, ch := range n.watchers {
		close(ch)
		delete(n.watchers, id)
	}
	n.mu.Unlock()
	if n.pool != nil {
		n.pool.close()
	}
	close(n.done)
	n.closeReplies()
}

// await sends msg to pid and waits for any answer, at most d.
func (n *Node) await(pid *actor.PID, msg any, d time.Duration) {
	rp := n.newReply()
	defer n.putReply(rp)
	n.system.Root.RequestWithCustomSender(pid, msg, rp.pid)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-rp.ch:
	case <-t.C:
		n.log.Warn("raftor: stop step timed out", slog.String("step", fmt.Sprintf("%T", msg)))
	}
}

// call sends req to RaftCore and waits for the response, the context or
// the node's stop. The request carries the time left before the context's
// deadline, so that the node gives up when the caller does.
func (n *Node) call(ctx context.Context, req proto.Message) (proto.Message, error) {
	select {
	case <-n.done:
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Msg: "node stopped"}
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}
	wait := n.cfg.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
		if wait <= 0 {
			return nil, ctxError(context.DeadlineExceeded)
		}
	}
	setTimeout(req, wait)

	rp := n.newReply()
	n.system.Root.RequestWithCustomSender(n.corePID, req, rp.pid)
	if stagesOn {
		stages.mark(0, "client", "request sent to RaftCore")
	}
	// The node answers within the request's timeout; the timer only
	// guards against an answer lost on the way (a forward to a leader
	// that died). A context with a deadline ends the wait sooner, so the
	// timer is needed only without one.
	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		expired = rp.expireAfter(wait + time.Second)
		defer rp.timer.Stop()
	}
	select {
	case m := <-rp.ch:
		if stagesOn {
			stages.mark(0, "client", "answer received")
		}
		n.putReply(rp)
		return n.answer(req, m)
	case <-n.done:
		// Stop answered every request RaftCore held; take that answer if
		// it is here. Otherwise this request arrived as the node stopped
		// and was never handled.
		defer n.putReply(rp)
		select {
		case m := <-rp.ch:
			return n.answer(req, m)
		default:
		}
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Msg: "node stopped"}
	case <-ctx.Done():
		n.putReply(rp)
		return nil, ctxError(ctx.Err())
	case <-expired:
		n.putReply(rp)
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Msg: "no answer"}
	}
}

// answer turns what came back to a call into its result.
func (n *Node) answer(req proto.Message, m any) (proto.Message, error) {
	switch m := m.(type) {
	case *actor.DeadLetterResponse:
		// Either this node's RaftCore is gone (stopped) or the leader a
		// follower forwarded to is.
		n.mu.Lock()
		stopped := n.stopped
		n.mu.Unlock()
		if t := m.GetTarget(); stopped || (t != nil && t.Equal(n.corePID)) {
			return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Msg: "node stopped"}
		}
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER, Msg: "the leader a request was forwarded to is unreachable"}
	case proto.Message:
		if !answers(req, m) {
			return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: fmt.Sprintf("unexpected answer %T", m)}
		}
		return m, nil
	default:
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: fmt.Sprintf("unexpected answer %T", m)}
	}
}

// answers says whether resp is the kind of response req asks for. A type
// switch: this runs on every call, and building a response to compare
// descriptors cost more than the rest of the call.
func answers(req, resp proto.Message) bool {
	switch req.(type) {
	case *messages.ClientWriteRequest:
		_, ok := resp.(*messages.ClientWriteResponse)
		return ok
	case *messages.ReadIndexRequest:
		_, ok := resp.(*messages.ReadIndexResponse)
		return ok
	case *messages.InitializeRequest:
		_, ok := resp.(*messages.InitializeResponse)
		return ok
	case *messages.AddLearnerRequest, *messages.ChangeMembershipRequest, *messages.RemoveLearnerRequest:
		_, ok := resp.(*messages.MembershipChangeResponse)
		return ok
	case *messages.TransferLeaderRequest:
		_, ok := resp.(*messages.TransferLeaderResponse)
		return ok
	case *messages.TriggerSnapshotRequest:
		_, ok := resp.(*messages.TriggerSnapshotResponse)
		return ok
	}
	return true
}

func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Msg: "context deadline exceeded"}
	}
	return err
}

func setTimeout(req proto.Message, d time.Duration) {
	ms := uint64(max(d.Milliseconds(), 1))
	switch r := req.(type) {
	case *messages.ClientWriteRequest:
		r.TimeoutMs = ms
	case *messages.ReadIndexRequest:
		r.TimeoutMs = ms
	case *messages.AddLearnerRequest:
		r.TimeoutMs = ms
	case *messages.ChangeMembershipRequest:
		r.TimeoutMs = ms
	case *messages.RemoveLearnerRequest:
		r.TimeoutMs = ms
	case *messages.TransferLeaderRequest:
		r.TimeoutMs = ms
	}
}

// replyProcess is a PID that hands the message it receives to a Go
// channel: a Go caller waits on it together with its context, with no
// goroutine and no timer of protoactor's futures.
//
// The process stays registered under one ID for as long as it is kept,
// and every call addresses it with a request number of its own (the PID's
// RequestId, which protoactor's remote and Raftor's transports carry with
// the sender). The process takes only a message addressed to the current
// call's number: an answer to an earlier call (a duplicate the transport
// delivered twice, an answer that came after its call gave up) is dropped,
// never taken as the answer to the call that reuses the process. A call
// costs a PID, not a registration: registering and unregistering an ID
// per call was a tenth of the CPU of a busy node.
type replyProcess struct {
	n    *Node
	base *actor.PID // as registered, RequestId 0
	pid  *actor.PID // the current call's address: base with its number
	ch   chan any

	// mu orders delivery against the change of number between calls, so
	// that a message that was checked against the old number cannot land
	// in the channel after the next call drained it.
	mu   sync.Mutex
	call uint32 // the current call's number; 0 between calls
	last uint32 // the last number handed out

	// timer bounds a call without a deadline of its own. It is kept with
	// the process: a timer made per call cost 4% of a busy node's CPU,
	// and since Go 1.23 Stop and Reset leave no stale tick in its channel.
	timer *time.Timer
}

// expireAfter arms the process's timer for the current call.
func (rp *replyProcess) expireAfter(d time.Duration) <-chan time.Time {
	if rp.timer == nil {
		rp.timer = time.NewTimer(d)
	} else {
		rp.timer.Reset(d)
	}
	return rp.timer.C
}

// maxFreeReplies bounds the reply processes a node keeps for reuse: about
// the number of concurrent callers worth serving without an allocation
// each.
const maxFreeReplies = 1024

func (n *Node) newReply() *replyProcess {
	var rp *replyProcess
	n.replyMu.Lock()
	if k := len(n.freeReplies); k > 0 {
		rp = n.freeReplies[k-1]
		n.freeReplies[k-1] = nil
		n.freeReplies = n.freeReplies[:k-1]
	}
	n.replyMu.Unlock()
	if rp == nil {
		rp = &replyProcess{n: n, ch: make(chan any, 1)}
		rp.base, _ = n.system.ProcessRegistry.Add(rp, "raftor-reply-"+n.system.ProcessRegistry.NextId())
	}
	rp.mu.Lock()
	rp.last++
	if rp.last == 0 { // 0 means "no call"
		rp.last = 1
	}
	rp.call = rp.last
	select {
	case <-rp.ch:
	default:
	}
	rp.mu.Unlock()
	rp.pid = &actor.PID{Address: rp.base.Address, Id: rp.base.Id, RequestId: rp.last}
	return rp
}

// putReply ends rp's call and keeps the process for another call. A late
// answer to this call is refused by the process (SendUserMessage), which
// no longer answers to the call's number.
func (n *Node) putReply(rp *replyProcess) {
	rp.mu.Lock()
	rp.call = 0
	rp.mu.Unlock()
	n.replyMu.Lock()
	keep := !n.repliesClosed && len(n.freeReplies) < maxFreeReplies
	if keep {
		n.freeReplies = append(n.freeReplies, rp)
	}
	n.replyMu.Unlock()
	if !keep {
		n.system.ProcessRegistry.Remove(rp.base)
	}
}

// closeReplies stops keeping reply processes and unregisters the kept
// ones; a call still waiting unregisters its own in putReply.
func (n *Node) closeReplies() {
	n.replyMu.Lock()
	kept := n.freeReplies
	n.freeReplies, n.repliesClosed = nil, true
	n.replyMu.Unlock()
	for _, rp := range kept {
		n.system.ProcessRegistry.Remove(rp.base)
	}
}

// SendUserMessage implements actor.Process. The first message addressed to
// the current call waits in the channel for the caller; any later one, and
// anything addressed to an earlier call, is dropped.
func (rp *replyProcess) SendUserMessage(pid *actor.PID, message any) {
	_, msg, _ := actor.UnwrapEnvelope(message)
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.call == 0 || pid.GetRequestId() != rp.call {
		return
	}
	select {
	case rp.ch <- msg:
	default:
	}
}

// SendSystemMessage implements actor.Process.
func (rp *replyProcess) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process.
func (rp *replyProcess) Stop(pid *actor.PID) { rp.n.system.ProcessRegistry.Remove(pid) }

// relayProcess is the sender of a request RaftCore forwards on behalf of a
// waiter: it hands the answer back to RaftCore as a relayed message.
type relayProcess struct {
	system *actor.ActorSystem
	core   *actor.PID
	h      core.Handle
	once   sync.Once
}

func (n *Node) newRelay(corePID *actor.PID, h core.Handle) *actor.PID {
	rp := &relayProcess{system: n.system, core: corePID, h: h}
	pid, _ := n.system.ProcessRegistry.Add(rp, "raftor-relay-"+n.system.ProcessRegistry.NextId())
	return pid
}

// SendUserMessage implements actor.Process.
func (rp *relayProcess) SendUserMessage(pid *actor.PID, message any) {
	rp.once.Do(func() {
		rp.system.ProcessRegistry.Remove(pid)
		_, msg, _ := actor.UnwrapEnvelope(message)
		rp.system.Root.Send(rp.core, &relayed{h: rp.h, msg: msg})
	})
}

// SendSystemMessage implements actor.Process.
func (rp *relayProcess) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process.
func (rp *relayProcess) Stop(pid *actor.PID) { rp.system.ProcessRegistry.Remove(pid) }
