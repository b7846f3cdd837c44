package sim

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// The actor mode runs Raftor's real actors (actors.Start: RaftCore, the
// storage and apply actors, a ReplicationState and ReplicationStream per
// peer of a leader) instead of the core-level model of node.go. Each node
// is an actor system of its own whose Dispatcher hands every mailbox run to
// the simulator's queue, whose Clock fires timers in simulated time, and
// whose address resolver sends every message for another node (requests,
// and the replies that go back to the sender PID of a request) through the
// simulated Network as bytes, the way protoactor remote would. Clients are
// actors of one more actor system that send requests with ctx.Request to any
// node, so followers forward them.
//
// Everything runs on the caller's goroutine and every choice comes from the
// seed: the same seed gives the same run, byte for byte.

// runLatency bounds the delay between a mailbox being scheduled and its
// run: the seed's choice of delays decides which of the runnable mailboxes
// goes next.
const runLatency = 60 * time.Microsecond

// clientAddress is the address of the clients' actor system.
const clientAddress = "client"

// maxActorSteps stops a run that no longer advances (a livelock of
// zero-delay events would otherwise never end).
const maxActorSteps = 20_000_000

// ActorSim is one simulation run of the actor mode.
type ActorSim struct {
	seed      uint64
	cfg       Config
	rng       *Rand
	q         *Queue
	net       *Network
	trace     *Trace
	checker   *Checker
	hist      *history.Recorder
	nodes     []*actorNode
	clusterID string
	stats     Stats
	failure   error
	// epoch is what every node's clock reads at simulated time zero.
	epoch time.Time

	clientSys *actor.ActorSystem
	clients   []*actorClient
	admin     *actorAdmin
	// origin records which node a message delivered to a client came from.
	origin map[proto.Message]uint64

	// leaseRead answers reads from the leader's lease: drawn for runs
	// whose clocks neither skew nor jump, as leases assume bounded drift.
	leaseRead bool

	stopClients bool
	calmAt      time.Duration
	probe       *actorClient
	probeIndex  uint64
	live        bool
	views       []NodeView
}

// RunActors runs the actor-mode simulation of seed.
func RunActors(seed uint64, opts Options) *Result {
	s := newActorSim(seed, opts)
	s.run()
	res := &Result{Seed: seed, Config: s.cfg, Stats: s.stats, Err: s.failure, Trace: s.trace, History: s.hist}
	if s.failure == nil {
		lin := s.hist.Check(time.Minute)
		res.Linearizability = lin
		if err := lin.Err(); err != nil {
			res.Err = &Violation{Property: PropLinearizability, Detail: err.Error()}
		}
	}
	res.Stats.HistoryCheck = s.hist.Counts()
	return res
}

func newActorSim(seed uint64, opts Options) *ActorSim {
	rng := NewRand(seed)
	cfg := RandomConfig(rng.Fork())
	if opts.Config != nil {
		cfg = *opts.Config
	}
	size := opts.TraceSize
	if size == 0 {
		size = 4000
	}
	s := &ActorSim{
		seed: seed, cfg: cfg, rng: rng, q: &Queue{}, trace: NewTrace(size),
		checker: NewChecker(), hist: history.NewRecorder(), clusterID: "sim",
		epoch:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		origin: map[proto.Message]uint64{},
	}
	s.checker.OutcomesOnly = opts.OutcomesOnly
	s.net = NewNetwork(s.q, rng.Fork(), s.trace, s.arrive)
	s.leaseRead = rng.Chance(0.5) && cfg.CheckQuorum && !cfg.Plan.Enabled[FaultClockSkew] && !cfg.Plan.Enabled[FaultClockJump]
	return s
}

func (s *ActorSim) node(id uint64) *actorNode {
	if id == 0 || id > uint64(len(s.nodes)) {
		return nil
	}
	return s.nodes[id-1]
}

func (s *ActorSim) fail(err error) {
	if s.failure == nil {
		s.failure = err
		s.trace.Add(s.q.Now(), 0, "FAILURE: %v", err)
	}
}

// ---- actor systems ----

