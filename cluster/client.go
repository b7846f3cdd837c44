package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
)

// ClientConfig configures a group client.
type ClientConfig struct {
	// Directory names the groups the client reaches.
	Directory *Directory
	// Leaders is the member's leader table (Host.Leaders); nil gives the
	// client a table of its own, taught only by hints.
	Leaders *LeaderTable
	// RequestTimeout bounds a request, retries included, when the request
	// carries no timeout_ms. Default 10s.
	RequestTimeout time.Duration
	// AttemptTimeout is how long the first replica asked has to answer
	// before the client tries another: a request to a member that is down
	// is lost without an answer (remote delivery is at most once). It
	// doubles with every attempt of a request, up to 16 times, so that a
	// slow but live group is not flooded with resends. Default 2s.
	AttemptTimeout time.Duration
	// MaxSessions bounds the writes one client has in flight per group;
	// beyond it writes wait in the client. Each session is a client ID in
	// the state machine's deduplication table. Default 64.
	MaxSessions int
	// Logger receives the client's log lines; nil discards them.
	Logger *slog.Logger
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Leaders == nil {
		c.Leaders = NewLeaderTable()
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 2 * time.Second
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// NewClientProps returns the props of a group client actor. Application
// actors send it GroupWriteRequest and GroupQueryRequest and get
// GroupWriteResponse and GroupQueryResponse back, from any member.
func NewClientProps(cfg ClientConfig) (*actor.Props, error) {
	if cfg.Directory == nil {
		return nil, errors.New("raftor: ClientConfig.Directory is nil")
	}
	cfg = cfg.withDefaults()
	return actor.PropsFromProducer(func() actor.Actor { return newClientActor(cfg) }), nil
}

// session is one (client ID, sequence) stream. A session carries one
// write at a time, so that every retry is of the session's latest
// sequence: a state machine that remembers only each client's last
// sequence (store/kvsm) then answers a retry with the recorded result and
// refuses a stale duplicate, and never applies a write twice.
type session struct {
	clientID uint64
	seq      uint64
}

type ridKey struct{ client, seq uint64 }

// op is one request in flight.
type op struct {
	id       uint64
	group    Group
	write    *messages.GroupWriteRequest
	query    *messages.GroupQueryRequest
	waiters  []*actor.PID
	deadline time.Time
	sess     *session
	rid      *messages.RequestID
	attempt  int
	target   uint64
	// sent is set once a write left the client: from then on, a failure
	// is UNKNOWN_OUTCOME, never a plain error (it may have committed).
	sent  bool
	timer *time.Timer
	// unanswered counts attempts sent and not answered. Answers do not
	// say which attempt they belong to, so a late refusal from an
	// attempt the client already moved on from must not send the request
	// away from where the current attempt is: while another attempt is
	// out, a refusal without a new leader is left to that attempt.
	unanswered int
}

// Timer messages; attempt ties them to the attempt that armed them.
type attemptExpired struct {
	op      uint64
	attempt int
}
type retryNow struct {
	op      uint64
	attempt int
}

type groupSessions struct {
	free  []*session
	count int
	// queued are writes waiting for a session, in arrival order.
	queued []*op
}

// clientActor is the group client. Writes go to the leader the table
// names (or, when it names none, to the replicas in turn) with no_forward,
// so that a not-leader answer teaches the table instead of hiding behind a
// forward; the client follows the hint at once, backs off when no replica
// knows a leader, and tries the next replica when one stays silent.
type clientActor struct {
	cfg      ClientConfig
	self     *actor.PID
	system   *actor.ActorSystem
	ops      map[uint64]*op
	byRID    map[ridKey]*op
	sessions map[uint64]*groupSessions
	nextOp   uint64
	rr       uint64
	stopping bool
}

func newClientActor(cfg ClientConfig) *clientActor {
	return &clientActor{cfg: cfg, ops: map[uint64]*op{}, byRID: map[ridKey]*op{}, sessions: map[uint64]*groupSessions{}, rr: randUint64()}
}

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func (c *clientActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.self, c.system = ctx.Self(), ctx.ActorSystem()
	case *messages.GroupWriteRequest:
		c.newWrite(ctx, m, ctx.Sender())
	case *messages.GroupQueryRequest:
		c.newQuery(ctx, m, ctx.Sender())
	case *messages.ClientWriteResponse:
		c.writeAnswered(ctx, m)
	case *messages.GroupQueryResponse:
		if o := c.ops[m.GetId()]; o != nil && o.query != nil {
			c.answered(ctx, o, m.GetError(), m.GetLeaderId(), func() { c.finish(ctx, o, m) })
		}
	case *attemptExpired:
		if o := c.ops[m.op]; o != nil && o.attempt == m.attempt {
			if o.write != nil && o.rid == nil {
				// Still waiting for a session: it never left the client.
				c.fail(ctx, o, &messages.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Message: "every session of the group was busy until the deadline"})
				return
			}
			// The replica stayed silent: it may be down. Do not ask it
			// first again.
			c.cfg.Leaders.Forget(o.group.ID, o.target)
			o.target = c.nextReplica(o, o.target)
			c.send(ctx, o)
		}
	case *retryNow:
		if o := c.ops[m.op]; o != nil && o.attempt == m.attempt {
			c.send(ctx, o)
		}
	case *actor.Stopping:
		c.stopping = true
		for _, o := range c.ops {
			c.fail(ctx, o, &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Message: "the group client stopped"})
		}
	}
}

