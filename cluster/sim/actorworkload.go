package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/messages"
)

// The actor mode's workload: clients and an administrator whose every
// attempt is an actor of the clients' actor system sending one request with
// ctx.Request.

// attemptActor sends one request to a node with ctx.Request and hands the
// answer to its owner: a fresh PID per attempt, so that a late answer to an
// earlier attempt (which went to a stopped actor) is never mistaken for
// this one's.
type attemptActor struct {
	s      *ActorSim
	target *actor.PID
	req    proto.Message
	answer func(from uint64, msg proto.Message)
}

func (a *attemptActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Request(a.target, a.req)
	case proto.Message:
		// A DeadLetterResponse too: the request reached no RaftCore.
		from := a.s.origin[m]
		delete(a.s.origin, m)
		a.answer(from, m)
		ctx.Stop(ctx.Self())
	}
}

// attempt spawns an attemptActor in the clients' actor system.
func (s *ActorSim) attempt(n *actorNode, req proto.Message, answer func(from uint64, msg proto.Message)) *actor.PID {
	target := n.corePID()
	return s.clientSys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &attemptActor{s: s, target: target, req: req, answer: answer}
	}, actor.WithDispatcher(runDispatcher{s: s})))
}

// actorClient issues one key-value operation at a time to any node.
type actorClient struct {
	id     int
	s      *ActorSim
	rng    *Rand
	leader uint64
	seq    int
	probe  bool
}

type actorOp struct {
	c        *actorClient
	hid      history.OpID
	in       history.Input
	node     uint64
	attempts int
	deadline time.Duration
	done     bool
	pid      *actor.PID
	// seq is the operation's RequestID sequence.
	seq uint64
}

func (c *actorClient) scheduleNext(d time.Duration) {
	c.s.q.After(d, func() {
		if (c.s.stopClients && !c.probe) || c.s.live || c.s.failure != nil {
			return
		}
		c.issue()
	})
}

func (c *actorClient) pickInput() history.Input {
	if c.probe {
		c.seq++
		return history.Put("live", fmt.Sprintf("p%d", c.seq))
	}
	key := fmt.Sprintf("k%d", c.rng.Intn(c.s.cfg.Keys))
	c.seq++
	val := fmt.Sprintf("c%d.%d", c.id, c.seq)
	switch r := c.rng.Intn(100); {
	case r < 40:
		return history.Get(key)
	case r < 70:
		return history.Put(key, val)
	case r < 78:
		return history.Delete(key)
	case r < 89:
		return history.CASAbsent(key, val)
	default:
		other := c.rng.Intn(len(c.s.clients)) + 1
		return history.CAS(key, fmt.Sprintf("c%d.%d", other, c.rng.Between(max(1, c.seq-20), c.seq)), val)
	}
}

func (c *actorClient) issue() {
	in := c.pickInput()
	op := &actorOp{c: c, in: in, deadline: c.s.q.Now() + clientTimeout, seq: uint64(c.seq)}
	op.hid = c.s.hist.Invoke(c.id, in, int64(c.s.q.Now()))
	c.s.stats.Ops++
	c.send(op)
	c.s.q.At(op.deadline, func() { c.timeout(op) })
}

// target is any node, the leader it last heard of half the time: requests
// to followers are forwarded.
func (c *actorClient) target() *actorNode {
	if c.leader != 0 && c.rng.Chance(0.5) {
		return c.s.node(c.leader)
	}
	return c.s.node(uint64(c.rng.Intn(len(c.s.nodes)) + 1))
}

func (c *actorClient) send(op *actorOp) {
	op.attempts++
	n := c.target()
	op.node = n.id
	var req proto.Message
	ms := uint64(actorRequestTimeout / time.Millisecond)
	if op.in.Kind == history.OpGet {
		req = &messages.ReadIndexRequest{WaitApplied: true, TimeoutMs: ms}
	} else {
		// The RequestID (the same for every attempt of the operation)
		// makes the state machine apply it once, however often it reaches
		// the log.
		req = &messages.ClientWriteRequest{Data: kvCommand(toCommand(op.in)), TimeoutMs: ms,
			Request: &messages.RequestID{ClientId: uint64(c.id), Sequence: op.seq}}
	}
	c.s.trace.Add(c.s.q.Now(), n.id, "client %d: %s (attempt %d)", c.id, op.in, op.attempts)
	op.pid = c.s.attempt(n, req, func(from uint64, msg proto.Message) {
		if !op.done {
			c.s.trace.Add(c.s.q.Now(), from, "client %d: %s <- %v", c.id, op.in, describeMsg(msg))
			c.answer(op, from, msg)
		}
	})
}

