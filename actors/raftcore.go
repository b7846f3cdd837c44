package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
)

// The RaftCore actor runs core.Core: every message goes into the core, and
// what the core asks for (Ready) is carried out by sending messages to the
// storage actor, the replication actors, the apply actor, the peers and
// the clients. It never blocks on I/O or on a future.
//
// Batching: the actor does not carry out Ready after every message. The
// first message that leaves work sends the actor a flush message; when
// that arrives, everything queued before it (client writes above all) has
// been taken in, and one Ready covers it all: the writes go into the core
// with one ProposeBatch, one StorageAppend and one notification per peer.
//
// The actor runs on a priority mailbox (see messages/priority.go): results
// of storage, replication and apply overtake client requests, and ticks
// overtake both.

// coreTick is one tick of the node's clock. gen tells the ticks of the
// current incarnation from those a restarted instance left scheduled.
type coreTick struct{ gen uint64 }

func (*coreTick) GetPriority() int8 { return messages.PriorityTimer }

// coreFlush carries out the core's Ready.
type coreFlush struct{}

// coreStop asks RaftCore to answer everyone and stop its children; the
// reply comes once they are stopped.
type coreStop struct{}

// coreStopped answers coreStop.
type coreStopped struct{}

// coreDrain is queued behind everything else once RaftCore stopped; its
// answer says every request queued before it was answered.
type coreDrain struct{}

func (*coreDrain) GetPriority() int8 { return messages.PriorityLow }

// relayed is the answer to a request RaftCore forwarded on behalf of a
// waiter (a follower's linearizable read).
type relayed struct {
	h   core.Handle
	msg any
}

func (*relayed) GetPriority() int8 { return messages.PriorityResult }

// waiter is whoever waits for the answer to a client request.
type waiter struct {
	sender   *actor.PID
	req      proto.Message
	hops     uint32
	deadline time.Time
	write    bool
	// proposed is set once a write went into the core.
	proposed bool
	// handed is set once the apply actor answers it.
	handed bool
	// relay is the PID of the forwarded read made for this waiter.
	relay *actor.PID
}

// coreShared is the part of RaftCore that outlives a restart of the actor:
// whoever waits must still get an answer from the next incarnation.
type coreShared struct {
	handles     map[core.Handle]*waiter
	next        core.Handle
	writes      int
	incarnation uint64
	// rejected counts wire messages the core refused, by error code name;
	// rejectedCopy is the copy the metrics carry, made again only after
	// rejected changed (published metrics are shared with readers).
	rejected     map[string]uint64
	rejectedCopy map[string]uint64
	// byRequest finds the waiting write that carries a RequestID.
	byRequest map[requestKey]core.Handle
}

// requestKey is a write's RequestID as a map key.
type requestKey struct{ client, seq uint64 }

func keyOf(id *messages.RequestID) requestKey {
	return requestKey{client: id.GetClientId(), seq: id.GetSequence()}
}

type handedWrite struct {
	index uint64
	h     core.Handle
}

type replChild struct {
	term uint64
	pid  *actor.PID
}

type raftCore struct {
	n  *Node
	sh *coreShared

	c      *core.Core
	loaded bool
	failed *messages.Error
	early  []earlyMsg

	proposals   []core.Proposal
	flushQueued bool
	// yielded is set when a flush with writes yielded the processor once
	// before it proposes them (see handle's *coreFlush).
	yielded bool
	// answeredWriters estimates the writers that were answered and have
	// not written again: it grows with every write of this node's callers
	// handed to the apply actor (which answers it) and shrinks by the
	// writes each flush proposes.
	answeredWriters int
	// dirty is set when a message was handled since the last flush, so
	// that the flush publishes the metrics even without a Ready.
	dirty     bool
	tickGen   uint64
	tickSeq   uint64
	stopTimer func()
	// lastTick is the clock time up to which the core has had its ticks.
	lastTick time.Time

	repl map[uint64]replChild
	// senders remembers, per peer and request type, who sent the last
	// request, so that the core's answer goes back to it (a peer's
	// ReplicationStream, or its RaftCore for votes).
	senders map[uint64]map[string]*actor.PID
	handed  []handedWrite
	applied uint64
	// readWaits are forwarded linearizable reads waiting for this node to
	// apply up to their read index.
	readWaits map[core.Handle]uint64

	stopping  bool
	stopReply *actor.PID

	// published is the summary of the metrics last published; a flush
	// publishes only when it changed, and each tick publishes in full (peer
	// progress, pending writes, refusals), so that a write does not pay for
	// building and comparing the whole Metrics message.
	published pubKey
}

// pubKey is what a flush compares to decide whether the node's metrics
// moved: everything a caller waits on (role, term, leader, indexes,
// membership, a storage failure).
type pubKey struct {
	role                                       messages.Role
	term, leader, commit, applied, last, first uint64
	snapshot, membershipIndex, transferring    uint64
	storageFailed                              bool
}

type earlyMsg struct {
	msg    any
	sender *actor.PID
}

const maxEarly = 10000