func (c *clientActor) timeout(ms uint64) time.Duration {
	if ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return c.cfg.RequestTimeout
}

func (c *clientActor) lookup(ctx actor.Context, name string, reply func(*messages.Error)) (Group, bool) {
	g, ok := c.cfg.Directory.Group(name)
	if !ok {
		reply(&messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: fmt.Sprintf("no group named %q", name)})
	}
	return g, ok
}

func (c *clientActor) newWrite(ctx actor.Context, m *messages.GroupWriteRequest, sender *actor.PID) {
	g, ok := c.lookup(ctx, m.GetGroup(), func(e *messages.Error) {
		c.sendTo(ctx, sender, &messages.GroupWriteResponse{Error: e, Request: m.GetRequest()})
	})
	if !ok {
		return
	}
	if rid := m.GetRequest(); rid.GetClientId() != 0 {
		// The caller's own RequestID. A second copy of a request already
		// in flight (a retried cluster call) waits for the same answer.
		if o := c.byRID[ridKey{rid.GetClientId(), rid.GetSequence()}]; o != nil {
			o.waiters = append(o.waiters, sender)
			return
		}
	}
	c.nextOp++
	o := &op{id: c.nextOp, group: g, write: m, waiters: []*actor.PID{sender}, deadline: time.Now().Add(c.timeout(m.GetTimeoutMs()))}
	c.ops[o.id] = o
	if rid := m.GetRequest(); rid.GetClientId() != 0 {
		o.rid = rid
		c.byRID[ridKey{rid.GetClientId(), rid.GetSequence()}] = o
		c.start(ctx, o)
		return
	}
	gs := c.sessions[g.ID]
	if gs == nil {
		gs = &groupSessions{}
		c.sessions[g.ID] = gs
	}
	if len(gs.free) == 0 && gs.count >= c.cfg.MaxSessions {
		gs.queued = append(gs.queued, o)
		c.arm(ctx, o, time.Until(o.deadline)) // the deadline still holds while queued
		return
	}
	c.assign(ctx, gs, o)
}

// assign gives o a session and sends it.
func (c *clientActor) assign(ctx actor.Context, gs *groupSessions, o *op) {
	var s *session
	if n := len(gs.free); n > 0 {
		s, gs.free = gs.free[n-1], gs.free[:n-1]
	} else {
		s = &session{clientID: randUint64() | 1}
		gs.count++
	}
	s.seq++
	o.sess = s
	o.rid = &messages.RequestID{ClientId: s.clientID, Sequence: s.seq}
	c.byRID[ridKey{s.clientID, s.seq}] = o
	c.start(ctx, o)
}

func (c *clientActor) newQuery(ctx actor.Context, m *messages.GroupQueryRequest, sender *actor.PID) {
	g, ok := c.lookup(ctx, m.GetGroup(), func(e *messages.Error) { c.sendTo(ctx, sender, &messages.GroupQueryResponse{Error: e, Id: m.GetId()}) })
	if !ok {
		return
	}
	c.nextOp++
	o := &op{id: c.nextOp, group: g, query: m, waiters: []*actor.PID{sender}, deadline: time.Now().Add(c.timeout(m.GetTimeoutMs()))}
	c.ops[o.id] = o
	c.start(ctx, o)
}