func (c *actorClient) finish(op *actorOp) {
	op.done = true
	c.scheduleNext(c.rng.Duration(0, 30*time.Millisecond))
}

func (c *actorClient) timeout(op *actorOp) {
	if op.done {
		return
	}
	now := int64(c.s.q.Now())
	if op.in.Kind.IsWrite() {
		c.s.hist.ReturnUnknown(op.hid, now)
		c.s.stats.Unknown++
	} else {
		c.s.hist.Fail(op.hid, now)
	}
	c.s.clientSys.Root.Stop(op.pid)
	c.leader = 0
	c.finish(op)
}

func (c *actorClient) retry(op *actorOp, backoff time.Duration) {
	if op.attempts >= maxAttempts || c.s.q.Now()+backoff >= op.deadline {
		c.s.hist.Fail(op.hid, int64(c.s.q.Now()))
		c.finish(op)
		return
	}
	c.s.q.After(backoff, func() {
		if !op.done {
			c.send(op)
		}
	})
}

func (c *actorClient) answer(op *actorOp, from uint64, msg proto.Message) {
	s := c.s
	now := int64(s.q.Now())
	var e *messages.Error
	switch m := msg.(type) {
	case *actor.DeadLetterResponse:
		// The request reached no RaftCore (a forward to a node that had
		// none there): it certainly did not happen.
		c.leader = 0
		c.retry(op, c.rng.Duration(10*time.Millisecond, 50*time.Millisecond))
		return
	case *messages.ClientWriteResponse:
		e = m.GetError()
		if e == nil {
			var res messages.KVResult
			if err := proto.Unmarshal(m.GetResult(), &res); err != nil || res.Error != "" {
				s.fail(fmt.Errorf("n%d answered %s with an undecodable result %q", from, op.in, res.Error))
				return
			}
			sum, ok := s.checker.SumAt(m.GetIndex(), m.GetTerm())
			if !ok {
				s.fail(violation(PropAckedWriteLost, "n%d acknowledged %s at index %d term %d, an entry no log was seen to hold", from, op.in, m.GetIndex(), m.GetTerm()))
				return
			}
			nodeTerm := m.GetTerm()
			if n := s.node(from); n != nil {
				nodeTerm = max(nodeTerm, n.metrics().GetTerm())
			}
			if err := s.checker.Acked(from, nodeTerm, m.GetIndex(), m.GetTerm(), sum); err != nil {
				s.fail(err)
				return
			}
			out := history.Output{}
			if op.in.Kind == history.OpCAS {
				out.Swapped = res.Ok
			}
			s.hist.Return(op.hid, out, now)
			s.stats.WritesAcked++
			c.leader = from
			s.onAck(c, m.GetIndex())
			c.finish(op)
			return
		}
	case *messages.ReadIndexResponse:
		e = m.GetError()
		if e == nil {
			// The node asked answers once its own state machine applied up
			// to the read index: read that state machine.
			n := s.node(from)
			if n == nil || from != op.node {
				s.fail(fmt.Errorf("a read sent to n%d was answered by n%d", op.node, from))
				return
			}
			if n.sm.kv.appliedIndex < m.GetReadIndex() {
				s.fail(violation("read index", "n%d answered read index %d with applied %d", n.id, m.GetReadIndex(), n.sm.kv.appliedIndex))
				return
			}
			v, found := n.sm.kv.get(op.in.Key)
			s.hist.Return(op.hid, history.Output{Value: v, Found: found}, now)
			s.stats.ReadsOK++
			c.finish(op)
			return
		}
	default:
		s.fail(fmt.Errorf("client got %T for %s", msg, op.in))
		return
	}
	switch e.GetCode() {
	case messages.ErrorCode_ERROR_CODE_NOT_LEADER:
		c.leader = e.GetLeaderId()
		c.retry(op, c.rng.Duration(0, 20*time.Millisecond))
	case messages.ErrorCode_ERROR_CODE_OVERLOADED, messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED, messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_NO_QUORUM:
		c.retry(op, c.rng.Duration(10*time.Millisecond, 100*time.Millisecond))
	case messages.ErrorCode_ERROR_CODE_ABORTED:
		s.hist.Fail(op.hid, now)
		c.finish(op)
	default:
		if op.in.Kind.IsWrite() {
			s.hist.ReturnUnknown(op.hid, now)
			s.stats.Unknown++
		} else {
			s.hist.Fail(op.hid, now)
		}
		c.leader = 0
		c.finish(op)
	}
}

// actorAdmin drives membership changes, leader transfers and snapshots,
// one request at a time, sent to the leader or (forwarded) to any node.
type actorAdmin struct {
	s       *ActorSim
	rng     *Rand
	pending bool
}