// newSystem makes an actor system at address whose mailbox runs go to the
// simulator's queue (for node n, or the clients when n is nil) and whose
// messages for other addresses go through the simulator's wire.
func (s *ActorSim) newSystem(address string, n *actorNode) *actor.ActorSystem {
	from := uint64(0)
	if n != nil {
		from = n.id
	}
	sys := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(&panicCatcher{s: s, node: from})
		}),
		// A dead letter with a sender is answered with DeadLetterResponse
		// and not logged, so it starts no throttle goroutine.
		actor.WithDeadLetterRequestLogging(false),
	)
	sys.ProcessRegistry.Address = address
	proxy := &wireProxy{s: s, from: from}
	sys.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		if _, ok := s.addressNode(pid.GetAddress()); !ok {
			return nil, false
		}
		return proxy, true
	})
	return sys
}

// addressNode maps an address to a node ID (0 for the clients).
func (s *ActorSim) addressNode(a string) (uint64, bool) {
	if a == clientAddress {
		return 0, true
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(a, "n"), 10, 64)
	if err != nil || !strings.HasPrefix(a, "n") || s.node(id) == nil {
		return 0, false
	}
	return id, true
}

// runDispatcher is the Dispatcher of a simulated actor system: a mailbox
// run becomes an event of the simulator's queue, a seed-chosen moment away.
type runDispatcher struct {
	s   *ActorSim
	n   *actorNode // nil for the clients
	inc uint64
}

// Schedule implements actor.Dispatcher.
func (d runDispatcher) Schedule(fn func()) {
	d.s.q.After(d.s.rng.Duration(0, runLatency), func() { d.s.runMailbox(d.n, d.inc, fn) })
}

// Throughput implements actor.Dispatcher: a run drains its mailbox without
// ever yielding the goroutine.
func (runDispatcher) Throughput() int { return math.MaxInt32 }

func (s *ActorSim) runMailbox(n *actorNode, inc uint64, fn func()) {
	if n != nil {
		if !n.up || n.incarnation != inc {
			return // the run died with its actor system
		}
		if now := s.q.Now(); n.pausedUntil > now {
			s.q.At(n.pausedUntil, func() { s.runMailbox(n, inc, fn) })
			return
		}
		n.touched = true
	}
	fn()
}

// panicCatcher is the actor systems' logger: protoactor reports a panic
// inside an actor with an Info record before its supervisor restarts the
// actor. In the simulator a panic is a failure of the run.
type panicCatcher struct {
	s     *ActorSim
	node  uint64
	attrs []slog.Attr
}

func (h *panicCatcher) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *panicCatcher) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "[ACTOR] Recovering" {
		return nil
	}
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.s.fail(fmt.Errorf("n%d: an actor panicked:%s", h.node, b.String()))
	return nil
}

func (h *panicCatcher) WithAttrs(as []slog.Attr) slog.Handler { return h }
func (h *panicCatcher) WithGroup(string) slog.Handler         { return h }

// traceLogger puts a node's warnings and errors into the trace.
type traceLogger struct {
	n     *actorNode
	attrs string
}

func (h *traceLogger) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *traceLogger) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.n.s.trace.Add(h.n.s.q.Now(), h.n.id, "log %s %s%s", r.Level, r.Message, b.String())
	return nil
}

func (h *traceLogger) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		if a.Key == "node" {
			continue
		}
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	return &traceLogger{n: h.n, attrs: b.String()}
}

func (h *traceLogger) WithGroup(string) slog.Handler { return h }

// ---- the wire ----

// wireMsg is a message between actor systems as protoactor remote carries
// it: bytes, the type's name, and the target and sender PIDs by value.
type wireMsg struct {
	from, to         uint64
	target, sender   pidValue
	hasSender        bool
	name             protoreflect.FullName
	data             []byte
	shown            proto.Message
	forwardedRequest bool
}

type pidValue struct {
	address, id string
	requestID   uint32
}

func (p pidValue) pid() *actor.PID {
	pid := actor.NewPID(p.address, p.id)
	pid.RequestId = p.requestID
	return pid
}

func (w *wireMsg) String() string {
	return fmt.Sprintf("%s to %s", formatMsg(w.shown), w.target.id)
}