func newRaftCoreProps(n *Node) *actor.Props {
	sh := &coreShared{handles: map[core.Handle]*waiter{}, byRequest: map[requestKey]core.Handle{}}
	opts := []actor.PropsOption{actor.WithMailbox(actor.UnboundedPriority())}
	if n.cfg.Dispatcher != nil {
		opts = append(opts, actor.WithDispatcher(n.cfg.Dispatcher))
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &raftCore{n: n, sh: sh, repl: map[uint64]replChild{}, senders: map[uint64]map[string]*actor.PID{},
			readWaits: map[core.Handle]uint64{}}
	}, opts...)
}

func (r *raftCore) log() *slog.Logger { return r.n.log }

// coreFailpoint, when set (by tests only, before any node starts), runs
// before RaftCore handles a message; it may panic to show how RaftCore
// recovers.
var coreFailpoint func(node uint64, msg any)

func (r *raftCore) Receive(ctx actor.Context) {
	if coreFailpoint != nil {
		coreFailpoint(r.n.cfg.NodeID, ctx.Message())
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.started(ctx)
		return
	case *actor.Restarting:
		r.cancelTimer()
		return
	case *actor.Stopping:
		r.cancelTimer()
		return
	case *actor.Stopped:
		return
	case *actor.Terminated:
		r.childStopped(ctx, m.GetWho())
		return
	case *messages.StorageLoadResult:
		r.loadedState(ctx, m)
	case *coreStop:
		r.stop(ctx)
		return
	case *coreDrain:
		ctx.Respond(&coreStopped{})
		return
	default:
		if r.stopping {
			r.refuse(ctx, ctx.Message(), ctx.Sender(), newError(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped"))
			return
		}
		if !r.loaded {
			r.beforeLoad(ctx)
			return
		}
		r.handle(ctx, ctx.Message(), ctx.Sender())
		if _, ok := ctx.Message().(*coreFlush); !ok {
			r.dirty = true
		}
	}
	r.queueFlush(ctx)
}

// started loads the node's state from storage. The load goes through the
// storage writer's queue, behind every append a previous incarnation
// asked for, so that their results arrive (and are dropped) before it.
func (r *raftCore) started(ctx actor.Context) {
	r.sh.incarnation++
	if r.sh.incarnation > 1 {
		// A panic restarted us: the waiters' requests died with the old
		// core. Writes may or may not commit; the rest can be retried.
		r.log().Warn("raftcore restarted; reloading state from storage")
		for _, h := range sortedKeys(r.sh.handles) {
			w := r.sh.handles[h]
			code := messages.ErrorCode_ERROR_CODE_NOT_LEADER
			if w.write && w.proposed || isChange(w.req) {
				code = messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME
			}
			if !w.handed { // the apply actor answers a handed one
				r.replyTo(ctx, w, responseFor(w.req, newError(code, "node restarted")))
			}
			r.drop(h)
		}
	}
	ctx.Send(r.n.storagePID, &storageLoad{replyTo: ctx.Self()})
}

func (r *raftCore) loadedState(ctx actor.Context, m *messages.StorageLoadResult) {
	if r.loaded {
		return
	}
	r.loaded = true
	if e := m.GetError(); e != nil {
		r.fail(ctx, e)
		return
	}
	c, err := core.New(r.n.coreConfig(), m.GetState())
	if err != nil {
		r.fail(ctx, newError(messages.ErrorCode_ERROR_CODE_CORRUPT, "cannot start from stored state: %v", err))
		return
	}
	r.c = c
	st := m.GetState()
	ctx.Send(r.n.applyPID, &applyInit{snapshot: st.GetSnapshot(), memberships: st.GetMemberships()})
	r.scheduleTick(ctx)
	early := r.early
	r.early = nil
	for _, e := range early {
		r.handle(ctx, e.msg, e.sender)
	}
	r.publish()
}

// fail puts the node in a state where it answers every request with err:
// its storage cannot give it a consistent state to start from.
func (r *raftCore) fail(ctx actor.Context, e *messages.Error) {
	r.failed = e
	r.log().Error("raftcore cannot start", slog.String("err", e.GetMessage()))
	for _, em := range r.early {
		r.refuse(ctx, em.msg, em.sender, e)
	}
	r.early = nil
	r.n.publishFailure(e)
}

func (r *raftCore) beforeLoad(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *coreTick, *messages.StorageAppendResult, *messages.ApplyResult, *messages.ReplicationReport,
		*messages.SnapshotBuilt, *messages.SnapshotRestored, *messages.StoragePurgeResult,
		*messages.StorageSnapshotChunkWritten, *coreFlush, *actor.DeadLetterResponse:
		// Results meant for a previous incarnation.
		return
	}
	if len(r.early) >= maxEarly {
		r.refuse(ctx, ctx.Message(), ctx.Sender(), newError(messages.ErrorCode_ERROR_CODE_OVERLOADED, "node is starting"))
		return
	}
	r.early = append(r.early, earlyMsg{msg: ctx.Message(), sender: ctx.Sender()})
}

func (r *raftCore) handle(ctx actor.Context, msg any, sender *actor.PID) {
	if r.failed != nil {
		r.refuse(ctx, msg, sender, r.failed)
		return
	}
	var err error
	switch m := msg.(type) {
	case *coreTick:
		if m.gen != r.tickGen {
			return
		}
		r.scheduleTick(ctx)
		r.catchUpTicks()
		var buf [8]uint64
		for _, peer := range r.replPeers(buf[:0]) {
			ctx.Send(r.repl[peer].pid, &replTick{})
		}
		r.expire(ctx)
		r.publishAll()
	case *coreFlush:
		r.flushQueued = false
		if len(r.proposals) > 0 && len(r.proposals) < r.answeredWriters && !r.yielded {
			// Give the writers that are ready to run their turn before
			// the writes queued so far go into the log. A leader answers
			// writes in batches (every write a commit carried), and each
			// answered writer sends its next write as soon as it runs;
			// but RaftCore's worker is usually the goroutine that runs
			// next on its processor, so the first write that arrived was
			// flushed alone, then the next, while the other writers
			// waited for the processor: 1.6 writes per flush under 256
			// clients in examples/bench, each flush a storage append and
			// a replication round of its own. After one yield the flush
			// queued behind their writes takes them all. Under a
			// simulator's dispatcher, where nothing else runs, the yield
			// returns at once and only the flush message is repeated.
			// Only answered writers can be about to write: a lone writer,
			// or writers whose writes all arrived, do not wait for the
			// yield.
			r.yielded = true
			runtime.Gosched()
			r.queueFlush(ctx)
			return
		}
		r.yielded = false
		r.answeredWriters = max(0, r.answeredWriters-len(r.proposals))
		r.flush(ctx)
	case *relayed:
		r.relayed(ctx, m)

	// Client requests.
	case *messages.ClientWriteRequest:
		if stagesOn {
			stages.mark(0, stageWho(r.n.corePID.GetId()), "took the write")
		}
		r.write(ctx, m, sender, 0)
	case *messages.ReadIndexRequest, *messages.InitializeRequest, *messages.AddLearnerRequest,
		*messages.ChangeMembershipRequest, *messages.RemoveLearnerRequest, *messages.TransferLeaderRequest,
		*messages.TriggerSnapshotRequest:
		r.request(ctx, m.(proto.Message), sender, 0)
	case *messages.ForwardedRequest:
		r.forwarded(ctx, m, sender)
	case *messages.IsLeaderRequest:
		s := r.c.Status()
		r.reply(ctx, sender, &messages.IsLeaderResponse{IsLeader: s.Role == messages.Role_ROLE_LEADER,
			LeaderId: s.Leader, LeaderAddress: s.Membership.GetAddresses()[s.Leader], Term: s.Term})
	case *messages.MetricsRequest:
		r.reply(ctx, sender, &messages.MetricsResponse{Metrics: r.metrics()})

	// Wire requests from peers: the core's answer goes back to the sender.
	case *messages.VoteRequest:
		r.remember(m.GetHeader().GetFrom(), "vote", sender)
		err = r.c.Step(m)
	case *messages.AppendEntriesRequest:
		if stagesOn && len(m.GetEntries()) > 0 {
			stages.mark(lastIndex(m.GetEntries()), stageWho(r.n.corePID.GetId()), "took append_entries")
		}
		r.remember(m.GetHeader().GetFrom(), "append", sender)
		err = r.c.Step(m)
	case *messages.InstallSnapshotRequest:
		r.remember(m.GetHeader().GetFrom(), "snapshot", sender)
		err = r.c.Step(m)
	case *messages.TimeoutNowRequest, *messages.VoteResponse, *messages.WireReject,
		*messages.AppendEntriesResponse, *messages.InstallSnapshotResponse:
		err = r.c.Step(m.(proto.Message))

	// Results of the node's own actors.
	case *messages.ReplicationReport:
		if stagesOn {
			stages.mark(m.GetMatchIndex(), stageWho(r.n.corePID.GetId()), fmt.Sprintf("took the report of peer %d", m.GetPeer()))
		}
		if ch, ok := r.repl[m.GetPeer()]; !ok || ch.term != m.GetTerm() {
			return // a report of a stopped ReplicationState
		}
		err = r.c.Step(m)
	case *messages.ApplyResult:
		err = r.c.Step(m)
		if m.GetError() != nil {
			// The apply actor answered its own waiters before it reported.
			for _, hw := range r.handed {
				r.drop(hw.h)
			}
			r.handed = nil
			r.storageFailed(ctx, m.GetError())
		}
		r.applyProgress(ctx, m.GetAppliedIndex())
	case *messages.StorageAppendResult:
		if stagesOn {
			stages.mark(m.GetLastIndex(), stageWho(r.n.corePID.GetId()), "took its append's result")
		}
		err = r.c.Step(m)
		if m.GetError() != nil {
			r.storageFailed(ctx, m.GetError())
		}
	case *applyRestarted:
		r.applyRestarted(ctx)
	case *messages.SnapshotBuilt, *messages.SnapshotRestored,
		*messages.StoragePurgeResult, *messages.StorageSnapshotChunkWritten:
		err = r.c.Step(m.(proto.Message))
	case *actor.DeadLetterResponse:
		// A peer's RaftCore is not there; Raft retries on its own.
		return
	default:
		r.log().Debug("raftcore: unexpected message dropped", slog.String("type", typeName(msg)))
		return
	}
	if err != nil {
		var se *core.StepError
		if isWire(msg) && errors.As(err, &se) {
			if r.sh.rejected == nil {
				r.sh.rejected = map[string]uint64{}
			}
			r.sh.rejected[se.Code.String()]++
			r.sh.rejectedCopy = nil
		}
		r.log().Debug("raftcore: message refused", slog.String("type", typeName(msg)), slog.Any("err", err))
	}
}

func (r *raftCore) remember(from uint64, kind string, sender *actor.PID) {
	if sender == nil || from == 0 {
		return
	}
	m := r.senders[from]
	if m == nil {
		m = map[string]*actor.PID{}
		r.senders[from] = m
	}
	m[kind] = sender
}

// ---- client requests ----

func (r *raftCore) newWaiter(sender *actor.PID, req proto.Message, hops uint32, timeoutMs uint64) core.Handle {
	r.sh.next++
	h := r.sh.next
	d := r.n.cfg.RequestTimeout
	if timeoutMs > 0 {
		d = time.Duration(timeoutMs) * time.Millisecond
	}
	r.sh.handles[h] = &waiter{sender: sender, req: req, hops: hops, deadline: r.n.cfg.Clock.Now().Add(d)}
	return h
}

func (r *raftCore) drop(h core.Handle) {
	if w, ok := r.sh.handles[h]; ok {
		if w.write {
			r.sh.writes--
			if id := w.req.(*messages.ClientWriteRequest).GetRequest(); id != nil && r.sh.byRequest[keyOf(id)] == h {
				delete(r.sh.byRequest, keyOf(id))
			}
		}
		if w.relay != nil {
			r.n.system.ProcessRegistry.Remove(w.relay)
		}
		delete(r.sh.handles, h)
		delete(r.readWaits, h)
	}
}

func (r *raftCore) write(ctx actor.Context, m *messages.ClientWriteRequest, sender *actor.PID, hops uint32) {
	id := m.GetRequest()
	if id != nil && sender != nil {
		if w := r.sh.handles[r.sh.byRequest[keyOf(id)]]; w != nil && w.sender != nil && w.sender.Equal(sender) {
			// The same request from the same sender while its first copy
			// waits: a transport delivered it twice. Its answer is the
			// first copy's. Answering this copy on its own (refused, say,
			// as a transfer began) could reach the sender first and tell
			// it that a write failed which the first copy made.
			r.log().Debug("raftcore: duplicate write dropped", slog.Uint64("client", id.GetClientId()),
				slog.Uint64("sequence", id.GetSequence()))
			return
		}
	}
	if r.sh.writes >= r.n.cfg.MaxPendingWrites {
		r.reply(ctx, sender, &messages.ClientWriteResponse{Request: m.GetRequest(), Error: newError(messages.ErrorCode_ERROR_CODE_OVERLOADED,
			"%d writes in flight (MaxPendingWrites); retry later", r.sh.writes)})
		return
	}
	h := r.newWaiter(sender, m, hops, m.GetTimeoutMs())
	r.sh.handles[h].write = true
	r.sh.writes++
	if id != nil {
		r.sh.byRequest[keyOf(id)] = h
	}
	// Writes wait in r.proposals until the flush, so that all writes queued
	// in the mailbox go into the core as one batch.
	r.proposals = append(r.proposals, core.Proposal{Handle: h, Request: m})
}

func (r *raftCore) request(ctx actor.Context, m proto.Message, sender *actor.PID, hops uint32) {
	if _, ok := m.(*messages.ReadIndexRequest); ok && r.n.cfg.LeaseRead {
		// A lease is time: count the ticks a pause swallowed before
		// answering from it.
		r.catchUpTicks()
	}
	h := r.newWaiter(sender, m, hops, timeoutOf(m))
	if err := r.c.Request(h, m); err != nil {
		r.answer(ctx, h, responseFor(m, newError(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)))
	}
}

func (r *raftCore) forwarded(ctx actor.Context, f *messages.ForwardedRequest, sender *actor.PID) {
	switch q := f.Unwrap().(type) {
	case nil:
		r.reply(ctx, sender, &messages.ClientWriteResponse{Error: newError(messages.ErrorCode_ERROR_CODE_INVALID, "forwarded request without a request")})
	case *messages.ClientWriteRequest:
		r.write(ctx, q, sender, f.GetHops())
	default:
		r.request(ctx, q, sender, f.GetHops())
	}
}

// answer delivers the core's response to h. A NOT_LEADER answer to a
// request that may be forwarded goes to the leader instead, which answers
// the caller directly.
func (r *raftCore) answer(ctx actor.Context, h core.Handle, msg proto.Message) {
	w, ok := r.sh.handles[h]
	if !ok {
		return // timed out, or answered by a previous incarnation
	}
	if e := errorOf(msg); e.GetCode() == messages.ErrorCode_ERROR_CODE_NOT_LEADER && !r.stopping && r.forward(ctx, h, w, e) {
		return
	}
	r.drop(h)
	r.replyTo(ctx, w, msg)
}

func (r *raftCore) forward(ctx actor.Context, h core.Handle, w *waiter, e *messages.Error) bool {
	leader := e.GetLeaderId()
	if leader == 0 || leader == r.n.cfg.NodeID || noForward(w.req) || int(w.hops) >= r.n.cfg.MaxForwardHops || w.sender == nil {
		return false
	}
	pid := r.n.peers.PeerPID(leader, e.GetLeaderAddress())
	if q, ok := w.req.(*messages.ReadIndexRequest); ok && q.GetWaitApplied() {
		// The read must wait for this node's own state machine: ask the
		// leader for the read index and wait here.
		read := proto.Clone(q).(*messages.ReadIndexRequest)
		read.WaitApplied = false
		fwd, _ := messages.Forward(r.n.cfg.NodeID, w.hops+1, read)
		w.relay = r.n.newRelay(ctx.Self(), h)
		ctx.RequestWithCustomSender(pid, fwd, w.relay)
		return true
	}
	fwd, ok := messages.Forward(r.n.cfg.NodeID, w.hops+1, w.req)
	if !ok {
		return false
	}
	r.drop(h)
	ctx.RequestWithCustomSender(pid, fwd, w.sender)
	return true
}

// relayed takes the leader's answer to a read forwarded for a local
// linearizable read: the caller is answered once this node applied up to
// the read index.
func (r *raftCore) relayed(ctx actor.Context, m *relayed) {
	w, ok := r.sh.handles[m.h]
	if !ok {
		return
	}
	w.relay = nil
	resp, ok := m.msg.(*messages.ReadIndexResponse)
	if !ok {
		r.drop(m.h)
		r.replyTo(ctx, w, &messages.ReadIndexResponse{Error: newError(messages.ErrorCode_ERROR_CODE_NOT_LEADER, "leader unreachable")})
		return
	}
	if resp.GetError() != nil || r.applied >= resp.GetReadIndex() {
		r.drop(m.h)
		r.replyTo(ctx, w, resp)
		return
	}
	r.readWaits[m.h] = resp.GetReadIndex()
}

func (r *raftCore) applyProgress(ctx actor.Context, applied uint64) {
	if applied <= r.applied {
		return
	}
	r.applied = applied
	k := 0
	for k < len(r.handed) && r.handed[k].index <= applied {
		r.drop(r.handed[k].h)
		k++
	}
	r.handed = r.handed[k:]
	for _, h := range sortedKeys(r.readWaits) {
		idx := r.readWaits[h]
		if idx > applied {
			continue
		}
		delete(r.readWaits, h)
		if w := r.sh.handles[h]; w != nil {
			r.drop(h)
			r.replyTo(ctx, w, &messages.ReadIndexResponse{ReadIndex: idx})
		}
	}
}

// applyRestarted recovers from a restart of the apply actor (its state
// machine panicked): the writes it was to answer are answered here, as
// their results are lost, and it is told again how far to apply.
func (r *raftCore) applyRestarted(ctx actor.Context) {
	r.log().Warn("apply actor restarted")
	for _, hw := range r.handed {
		if w := r.sh.handles[hw.h]; w != nil {
			r.drop(hw.h)
			r.replyTo(ctx, w, &messages.ClientWriteResponse{Index: hw.index, Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME,
				"the state machine failed while applying; the write may have been applied")})
		}
	}
	r.handed = nil
	s := r.c.Status()
	ctx.Send(r.n.applyPID, &applyCommitted{msg: &messages.ApplyCommitted{Term: s.Term, CommitIndex: min(s.Commit, s.Durable)}})
}