func (c *clientActor) start(ctx actor.Context, o *op) {
	o.target = c.cfg.Leaders.Leader(o.group.ID)
	if _, ok := o.group.replica(o.target); !ok {
		o.target = c.nextReplica(o, 0)
	}
	c.send(ctx, o)
}

// nextReplica is the replica after the one given, in the group's order,
// starting at a random one so that clients spread over the replicas.
func (c *clientActor) nextReplica(o *op, after uint64) uint64 {
	rs := o.group.Replicas
	for i, r := range rs {
		if r.NodeID == after {
			return rs[(i+1)%len(rs)].NodeID
		}
	}
	c.rr++
	return rs[c.rr%uint64(len(rs))].NodeID
}

// send makes one attempt at o's target.
func (c *clientActor) send(ctx actor.Context, o *op) {
	left := time.Until(o.deadline)
	if left <= 0 {
		c.fail(ctx, o, &messages.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Message: "no leader answered before the deadline"})
		return
	}
	r, _ := o.group.replica(o.target)
	o.attempt++
	o.unanswered++
	// The replica may keep the request until the deadline: a live leader
	// under load answers late rather than never, and every resend of a
	// write is another log entry (deduplicated at apply, but appended and
	// replicated all the same), so resending on a short timer turns a slow
	// group into a retry storm. Silence is still noticed: the client's own
	// timer moves on after AttemptTimeout, doubling with each attempt.
	ms := uint64(max(left/time.Millisecond, 1))
	wait := min(left, c.cfg.AttemptTimeout<<min(o.attempt-1, 4))
	if o.write != nil {
		o.sent = true
		req := &messages.ClientWriteRequest{Data: o.write.GetData(), Command: o.write.GetCommand(), Request: o.rid, NoForward: true, TimeoutMs: ms}
		ctx.Request(actor.NewPID(r.Address, actors.CoreName(c.cfg.Directory.ClusterID(), o.group.ID, r.NodeID)), req)
	} else {
		req := &messages.GroupQueryRequest{Query: o.query.GetQuery(), GroupId: o.group.ID, Id: o.id, TimeoutMs: ms}
		ctx.Request(actor.NewPID(r.Address, HostName(c.cfg.Directory.ClusterID())), req)
	}
	c.arm(ctx, o, wait)
}

func (c *clientActor) arm(_ actor.Context, o *op, d time.Duration) {
	if o.timer != nil {
		o.timer.Stop()
	}
	msg, root, self := &attemptExpired{op: o.id, attempt: o.attempt}, c.system.Root, c.self
	o.timer = time.AfterFunc(d, func() { root.Send(self, msg) })
}

func (c *clientActor) retryAfter(_ actor.Context, o *op, d time.Duration) {
	if o.timer != nil {
		o.timer.Stop()
	}
	msg, root, self := &retryNow{op: o.id, attempt: o.attempt}, c.system.Root, c.self
	o.timer = time.AfterFunc(d, func() { root.Send(self, msg) })
}

func (c *clientActor) writeAnswered(ctx actor.Context, m *messages.ClientWriteResponse) {
	rid := m.GetRequest()
	o := c.byRID[ridKey{rid.GetClientId(), rid.GetSequence()}]
	if o == nil {
		return // an answer to an attempt already answered or given up
	}
	c.answered(ctx, o, m.GetError(), 0, func() {
		c.finish(ctx, o, &messages.GroupWriteResponse{Index: m.GetIndex(), Term: m.GetTerm(), Result: m.GetResult(),
			TypedResult: m.GetTypedResult(), Error: m.GetError(), Request: o.rid, LeaderId: o.target})
	})
}