// wireProxy is the Process every PID of another actor system resolves to:
// it puts what is sent on the simulated wire.
type wireProxy struct {
	s    *ActorSim
	from uint64
}

// SendUserMessage implements actor.Process.
func (p *wireProxy) SendUserMessage(pid *actor.PID, message any) { p.s.send(p.from, pid, message) }

// SendSystemMessage implements actor.Process. Raftor sends no system
// messages (watch, stop) to other nodes; one would be a bug.
func (p *wireProxy) SendSystemMessage(pid *actor.PID, message any) {
	p.s.fail(fmt.Errorf("n%d sent the system message %T to %s: Raftor watches and stops only its own actors", p.from, message, pid))
}

// Stop implements actor.Process.
func (p *wireProxy) Stop(pid *actor.PID) {
	p.s.fail(fmt.Errorf("n%d stopped %s of another node", p.from, pid))
}

// send serializes message for pid and puts it on the wire: between nodes
// through the Network and its faults, between a node and the clients on a
// short, reliable hop (the clients sit next to the nodes).
func (s *ActorSim) send(from uint64, pid *actor.PID, message any) {
	_, msg, sender := actor.UnwrapEnvelope(message)
	pm, ok := msg.(proto.Message)
	if !ok {
		s.fail(fmt.Errorf("n%d sent %T to %s: not a protobuf message, so it cannot cross the wire", from, msg, pid))
		return
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	if err != nil {
		s.fail(fmt.Errorf("n%d sent %T that does not marshal: %v", from, pm, err))
		return
	}
	to, _ := s.addressNode(pid.GetAddress())
	w := &wireMsg{from: from, to: to, target: pidValue{pid.GetAddress(), pid.GetId(), pid.GetRequestId()},
		name: pm.ProtoReflect().Descriptor().FullName(), data: data, shown: pm}
	if sender != nil {
		w.hasSender = true
		w.sender = pidValue{sender.GetAddress(), sender.GetId(), sender.GetRequestId()}
	}
	if from == 0 || to == 0 {
		s.q.After(s.rng.Duration(20*time.Microsecond, 300*time.Microsecond), func() { s.arrive(from, to, w) })
		return
	}
	s.trace.Add(s.q.Now(), from, "send  -> n%d %v", to, w)
	s.net.Send(from, to, w)
	if n := s.node(from); n.crashOnSend && (n.crashOnSendType == "" || n.crashOnSendType == w.name) {
		n.crashOnSend = false
		inc := n.incarnation
		s.q.After(0, func() {
			if n.up && n.incarnation == inc {
				s.crashAndRestart(n, s.rng)
			}
		})
	}
}

// arrive hands a message off the wire to its target in the receiving actor
// system; a target that does not exist there is a dead letter, which
// answers the sender with DeadLetterResponse, over the wire again.
func (s *ActorSim) arrive(from, to uint64, m any) bool {
	w := m.(*wireMsg)
	var sys *actor.ActorSystem
	if to == 0 {
		sys = s.clientSys
	} else {
		n := s.node(to)
		if n == nil || !n.up {
			return false
		}
		sys = n.system
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(w.name)
	if err != nil {
		s.fail(fmt.Errorf("message type %s is not registered: %v", w.name, err))
		return false
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(w.data, msg); err != nil {
		s.fail(fmt.Errorf("%s does not unmarshal: %v", w.name, err))
		return false
	}
	var payload any = msg
	if w.hasSender {
		payload = &actor.MessageEnvelope{Message: msg, Sender: w.sender.pid()}
	}
	if to == 0 {
		s.origin[msg] = from
	} else if from != 0 {
		s.trace.Add(s.q.Now(), to, "recv  <- n%d %v", from, w)
	}
	target := w.target.pid()
	proc, _ := sys.ProcessRegistry.Get(target)
	proc.SendUserMessage(target, payload)
	return true
}

// ---- nodes ----

// actorNode is one simulated node: a real actors.Node in an actor system of
// its own, over a store.MemStore that outlives its crashes.
type actorNode struct {
	id          uint64
	s           *ActorSim
	up          bool
	incarnation uint64
	pausedUntil time.Duration
	touched     bool
	// crashOnWrite crashes the node right after its next store write,
	// before the write's result reaches anyone; crashOnSend right after the
	// run that sends its next message to another node (of type
	// crashOnSendType, if set: a vote answer, say), before the writes that
	// run asked for reach the store.
	crashOnWrite, crashOnSend bool
	crashOnSendType           protoreflect.FullName

	opts   store.Options
	mem    *store.MemStore
	st     *simStore
	log    *storeLog
	sm     *simKV
	system *actor.ActorSystem
	node   *actors.Node

	// The node's clock: local time runs at rate since anchorSim, where it
	// read anchorLocal. Skew changes the rate, a jump the reading.
	rate                   float64
	anchorSim, anchorLocal time.Duration
	timers                 []*simTimer
}

type simTimer struct {
	due  time.Duration // local time
	inc  uint64
	f    func()
	done bool
}

func (s *ActorSim) newNode(id uint64) (*actorNode, error) {
	n := &actorNode{id: id, s: s, rate: 1}
	n.opts = store.Options{ClusterID: s.clusterID, NodeID: id, Incarnation: s.rng.Uint64() | 1}
	mem, err := store.NewMemStore(n.opts)
	if err != nil {
		return nil, err
	}
	n.mem = mem
	n.log = newStoreLog(&messages.NodeIdentity{ClusterId: s.clusterID, GroupId: 1, NodeId: id, Incarnation: n.opts.Incarnation})
	n.sm = &simKV{n: n, kv: newKVSM(), sessions: map[uint64]kvSession{}}
	return n, nil
}

func (n *actorNode) localNow() time.Duration {
	return n.anchorLocal + time.Duration(float64(n.s.q.Now()-n.anchorSim)*n.rate)
}

func (n *actorNode) setRate(rate float64) {
	n.anchorLocal, n.anchorSim, n.rate = n.localNow(), n.s.q.Now(), rate
}

// jump moves the node's clock forward by d: the timers that fall due in
// the leap fire at once, as after a suspended process resumes.
func (n *actorNode) jump(d time.Duration) {
	n.anchorLocal += d
	now := n.localNow()
	for _, t := range slices.Clone(n.timers) {
		if !t.done && t.due <= now {
			n.s.q.After(0, func() { n.fire(t) })
		}
	}
}

func (n *actorNode) fire(t *simTimer) {
	if t.done {
		return
	}
	t.done = true
	if len(n.timers) > 8 {
		n.timers = slices.DeleteFunc(n.timers, func(t *simTimer) bool { return t.done })
	}
	if !n.up || n.incarnation != t.inc {
		return
	}
	t.f()
}

// nodeClock is an incarnation's actors.Clock.
type nodeClock struct {
	n   *actorNode
	inc uint64
}

// Now implements actors.Clock.
func (c nodeClock) Now() time.Time { return c.n.s.epoch.Add(c.n.localNow()) }

// AfterFunc implements actors.Clock.
func (c nodeClock) AfterFunc(d time.Duration, f func()) func() {
	n := c.n
	t := &simTimer{due: n.localNow() + d, inc: c.inc, f: f}
	n.timers = append(n.timers, t)
	n.s.q.After(time.Duration(float64(d)/n.rate), func() { n.fire(t) })
	return func() { t.done = true }
}

func (n *actorNode) metrics() *messages.Metrics {
	if !n.up || n.node == nil {
		return nil
	}
	return n.node.Metrics()
}

// start boots the node on its store: a fresh node, or a restart after a
// crash on what the store had synced.
func (n *actorNode) start() error {
	s := n.s
	if n.incarnation > 0 {
		mem, err := n.mem.Reopen(n.opts)
		if err != nil {
			return fmt.Errorf("n%d: reopen store: %w", n.id, err)
		}
		n.mem = mem
	}
	n.incarnation++
	n.up, n.touched, n.pausedUntil = true, true, 0
	n.timers = nil
	n.st = &simStore{Store: n.mem, n: n}
	// The checker reads the whole log again after a restart.
	n.log.st.Entries, n.log.st.First = nil, 1
	if err := n.log.refresh(n.mem, 1, 1); err != nil {
		return fmt.Errorf("n%d: read store: %w", n.id, err)
	}
	n.system = s.newSystem(addr(n.id), n)
	cfg := actors.Config{
		ClusterID: s.clusterID, NodeID: n.id, Address: addr(n.id),
		TickInterval: s.cfg.Tick, ElectionTicks: s.cfg.ElectionTicks, HeartbeatTicks: 1,
		DisablePreVote: !s.cfg.PreVote, DisableCheckQuorum: !s.cfg.CheckQuorum, LeaseRead: s.leaseRead,
		MaxAppendEntries: max(s.cfg.MaxAppendEntries, 1), MaxInflightAppends: max(s.cfg.MaxInflight, 1),
		SnapshotChunkBytes: max(s.cfg.SnapshotChunkBytes, 1),
		SnapshotEntries:    s.cfg.SnapshotEntries, SnapshotTrailing: s.cfg.SnapshotTrailing,
		RequestTimeout: actorRequestTimeout,
		Clock:          nodeClock{n: n, inc: n.incarnation},
		Peers: actors.PeerResolverFunc(func(id uint64, _ string) *actor.PID {
			return actor.NewPID(addr(id), actors.CoreName(s.clusterID, 1, id))
		}),
		Dispatcher:    runDispatcher{s: s, n: n, inc: n.incarnation},
		InlineStorage: true,
		Logger:        slog.New(&traceLogger{n: n}),
	}
	node, err := actors.Start(n.system, cfg, n.sm, n.st)
	if err != nil {
		return fmt.Errorf("n%d: actors.Start: %w", n.id, err)
	}
	n.node = node
	hs := n.log.st.HardState
	s.trace.Add(s.q.Now(), n.id, "start (incarnation %d) term=%d commit=%d log=%d..%d applied=%d",
		n.incarnation, hs.GetTerm(), hs.GetCommit(), n.log.st.First, n.log.st.LastIndex(), n.sm.kv.appliedIndex)
	return nil
}

// crash stops the node at once: its actor system is abandoned (queued runs
// dropped, timers dead) and its store keeps what it had synced.
func (n *actorNode) crash() {
	if !n.up {
		return
	}
	n.s.trace.Add(n.s.q.Now(), n.id, "CRASH")
	n.up, n.touched = false, true
	n.mem = n.mem.Crash()
	n.system, n.node, n.st = nil, nil, nil
	n.timers = nil
}

// wrote is told by the store after each write.
func (n *actorNode) wrote(from uint64) {
	n.touched = true
	if err := n.log.refresh(n.st, 1, from); err != nil {
		n.s.fail(fmt.Errorf("n%d: reading the store back: %w", n.id, err))
	}
	if n.crashOnWrite {
		n.crashOnWrite = false
		inc := n.incarnation
		// Right after this run: the write is on disk, its result is not
		// handled yet.
		n.s.q.After(0, func() {
			if n.up && n.incarnation == inc {
				n.s.crashAndRestart(n, n.s.rng)
			}
		})
	}
}

func (n *actorNode) view() NodeView {
	v := NodeView{ID: n.id, Incarnation: n.incarnation, Up: n.up, Disk: n.log}
	if m := n.metrics(); m != nil {
		v.Term, v.Role = m.GetTerm(), m.GetRole()
		// The commit index the node's store holds: what it knows committed
		// and holds durably (RaftCore's own may run ahead of its disk).
		v.Commit = n.log.st.HardState.GetCommit()
		v.RuleCommit = m.GetCommitIndex()
		v.Applied = n.sm.kv.appliedIndex
	}
	return v
}

func (n *actorNode) membership() *messages.Membership { return n.metrics().GetMembership() }

func (n *actorNode) corePID() *actor.PID {
	return actor.NewPID(addr(n.id), actors.CoreName(n.s.clusterID, 1, n.id))
}

// ---- the run ----

// actorRequestTimeout is the timeout_ms clients put on requests; nodes
// answer TIMEOUT after it, before the client gives up (clientTimeout).
const actorRequestTimeout = 2 * time.Second

func (s *ActorSim) run() {
	defer func() {
		if r := recover(); r != nil {
			s.fail(fmt.Errorf("panic: %v", r))
		}
		s.stats.SimTime = s.q.Now()
		s.stats.Faults.Net = s.net.Stats
	}()
	total := s.cfg.Voters + s.cfg.Spares
	founders := &messages.Membership{Addresses: map[uint64]string{}}
	for id := uint64(1); id <= uint64(total); id++ {
		n, err := s.newNode(id)
		if err != nil {
			s.fail(err)
			return
		}
		s.nodes = append(s.nodes, n)
		if id <= uint64(s.cfg.Voters) {
			founders.Voters = append(founders.Voters, id)
			founders.Addresses[id] = addr(id)
		}
	}
	s.trace.Add(0, 0, "seed %d (actors): %s lease-read=%v", s.seed, s.cfg, s.leaseRead)
	s.clientSys = s.newSystem(clientAddress, nil)
	for _, n := range s.nodes {
		if err := n.start(); err != nil {
			s.fail(err)
			return
		}
	}
	s.admin = &actorAdmin{s: s, rng: s.rng.Fork()}
	for _, id := range founders.Voters {
		s.admin.request(s.node(id), &messages.InitializeRequest{Membership: proto.Clone(founders).(*messages.Membership)}, "initialize")
	}
	for i := 0; i < s.cfg.Clients; i++ {
		c := &actorClient{id: i + 1, s: s, rng: s.rng.Fork()}
		s.clients = append(s.clients, c)
		c.scheduleNext(c.rng.Duration(50*time.Millisecond, 300*time.Millisecond))
	}
	s.admin.scheduleNext()
	s.scheduleFaults()
	s.calmAt = s.cfg.FaultTime
	s.q.At(s.calmAt, s.calm)

	end := s.calmAt + s.cfg.CalmBound
	for s.failure == nil && !s.live && s.q.Step(end) {
		s.stats.Steps++
		s.observe()
		if s.stats.Steps >= maxActorSteps {
			s.fail(fmt.Errorf("%d steps without reaching the end of the run (at %v): runaway events", s.stats.Steps, s.q.Now()))
		}
	}
	if s.failure == nil && !s.live {
		s.fail(violation(PropLiveness, "no write committed and applied on every voter within %v of the faults stopping (%s)", s.cfg.CalmBound, s.describeNodes()))
	}
}

func (s *ActorSim) observe() {
	if s.failure != nil {
		return
	}
	s.views = s.views[:0]
	for _, n := range s.nodes {
		if n.touched {
			n.touched = false
			s.views = append(s.views, n.view())
		}
	}
	if err := s.checker.Observe(s.views); err != nil {
		s.fail(err)
		return
	}
	if s.probeIndex != 0 && !s.live {
		s.checkLive()
	}
}

func (s *ActorSim) currentLeader() *actorNode {
	var best *actorNode
	var bestTerm uint64
	for _, n := range s.nodes {
		m := n.metrics()
		if m.GetRole() == messages.Role_ROLE_LEADER && m.GetTerm() >= bestTerm {
			best, bestTerm = n, m.GetTerm()
		}
	}
	return best
}

func (s *ActorSim) calm() {
	s.trace.Add(s.q.Now(), 0, "CALM: faults stop")
	s.stopClients = true
	s.net.Heal()
	s.net.SetFaults(CalmNet)
	for _, n := range s.nodes {
		n.pausedUntil = 0
		n.crashOnWrite, n.crashOnSend = false, false
		n.setRate(1)
		if !n.up {
			s.restart(n)
		}
	}
	s.probe = &actorClient{id: len(s.clients) + 1, s: s, rng: s.rng.Fork(), probe: true}
	s.probe.scheduleNext(0)
}

func (s *ActorSim) onAck(c *actorClient, index uint64) {
	if c.probe && s.probeIndex == 0 {
		s.probeIndex = index
		s.checkLive()
	}
}

func (s *ActorSim) checkLive() {
	l := s.currentLeader()
	if l == nil {
		return
	}
	for _, id := range voters(l.membership()) {
		n := s.node(id)
		if n == nil || !n.up || n.sm.kv.appliedIndex < s.probeIndex {
			return
		}
	}
	s.live = true
	s.stats.LivenessAfter = s.q.Now() - s.calmAt
	s.trace.Add(s.q.Now(), 0, "LIVE: probe write at %d applied on every voter after %v", s.probeIndex, s.stats.LivenessAfter)
}

func (s *ActorSim) crashAndRestart(n *actorNode, rng *Rand) {
	if s.stopClients {
		return
	}
	n.crash()
	inc := n.incarnation
	s.q.After(rng.Duration(0, 2*time.Second), func() {
		if !n.up && n.incarnation == inc {
			s.restart(n)
		}
	})
}

func (s *ActorSim) restart(n *actorNode) {
	s.stats.Restarts++
	if err := n.start(); err != nil {
		s.fail(err)
	}
}

func (s *ActorSim) describeNodes() string {
	var parts []string
	for _, n := range s.nodes {
		m := n.metrics()
		if m == nil {
			parts = append(parts, fmt.Sprintf("n%d down", n.id))
			continue
		}
		parts = append(parts, fmt.Sprintf("n%d %s t%d leader=%d commit=%d applied=%d last=%d voters=%v",
			n.id, strings.TrimPrefix(m.GetRole().String(), "ROLE_"), m.GetTerm(), m.GetLeaderId(), m.GetCommitIndex(),
			n.sm.kv.appliedIndex, m.GetLastLogIndex(), voters(m.GetMembership())))
	}
	return strings.Join(parts, "; ")
}

// scheduleFaults draws the fault period's injections, as the core mode does.
func (s *ActorSim) scheduleFaults() {
	if s.cfg.Plan.Any() {
		s.cfg.Plan.schedule(s.rng.Fork(), s.cfg.FaultTime, s.q, s.inject)
	}
}

func (s *ActorSim) inject(kind FaultKind, rng *Rand) {
	if s.stopClients {
		return
	}
	s.stats.Faults.Injected[kind]++
	now := s.q.Now()
	ids := make([]uint64, len(s.nodes))
	for i, n := range s.nodes {
		ids[i] = n.id
	}
	victim := s.node(Pick(rng, ids))
	if l := s.currentLeader(); l != nil && rng.Chance(0.5) {
		victim = l
	}
	if (netFaults{plan: s.cfg.Plan, q: s.q, net: s.net, trace: s.trace, counts: &s.stats.Faults}).start(kind, rng, victim.id, ids) {
		return
	}
	switch kind {
	case FaultCrash:
		if !victim.up {
			return
		}
		switch rng.Intn(3) {
		case 0:
			victim.crashOnWrite = true
			s.trace.Add(now, victim.id, "crash armed for the next write")
		case 1:
			victim.crashOnSend = true
			victim.crashOnSendType = ""
			if rng.Chance(0.5) {
				victim.crashOnSendType = (&messages.VoteResponse{}).ProtoReflect().Descriptor().FullName()
			}
			s.trace.Add(now, victim.id, "crash armed for the next %s sent", cmp.Or(string(victim.crashOnSendType), "message"))
		default:
			s.crashAndRestart(victim, rng)
		}
	case FaultPause:
		d := rng.Duration(50*time.Millisecond, 2*time.Second)
		victim.pausedUntil = max(victim.pausedUntil, now+d)
		s.trace.Add(now, victim.id, "pause for %v", d)
	case FaultClockSkew:
		scale := Pick(rng, []float64{0.25, 0.5, 2, 3})
		victim.setRate(scale)
		s.trace.Add(now, victim.id, "clock runs at x%.2f", scale)
		s.q.After(rng.Duration(200*time.Millisecond, 3*time.Second), func() { victim.setRate(1) })
	case FaultClockJump:
		if !victim.up {
			return
		}
		d := time.Duration(rng.Between(1, 3*s.cfg.ElectionTicks)) * s.cfg.Tick
		s.trace.Add(now, victim.id, "clock jumps %v", d)
		victim.jump(d)
	}
}

func protoMarshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}