// storageFailed answers the writes that wait for a commit this node will
// never see: its disk failed, so it takes no further part. Their entries
// may have reached other nodes and commit there, so the outcome is
// unknown, not failed.
func (r *raftCore) storageFailed(ctx actor.Context, e *messages.Error) {
	for _, h := range sortedKeys(r.sh.handles) {
		w := r.sh.handles[h]
		if w.write && w.proposed && !w.handed {
			r.drop(h)
			r.replyTo(ctx, w, &messages.ClientWriteResponse{Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME,
				"storage failed before the write was known to commit: %s", e.GetMessage())})
		}
	}
}

// expire answers the requests whose deadline passed. A write handed to the
// apply actor is committed and is answered by it.
func (r *raftCore) expire(ctx actor.Context) {
	now := r.n.cfg.Clock.Now()
	for _, h := range sortedKeys(r.sh.handles) {
		w := r.sh.handles[h]
		if w.handed || now.Before(w.deadline) {
			continue
		}
		if !w.proposed && w.write {
			r.removeProposal(h)
		}
		r.drop(h)
		r.replyTo(ctx, w, responseFor(w.req, newError(messages.ErrorCode_ERROR_CODE_TIMEOUT, "no answer within the request's timeout")))
	}
}

func (r *raftCore) removeProposal(h core.Handle) {
	for i, p := range r.proposals {
		if p.Handle == h {
			r.proposals = append(r.proposals[:i], r.proposals[i+1:]...)
			return
		}
	}
}

