package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// client issues one key-value operation at a time, as an application actor
// on some node would, and records it in the history.
type client struct {
	id     int
	s      *Sim
	rng    *Rand
	leader uint64 // the node it believes leads
	seq    int
	op     *clientOp
	// probe marks the liveness client of the calm period.
	probe bool
}

// clientOp is one logical operation: it may be sent several times while
// the answers say it certainly did not happen (NOT_LEADER, OVERLOADED...),
// and ends with a result, an unknown outcome, or a certain failure.
type clientOp struct {
	c        *client
	hid      history.OpID
	in       history.Input
	node     uint64
	inc      uint64
	handle   core.Handle
	attempts int
	deadline time.Duration
	done     bool
}

const (
	clientTimeout = 3 * time.Second
	maxAttempts   = 8
)

func (c *client) scheduleNext(d time.Duration) {
	c.s.q.After(d, func() {
		if c.s.stopClients && !c.probe {
			return
		}
		c.issue()
	})
}

func (c *client) pickInput() history.Input {
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
		// Expect a value this or another client may have written.
		other := c.rng.Intn(len(c.s.clients)) + 1
		return history.CAS(key, fmt.Sprintf("c%d.%d", other, c.rng.Between(max(1, c.seq-20), c.seq)), val)
	}
}

func (c *client) issue() {
	in := c.pickInput()
	op := &clientOp{c: c, in: in, deadline: c.s.q.Now() + clientTimeout}
	op.hid = c.s.hist.Invoke(c.id, in, int64(c.s.q.Now()))
	c.op = op
	c.s.stats.Ops++
	c.send(op)
	c.s.q.At(op.deadline, func() { c.timeout(op) })
}

func (c *client) target() uint64 {
	if c.leader != 0 && c.s.node(c.leader) != nil && c.rng.Chance(0.9) {
		return c.leader
	}
	return uint64(c.rng.Intn(len(c.s.nodes)) + 1)
}

func (c *client) send(op *clientOp) {
	op.attempts++
	n := c.s.node(c.target())
	op.node = n.id
	op.inc = n.incarnation
	op.handle = c.s.newHandle(op)
	var req proto.Message
	if in := op.in; in.Kind == history.OpGet {
		req = &messages.ReadIndexRequest{NoForward: true, WaitApplied: true}
	} else {
		req = &messages.ClientWriteRequest{Data: kvCommand(toCommand(in)), NoForward: true}
	}
	h := op.handle
	// The client lives next to the node: its request skips the network.
	c.s.q.After(c.rng.Duration(0, 100*time.Microsecond), func() {
		if n.up && n.incarnation == op.inc {
			n.coreMB.post(clientReq{h: h, msg: req})
		}
	})
}

func toCommand(in history.Input) *messages.KVCommand {
	switch in.Kind {
	case history.OpPut:
		return &messages.KVCommand{Op: &messages.KVCommand_Put{Put: &messages.KVPut{Key: []byte(in.Key), Value: []byte(in.Value)}}}
	case history.OpDelete:
		return &messages.KVCommand{Op: &messages.KVCommand_Delete{Delete: &messages.KVDelete{Key: []byte(in.Key)}}}
	default:
		return &messages.KVCommand{Op: &messages.KVCommand_Cas{Cas: &messages.KVCompareAndSet{
			Key: []byte(in.Key), Expected: []byte(in.Expect), ExpectAbsent: in.ExpectAbsent, Value: []byte(in.Value)}}}
	}
}

func (c *client) finish(op *clientOp) {
	op.done = true
	c.op = nil
	c.scheduleNext(c.rng.Duration(0, 30*time.Millisecond))
}

func (c *client) timeout(op *clientOp) {
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
	c.leader = 0
	c.finish(op)
}