func (a *actorAdmin) scheduleNext() {
	a.s.q.After(a.rng.Duration(200*time.Millisecond, 1500*time.Millisecond), func() {
		if a.s.stopClients {
			return
		}
		a.act()
		a.scheduleNext()
	})
}

func (a *actorAdmin) request(target *actorNode, req proto.Message, what string) {
	s := a.s
	s.trace.Add(s.q.Now(), target.id, "admin: %s", what)
	s.attempt(target, req, func(from uint64, msg proto.Message) { a.answer(what, from, msg) })
}

func (a *actorAdmin) act() {
	s := a.s
	if a.pending {
		return
	}
	leader := s.currentLeader()
	if leader == nil {
		return
	}
	conf := leader.membership()
	if conf == nil {
		return
	}
	vs := voters(conf)
	learners := slices.Clone(conf.GetLearners())
	var outside []uint64
	for _, n := range s.nodes {
		if !slices.Contains(vs, n.id) && !slices.Contains(learners, n.id) {
			outside = append(outside, n.id)
		}
	}
	target := leader
	if a.rng.Chance(0.4) {
		target = Pick(a.rng, s.nodes) // forwarded by a follower
	}
	ms := uint64(actorRequestTimeout / time.Millisecond)
	var req proto.Message
	var what string
	switch r := a.rng.Intn(100); {
	case r < 15 && len(outside) > 0 && s.cfg.Membership:
		id := Pick(a.rng, outside)
		req = &messages.AddLearnerRequest{NodeId: id, Address: addr(id), WaitCaughtUp: a.rng.Chance(0.5), TimeoutMs: ms}
		what = fmt.Sprintf("add learner n%d", id)
	case r < 30 && len(learners) > 0 && len(conf.GetVotersOutgoing()) == 0 && s.cfg.Membership:
		id := Pick(a.rng, learners)
		nv := append(slices.Clone(conf.GetVoters()), id)
		if len(conf.GetVoters()) > 1 && a.rng.Chance(0.4) {
			out := Pick(a.rng, conf.GetVoters())
			nv = slices.DeleteFunc(nv, func(x uint64) bool { return x == out })
			what = fmt.Sprintf("replace n%d by n%d", out, id)
		} else {
			what = fmt.Sprintf("promote n%d", id)
		}
		req = &messages.ChangeMembershipRequest{Voters: nv, RetainAsLearners: a.rng.Chance(0.3), TimeoutMs: ms}
	case r < 40 && len(conf.GetVoters()) > 1 && len(conf.GetVotersOutgoing()) == 0 && s.cfg.Membership:
		out := Pick(a.rng, conf.GetVoters())
		nv := slices.DeleteFunc(slices.Clone(conf.GetVoters()), func(x uint64) bool { return x == out })
		req = &messages.ChangeMembershipRequest{Voters: nv, RetainAsLearners: a.rng.Chance(0.5), TimeoutMs: ms}
		what = fmt.Sprintf("remove voter n%d", out)
	case r < 45 && len(learners) > 0 && s.cfg.Membership:
		id := Pick(a.rng, learners)
		req = &messages.RemoveLearnerRequest{NodeId: id, TimeoutMs: ms}
		what = fmt.Sprintf("remove learner n%d", id)
	case r < 65 && len(conf.GetVoters()) > 1:
		id := Pick(a.rng, conf.GetVoters())
		req = &messages.TransferLeaderRequest{Target: id, TimeoutMs: ms}
		what = fmt.Sprintf("transfer leadership n%d -> n%d", leader.id, id)
	case r < 85:
		target = Pick(a.rng, s.nodes)
		req = &messages.TriggerSnapshotRequest{}
		what = "snapshot"
	default:
		return
	}
	if !target.up {
		return
	}
	a.pending = true
	s.stats.AdminRequests++
	a.request(target, req, what)
	s.q.After(5*time.Second, func() { a.pending = false })
}

func (a *actorAdmin) answer(what string, from uint64, msg proto.Message) {
	a.pending = false
	var e *messages.Error
	if m, ok := msg.(interface{ GetError() *messages.Error }); ok {
		e = m.GetError()
	}
	if _, dead := msg.(*actor.DeadLetterResponse); dead {
		a.s.trace.Add(a.s.q.Now(), from, "admin: %s -> dead letter", what)
		return
	}
	if e != nil {
		a.s.trace.Add(a.s.q.Now(), from, "admin: %s -> %s", what, e.GetCode())
		return
	}
	a.s.trace.Add(a.s.q.Now(), from, "admin: %s -> ok", what)
	switch msg.(type) {
	case *messages.MembershipChangeResponse:
		a.s.stats.MembershipChanges++
	case *messages.TransferLeaderResponse:
		a.s.stats.Transfers++
	}
}