// ---- Ready ----

func (r *raftCore) queueFlush(ctx actor.Context) {
	if r.flushQueued || r.c == nil || r.stopping {
		return
	}
	if len(r.proposals) == 0 && !r.c.HasReady() && !r.dirty {
		return
	}
	r.flushQueued = true
	ctx.Send(ctx.Self(), &coreFlush{})
}

func (r *raftCore) flush(ctx actor.Context) {
	if len(r.proposals) > 0 {
		for _, p := range r.proposals {
			if w := r.sh.handles[p.Handle]; w != nil {
				w.proposed = true
			}
		}
		r.c.ProposeBatch(r.proposals)
		r.proposals = nil
	}
	r.dirty = false
	if !r.c.HasReady() {
		// Nothing to carry out, but the state may have moved (an applied
		// index, a peer's progress): publish it.
		r.publish()
		return
	}
	rd := r.c.Ready()
	// Publish before handing anything on: a write's answer comes from the
	// apply actor, and a caller who reads the metrics after it must see
	// the commit that answered it.
	r.publish()
	for _, p := range rd.Persist {
		if stagesOn && len(p.GetEntries()) > 0 {
			stages.mark(lastIndex(p.GetEntries()), stageWho(r.n.corePID.GetId()), "asked storage to append")
		}
		ctx.Request(r.n.storagePID, p)
	}
	for _, m := range rd.Storage {
		ctx.Request(r.n.storagePID, m)
	}
	r.send(ctx, rd.Send)
	for _, m := range rd.Replicate {
		if n, ok := m.(*messages.ReplicationNotify); stagesOn && ok && len(n.GetEntries()) > 0 {
			stages.mark(lastIndex(n.GetEntries()), stageWho(r.n.corePID.GetId()), "handed the entries to replication")
		}
		r.replicate(ctx, m)
	}
	for _, m := range rd.Apply {
		r.apply(ctx, m)
	}
	for _, resp := range rd.Responses {
		r.answer(ctx, resp.Handle, resp.Msg)
	}
}