// retry sends op again after a certain failure, or gives up.
func (c *client) retry(op *clientOp, backoff time.Duration) {
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

// answer handles a node's response to op.
func (c *client) answer(op *clientOp, n *Node, msg proto.Message) {
	now := int64(c.s.q.Now())
	var e *messages.Error
	switch m := msg.(type) {
	case *messages.ClientWriteResponse:
		e = m.Error
		if e == nil {
			var res messages.KVResult
			if err := proto.Unmarshal(m.Result, &res); err != nil || res.Error != "" {
				c.s.fail(fmt.Errorf("n%d answered %s with an undecodable result %q", n.id, op.in, res.Error))
				return
			}
			sum, ok := uint64(0), false
			if ent := n.disk.State().Entry(m.Index); ent != nil && ent.Term == m.Term {
				sum, ok = c.s.checker.sum(ent), true
			}
			if ok {
				var nodeTerm uint64
				if n.up && n.core != nil {
					nodeTerm = n.core.Status().Term
				}
				if err := c.s.checker.Acked(n.id, max(nodeTerm, m.Term), m.Index, m.Term, sum); err != nil {
					c.s.fail(err)
					return
				}
			}
			out := history.Output{}
			if op.in.Kind == history.OpCAS {
				out.Swapped = res.Ok
			}
			c.s.hist.Return(op.hid, out, now)
			c.s.stats.WritesAcked++
			c.leader = n.id
			c.s.onAck(c, m.Index)
			c.finish(op)
			return
		}
	case *messages.ReadIndexResponse:
		e = m.Error
		if e == nil {
			if !n.up || n.incarnation != op.inc {
				c.s.hist.Fail(op.hid, now)
				c.finish(op)
				return
			}
			if n.sm.appliedIndex < m.ReadIndex {
				c.s.fail(violation("read index", "n%d answered read index %d with applied %d", n.id, m.ReadIndex, n.sm.appliedIndex))
				return
			}
			v, found := n.sm.get(op.in.Key)
			c.s.hist.Return(op.hid, history.Output{Value: v, Found: found}, now)
			c.s.stats.ReadsOK++
			c.leader = n.id
			c.finish(op)
			return
		}
	default:
		c.s.fail(fmt.Errorf("client got %T for %s", msg, op.in))
		return
	}
	switch e.Code {
	case messages.ErrorCode_ERROR_CODE_NOT_LEADER:
		c.leader = e.LeaderId
		c.retry(op, c.rng.Duration(0, 20*time.Millisecond))
	case messages.ErrorCode_ERROR_CODE_OVERLOADED, messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED, messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_NO_QUORUM:
		c.retry(op, c.rng.Duration(10*time.Millisecond, 100*time.Millisecond))
	case messages.ErrorCode_ERROR_CODE_ABORTED:
		// The entry was replaced: the write certainly did not happen.
		c.s.hist.Fail(op.hid, now)
		c.finish(op)
	default:
		// TIMEOUT, UNKNOWN_OUTCOME, STOPPED, STORAGE_FAILED: a write may
		// have happened; a read tells nothing.
		if op.in.Kind.IsWrite() {
			c.s.hist.ReturnUnknown(op.hid, now)
			c.s.stats.Unknown++
		} else {
			c.s.hist.Fail(op.hid, now)
		}
		c.leader = 0
		c.finish(op)
	}
}

// admin drives membership changes, leader transfers and snapshots during
// the fault period, one request at a time.
type admin struct {
	s       *Sim
	rng     *Rand
	pending bool
}

type adminOp struct {
	what string
}

func (a *admin) scheduleNext() {
	a.s.q.After(a.rng.Duration(200*time.Millisecond, 1500*time.Millisecond), func() {
		if a.s.stopClients {
			return
		}
		a.act()
		a.scheduleNext()
	})
}

// act picks an administrative request, based on the configuration the
// current leader (if any) has.
func (a *admin) act() {
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
		// Removed nodes keep running and may be added back: their old log
		// is just a stale log to the leader.
		if !slices.Contains(vs, n.id) && !slices.Contains(learners, n.id) {
			outside = append(outside, n.id)
		}
	}
	target := leader
	if a.rng.Chance(0.2) {
		target = Pick(a.rng, s.nodes) // exercise NOT_LEADER handling too
	}
	var req proto.Message
	var what string
	switch r := a.rng.Intn(100); {
	case r < 15 && len(outside) > 0 && s.cfg.Membership:
		id := Pick(a.rng, outside)
		req = &messages.AddLearnerRequest{NodeId: id, Address: addr(id), NoForward: true, WaitCaughtUp: a.rng.Chance(0.5)}
		what = fmt.Sprintf("add learner n%d", id)
	case r < 30 && len(learners) > 0 && len(conf.GetVotersOutgoing()) == 0 && s.cfg.Membership:
		id := Pick(a.rng, learners)
		nv := append(slices.Clone(conf.GetVoters()), id)
		if len(conf.GetVoters()) > 1 && a.rng.Chance(0.4) {
			// Replace: promote one, remove another, in one joint change.
			out := Pick(a.rng, conf.GetVoters())
			nv = slices.DeleteFunc(nv, func(x uint64) bool { return x == out })
			what = fmt.Sprintf("replace n%d by n%d", out, id)
		} else {
			what = fmt.Sprintf("promote n%d", id)
		}
		req = &messages.ChangeMembershipRequest{Voters: nv, NoForward: true, RetainAsLearners: a.rng.Chance(0.3)}
	case r < 40 && len(conf.GetVoters()) > 1 && len(conf.GetVotersOutgoing()) == 0 && s.cfg.Membership:
		out := Pick(a.rng, conf.GetVoters())
		nv := slices.DeleteFunc(slices.Clone(conf.GetVoters()), func(x uint64) bool { return x == out })
		req = &messages.ChangeMembershipRequest{Voters: nv, NoForward: true, RetainAsLearners: a.rng.Chance(0.5)}
		what = fmt.Sprintf("remove voter n%d", out)
	case r < 45 && len(learners) > 0 && s.cfg.Membership:
		id := Pick(a.rng, learners)
		req = &messages.RemoveLearnerRequest{NodeId: id, NoForward: true}
		what = fmt.Sprintf("remove learner n%d", id)
	case r < 65 && len(conf.GetVoters()) > 1:
		id := Pick(a.rng, conf.GetVoters())
		req = &messages.TransferLeaderRequest{Target: id}
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
	op := &adminOp{what: what}
	h := s.newAdminHandle(op)
	s.stats.AdminRequests++
	s.trace.Add(s.q.Now(), target.id, "admin: %s", what)
	inc := target.incarnation
	s.q.After(a.rng.Duration(0, 100*time.Microsecond), func() {
		if target.up && target.incarnation == inc {
			target.coreMB.post(clientReq{h: h, msg: req})
		}
	})
	// The admin does not wait forever for an answer.
	s.q.After(5*time.Second, func() { a.pending = false })
}

func (a *admin) answer(op *adminOp, n *Node, msg proto.Message) {
	a.pending = false
	var e *messages.Error
	if m, ok := msg.(interface{ GetError() *messages.Error }); ok {
		e = m.GetError()
	}
	if e != nil {
		a.s.trace.Add(a.s.q.Now(), n.id, "admin: %s -> %s", op.what, e.Code)
		return
	}
	a.s.trace.Add(a.s.q.Now(), n.id, "admin: %s -> ok", op.what)
	switch msg.(type) {
	case *messages.MembershipChangeResponse:
		a.s.stats.MembershipChanges++
	case *messages.TransferLeaderResponse:
		a.s.stats.Transfers++
	}
}

func addr(id uint64) string { return fmt.Sprintf("n%d", id) }