// answered decides what an answer to o means: done (finish), or which
// replica to try next and when.
func (c *clientActor) answered(ctx actor.Context, o *op, e *messages.Error, leader uint64, finish func()) {
	if o.unanswered > 0 {
		o.unanswered--
	}
	switch e.GetCode() {
	case messages.ErrorCode_ERROR_CODE_UNSPECIFIED:
		if leader == 0 {
			leader = o.target
		}
		c.cfg.Leaders.Learn(o.group.ID, leader)
		finish()
	case messages.ErrorCode_ERROR_CODE_NOT_LEADER:
		hint := e.GetLeaderId()
		if _, ok := o.group.replica(hint); ok && hint != o.target {
			c.cfg.Leaders.Learn(o.group.ID, hint)
			o.target = hint
			c.send(ctx, o)
			return
		}
		if o.unanswered > 0 {
			return // a late refusal; the current attempt is still out
		}
		// No replica knows a leader yet (an election is running): back
		// off, then ask the next replica.
		c.cfg.Leaders.Forget(o.group.ID, o.target)
		o.target = c.nextReplica(o, o.target)
		c.retryAfter(ctx, o, c.backoff(o))
	case messages.ErrorCode_ERROR_CODE_TIMEOUT, messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME,
		messages.ErrorCode_ERROR_CODE_STOPPED, messages.ErrorCode_ERROR_CODE_ABORTED,
		messages.ErrorCode_ERROR_CODE_NO_QUORUM, messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_OVERLOADED, messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED:
		// Retrying under the same RequestID is safe: the state machine
		// applies it at most once. ABORTED means another leader's entry
		// took the slot, so the write did not commit there; try again.
		if o.unanswered > 0 {
			return
		}
		if e.GetCode() != messages.ErrorCode_ERROR_CODE_OVERLOADED {
			o.target = c.nextReplica(o, o.target)
		}
		c.retryAfter(ctx, o, c.backoff(o))
	default:
		// INVALID, TOO_LARGE, STORAGE_FAILED...: another attempt gets the
		// same answer.
		finish()
	}
}

// backoff grows with the attempts, up to half a second.
func (c *clientActor) backoff(o *op) time.Duration {
	return min(time.Duration(o.attempt)*20*time.Millisecond, 500*time.Millisecond)
}

// fail ends o with e. A write that may have reached a leader ends with
// UNKNOWN_OUTCOME: it may still commit, and a caller must not take it for
// a write that did not happen.
func (c *clientActor) fail(ctx actor.Context, o *op, e *messages.Error) {
	if o.query != nil {
		c.finish(ctx, o, &messages.GroupQueryResponse{Error: e, Id: o.query.GetId()})
		return
	}
	if o.sent && e.GetCode() == messages.ErrorCode_ERROR_CODE_TIMEOUT {
		e = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, Message: e.GetMessage() + "; the write may still commit"}
	}
	c.finish(ctx, o, &messages.GroupWriteResponse{Error: e, Request: o.rid})
}

func (c *clientActor) finish(ctx actor.Context, o *op, resp any) {
	if o.timer != nil {
		o.timer.Stop()
	}
	delete(c.ops, o.id)
	if o.rid != nil {
		delete(c.byRID, ridKey{o.rid.GetClientId(), o.rid.GetSequence()})
	}
	if q, ok := resp.(*messages.GroupQueryResponse); ok && o.query != nil {
		q.Id = o.query.GetId()
	}
	for _, w := range o.waiters {
		c.sendTo(ctx, w, resp)
	}
	if o.write != nil && o.sess != nil {
		c.release(ctx, o.group.ID, o.sess)
	}
	if o.write != nil && o.sess == nil && o.rid == nil {
		// Ended while queued for a session.
		if gs := c.sessions[o.group.ID]; gs != nil {
			for i, q := range gs.queued {
				if q == o {
					gs.queued = append(gs.queued[:i], gs.queued[i+1:]...)
					break
				}
			}
		}
	}
}

// release returns a session to its group's pool, or hands it straight to
// the next queued write.
func (c *clientActor) release(ctx actor.Context, group uint64, s *session) {
	gs := c.sessions[group]
	gs.free = append(gs.free, s)
	for !c.stopping && len(gs.queued) > 0 {
		o := gs.queued[0]
		gs.queued = gs.queued[1:]
		if _, live := c.ops[o.id]; live {
			c.assign(ctx, gs, o)
			return
		}
	}
}

func (c *clientActor) sendTo(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}