func (r *raftCore) send(ctx actor.Context, msgs []proto.Message) {
	if len(msgs) == 0 {
		return
	}
	addrs := r.c.Status().Membership.GetAddresses()
	for _, m := range msgs {
		h := headerOf(m)
		to := h.GetTo()
		if to == 0 {
			continue
		}
		var kind string
		switch m := m.(type) {
		case *messages.VoteResponse:
			kind = "vote"
		case *messages.AppendEntriesResponse:
			kind = "append"
		case *messages.InstallSnapshotResponse:
			kind = "snapshot"
		case *messages.WireReject:
			switch m.GetMessageType() {
			case "raftor.v1.AppendEntriesRequest":
				kind = "append"
			case "raftor.v1.InstallSnapshotRequest":
				kind = "snapshot"
			default:
				kind = "vote"
			}
		}
		if kind != "" {
			// An answer goes to whoever asked.
			if pid := r.senders[to][kind]; pid != nil {
				if a, ok := m.(*messages.AppendEntriesResponse); stagesOn && ok {
					stages.mark(a.GetMatchIndex(), stageWho(r.n.corePID.GetId()), "answered append_entries")
				}
				ctx.Send(pid, m)
			}
			continue
		}
		ctx.Request(r.n.peers.PeerPID(to, addrs[to]), m)
	}
}

func (r *raftCore) replicate(ctx actor.Context, m proto.Message) {
	switch m := m.(type) {
	case *messages.ReplicationStart:
		r.log().Debug("raftcore: replication start", slog.Uint64("peer", m.GetPeer()), slog.Uint64("term", m.GetTerm()),
			slog.Uint64("next", m.GetNextIndex()))
		if old, ok := r.repl[m.GetPeer()]; ok {
			ctx.Stop(old.pid)
		}
		pid := ctx.Spawn(newReplStateProps(r.n.replEnv, m, r.n.peers.PeerPID(m.GetPeer(), m.GetAddress())))
		r.repl[m.GetPeer()] = replChild{term: m.GetTerm(), pid: pid}
	case *messages.ReplicationStop:
		r.log().Debug("raftcore: replication stop", slog.Uint64("peer", m.GetPeer()), slog.Uint64("term", m.GetTerm()))
		for _, peer := range sortedKeys(r.repl) {
			ch := r.repl[peer]
			if ch.term == m.GetTerm() && (m.GetPeer() == 0 || m.GetPeer() == peer) {
				ctx.Stop(ch.pid)
				delete(r.repl, peer)
			}
		}
	case *messages.ReplicationNotify:
		var buf [8]uint64
		for _, peer := range r.replPeers(buf[:0]) {
			if ch := r.repl[peer]; ch.term == m.GetTerm() {
				ctx.Send(ch.pid, m)
			}
		}
	}
}

// replPeers returns the peers that have replication actors, in order (so
// that a deterministic dispatcher sees the same sends every run), in buf's
// storage: a flush sends to them for every batch of writes, and a small
// cluster's peers fit in a caller's array without an allocation.
func (r *raftCore) replPeers(buf []uint64) []uint64 {
	for peer := range r.repl {
		buf = append(buf, peer)
	}
	slices.Sort(buf)
	return buf
}

func (r *raftCore) apply(ctx actor.Context, m proto.Message) {
	ac, ok := m.(*messages.ApplyCommitted)
	if !ok {
		ctx.Send(r.n.applyPID, m)
		return
	}
	targets := make(map[uint64]applyTarget, len(ac.GetWaiters()))
	for _, aw := range ac.GetWaiters() {
		h := core.Handle(aw.GetHandle())
		w := r.sh.handles[h]
		if w == nil || w.sender == nil {
			continue
		}
		w.handed = true
		req, _ := w.req.(*messages.ClientWriteRequest)
		targets[aw.GetHandle()] = applyTarget{pid: w.sender, request: req.GetRequest()}
		r.handed = append(r.handed, handedWrite{index: aw.GetIndex(), h: h})
		r.answeredWriters++
	}
	if stagesOn {
		stages.mark(ac.GetCommitIndex(), stageWho(r.n.corePID.GetId()), "handed the commit to the apply actor")
	}
	ctx.Send(r.n.applyPID, &applyCommitted{msg: ac, waiters: targets})
}

func (r *raftCore) metrics() *messages.Metrics {
	m := r.c.Metrics()
	m.PendingWrites = uint64(r.sh.writes)
	if len(r.sh.rejected) > 0 {
		if r.sh.rejectedCopy == nil {
			r.sh.rejectedCopy = maps.Clone(r.sh.rejected)
		}
		m.RejectedMessages = r.sh.rejectedCopy
	}
	if m.StorageError == nil && r.n.writer.isFailed.Load() {
		m.StorageError = newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "storage failed")
	}
	if m.LeaderId == r.n.cfg.NodeID && m.LeaderAddress == "" {
		m.LeaderAddress = r.n.cfg.Address
	}
	return m
}

// publish publishes the metrics if what callers wait on moved since the
// last time.
func (r *raftCore) publish() {
	if r.c == nil {
		return
	}
	st := r.c.Status()
	k := pubKey{role: st.Role, term: st.Term, leader: st.Leader, commit: st.Commit, applied: st.Applied,
		last: st.LastIndex, first: st.FirstIndex, snapshot: st.SnapshotIndex, membershipIndex: st.MembershipIndex,
		transferring: st.Transferring, storageFailed: r.n.writer.isFailed.Load()}
	if k == r.published {
		return
	}
	r.published = k
	r.n.publish(r.metrics(), true)
}

// publishAll publishes the whole metrics, peers included, once per tick;
// watchers hear of it only if something changed.
func (r *raftCore) publishAll() {
	if r.c == nil {
		return
	}
	r.publish()
	r.n.publish(r.metrics(), false)
}

// ---- timers ----

// catchUpTicks gives the core one tick for every TickInterval of the
// node's clock since the last tick it had. The tick timer is armed again
// only when a tick is handled, so a node that was stopped for a while (a
// paused process, a long collection, a starved machine) gets one late
// timer for a pause of any length; counting the intervals keeps its
// timing honest, and above all a leader back from a pause longer than its
// lease no longer answers a read from it (actor simulator seed 10655). A
// very long pause counts as enough ticks to end every timeout.
func (r *raftCore) catchUpTicks() {
	now := r.n.cfg.Clock.Now()
	iv := r.n.cfg.TickInterval
	n := int(now.Sub(r.lastTick) / iv)
	if n <= 0 {
		return
	}
	if limit := 2*r.n.cfg.ElectionTicks + 2; n > limit {
		n, r.lastTick = limit, now
	} else {
		r.lastTick = r.lastTick.Add(time.Duration(n) * iv)
	}
	for range n {
		r.c.Tick()
	}
}

func (r *raftCore) scheduleTick(ctx actor.Context) {
	if r.lastTick.IsZero() {
		r.lastTick = r.n.cfg.Clock.Now()
	}
	r.cancelTimer()
	r.tickSeq++
	gen := r.sh.incarnation<<32 | r.tickSeq
	r.tickGen = gen
	self, root := ctx.Self(), r.n.system.Root
	r.stopTimer = r.n.cfg.Clock.AfterFunc(r.n.cfg.TickInterval, func() { root.Send(self, &coreTick{gen: gen}) })
}

func (r *raftCore) cancelTimer() {
	if r.stopTimer != nil {
		r.stopTimer()
		r.stopTimer = nil
	}
}

// ---- stop ----

func (r *raftCore) stop(ctx actor.Context) {
	r.stopping = true
	r.stopReply = ctx.Sender()
	r.cancelTimer()
	if r.c != nil {
		for _, resp := range r.c.Stop() {
			r.answer(ctx, resp.Handle, resp.Msg)
		}
	}
	for _, em := range r.early {
		r.refuse(ctx, em.msg, em.sender, newError(messages.ErrorCode_ERROR_CODE_STOPPED, "node stopped"))
	}
	r.early = nil
	for h, w := range r.sh.handles {
		if w.handed {
			continue // the apply actor answers it (Node.Stop makes sure)
		}
		code := messages.ErrorCode_ERROR_CODE_STOPPED
		if w.write && w.proposed || isChange(w.req) {
			code = messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME
		}
		r.drop(h)
		r.replyTo(ctx, w, responseFor(w.req, newError(code, "node stopped")))
	}
	r.proposals = nil
	for peer, ch := range r.repl {
		ctx.Stop(ch.pid)
		delete(r.repl, peer)
	}
	r.maybeStopped(ctx)
	r.publish()
}

func (r *raftCore) childStopped(ctx actor.Context, who *actor.PID) {
	for peer, ch := range r.repl {
		if ch.pid.Equal(who) {
			delete(r.repl, peer)
		}
	}
	r.maybeStopped(ctx)
}

func (r *raftCore) maybeStopped(ctx actor.Context) {
	if r.stopping && r.stopReply != nil && len(ctx.Children()) == 0 {
		ctx.Send(r.stopReply, &coreStopped{})
		r.stopReply = nil
	}
}

// ---- responses and message fields ----

// replyTo answers waiter w; a write's answer echoes its RequestID.
func (r *raftCore) replyTo(ctx actor.Context, w *waiter, msg proto.Message) {
	if resp, ok := msg.(*messages.ClientWriteResponse); ok && resp.Request == nil {
		if req, ok := w.req.(*messages.ClientWriteRequest); ok && req.GetRequest() != nil {
			resp = proto.Clone(resp).(*messages.ClientWriteResponse)
			resp.Request = req.GetRequest()
			msg = resp
		}
	}
	r.reply(ctx, w.sender, msg)
}

func (r *raftCore) reply(ctx actor.Context, to *actor.PID, msg proto.Message) {
	if to == nil {
		return
	}
	ctx.Send(to, msg)
}

// refuse answers a request with err; other messages are dropped.
func (r *raftCore) refuse(ctx actor.Context, msg any, sender *actor.PID, e *messages.Error) {
	switch m := msg.(type) {
	case *messages.ForwardedRequest:
		if q := m.Unwrap(); q != nil {
			msg = q
		}
	case *messages.IsLeaderRequest:
		r.reply(ctx, sender, &messages.IsLeaderResponse{})
		return
	case *messages.MetricsRequest:
		r.reply(ctx, sender, &messages.MetricsResponse{Metrics: r.n.Metrics()})
		return
	}
	if pm, ok := msg.(proto.Message); ok {
		if resp := responseFor(pm, e); resp != nil {
			r.replyTo(ctx, &waiter{sender: sender, req: pm}, resp)
		}
	}
}

// responseFor builds the response type of req carrying e; nil for a
// message that is not a client request.
func responseFor(req proto.Message, e *messages.Error) proto.Message {
	switch req.(type) {
	case *messages.ClientWriteRequest:
		return &messages.ClientWriteResponse{Error: e}
	case *messages.ReadIndexRequest:
		return &messages.ReadIndexResponse{Error: e}
	case *messages.InitializeRequest:
		return &messages.InitializeResponse{Error: e}
	case *messages.AddLearnerRequest, *messages.ChangeMembershipRequest, *messages.RemoveLearnerRequest:
		return &messages.MembershipChangeResponse{Error: e}
	case *messages.TransferLeaderRequest:
		return &messages.TransferLeaderResponse{Error: e}
	case *messages.TriggerSnapshotRequest:
		return &messages.TriggerSnapshotResponse{Error: e}
	}
	return nil
}

type withError interface{ GetError() *messages.Error }

func errorOf(m proto.Message) *messages.Error {
	if e, ok := m.(withError); ok {
		return e.GetError()
	}
	return nil
}

func headerOf(m proto.Message) *messages.Header {
	if h, ok := m.(interface{ GetHeader() *messages.Header }); ok {
		return h.GetHeader()
	}
	return nil
}

func noForward(m proto.Message) bool {
	if n, ok := m.(interface{ GetNoForward() bool }); ok {
		return n.GetNoForward()
	}
	return true
}

func timeoutOf(m proto.Message) uint64 {
	if t, ok := m.(interface{ GetTimeoutMs() uint64 }); ok {
		return t.GetTimeoutMs()
	}
	return 0
}

func isChange(m proto.Message) bool {
	switch m.(type) {
	case *messages.AddLearnerRequest, *messages.ChangeMembershipRequest, *messages.RemoveLearnerRequest:
		return true
	}
	return false
}

func typeName(m any) string {
	if pm, ok := m.(proto.Message); ok {
		return string(pm.ProtoReflect().Descriptor().FullName())
	}
	return "go:" + slog.AnyValue(m).Kind().String()
}

// isWire reports whether msg is a message another node sends.
func isWire(msg any) bool {
	switch msg.(type) {
	case *messages.VoteRequest, *messages.VoteResponse, *messages.AppendEntriesRequest,
		*messages.AppendEntriesResponse, *messages.InstallSnapshotRequest, *messages.InstallSnapshotResponse,
		*messages.TimeoutNowRequest, *messages.WireReject:
		return true
	}
	return false
}
