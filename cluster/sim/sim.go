package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// Config is a run's shape, drawn from the seed by RandomConfig.
type Config struct {
	// Voters is the size of the founding configuration (1 to 7); Spares
	// more nodes start empty and may be added by membership changes.
	Voters, Spares int
	Tick           time.Duration
	ElectionTicks  int
	PreVote        bool
	CheckQuorum    bool
	// SnapshotEntries and SnapshotTrailing are the cores' snapshot policy.
	SnapshotEntries, SnapshotTrailing uint64
	// Clients issue key-value operations on Keys keys.
	Clients, Keys int
	// Membership enables membership changes in the admin workload.
	Membership bool
	// Replication limits, small so that batching, windows, storage reads
	// and chunked snapshots all happen.
	MaxAppendEntries   int
	MaxInflight        int
	SnapshotChunkBytes uint64
	CacheBytes         uint64
	// FaultTime is how long faults are injected; then the network heals,
	// every node runs, and the cluster has CalmBound to make progress.
	FaultTime, CalmBound time.Duration
	Plan                 FaultPlan
}

// RandomConfig draws a run's shape from rng.
func RandomConfig(rng *Rand) Config {
	c := Config{
		Voters:        Pick(rng, []int{1, 2, 3, 3, 3, 4, 5, 5, 6, 7}),
		Tick:          10 * time.Millisecond,
		ElectionTicks: 10,
		PreVote:       rng.Chance(0.8),
		CheckQuorum:   rng.Chance(0.8),
		Clients:       rng.Between(1, 5),
		Keys:          rng.Between(1, 4),
		Membership:    rng.Chance(0.6),
		FaultTime:     rng.Duration(2*time.Second, 6*time.Second),
		CalmBound:     10 * time.Second,
	}
	c.Spares = rng.Between(0, 7-c.Voters)
	c.MaxAppendEntries = Pick(rng, []int{1, 4, 64})
	c.MaxInflight = Pick(rng, []int{1, 4, 16})
	c.SnapshotChunkBytes = Pick(rng, []uint64{64, 512, 4096})
	c.CacheBytes = Pick(rng, []uint64{256, 4096, 1 << 20})
	if rng.Chance(0.7) {
		c.SnapshotEntries = Pick(rng, []uint64{10, 30, 100})
		c.SnapshotTrailing = Pick(rng, []uint64{1, 5, 20})
	}
	c.Plan = RandomFaultPlan(rng)
	return c
}

func (c Config) String() string {
	var kinds []string
	for k := FaultKind(0); k < numFaultKinds; k++ {
		if c.Plan.Enabled[k] {
			kinds = append(kinds, k.String())
		}
	}
	return fmt.Sprintf("voters=%d spares=%d prevote=%v checkquorum=%v snapshot=%d/%d clients=%d keys=%d membership=%v append=%d window=%d chunk=%d cache=%d faults=%v for %v",
		c.Voters, c.Spares, c.PreVote, c.CheckQuorum, c.SnapshotEntries, c.SnapshotTrailing,
		c.Clients, c.Keys, c.Membership, c.MaxAppendEntries, c.MaxInflight, c.SnapshotChunkBytes, c.CacheBytes, kinds, c.FaultTime)
}

// Stats counts what a run did.
type Stats struct {
	Steps                                  uint64
	SimTime                                time.Duration
	Ops, WritesAcked, ReadsOK, Unknown     uint64
	AdminRequests, MembershipChanges       uint64
	Transfers, Snapshots, SnapshotInstalls uint64
	Restarts                               uint64
	LivenessAfter                          time.Duration
	Faults                                 FaultCounts
	HistoryCheck                           history.Counts
}

// Result is the outcome of one run.
type Result struct {
	Seed   uint64
	Config Config
	Stats  Stats
	// Err is the first violation, nil for a good run.
	Err error
	// Trace holds the last events of the run.
	Trace *Trace
	// History is the run's client history.
	History *history.Recorder
	// Linearizability is the history check (nil if the run failed earlier).
	Linearizability *history.Result
}

// Options tunes a run beyond what the seed decides.
type Options struct {
	// TraceSize is how many trace records to keep (0: 4000).
	TraceSize int
	// Config, if set, replaces the seed's choice of shape.
	Config *Config
	// OutcomesOnly checks only properties users see (see
	// Checker.OutcomesOnly).
	OutcomesOnly bool
}

// Sim is one simulation run.
type Sim struct {
	seed      uint64
	cfg       Config
	rng       *Rand
	q         *Queue
	net       *Network
	trace     *Trace
	checker   *Checker
	hist      *history.Recorder
	nodes     []*Node
	clusterID string
	stats     Stats
	failure   error

	handles    map[core.Handle]*clientOp
	admins     map[core.Handle]*adminOp
	nextHandle core.Handle
	clients    []*client
	admin      *admin

	// stopClients ends the workload (the probe client keeps going).
	stopClients bool
	calmAt      time.Duration
	probe       *client
	probeIndex  uint64
	live        bool
	views       []NodeView
}

// Run runs the simulation of seed.
func Run(seed uint64, opts Options) *Result {
	s := newSim(seed, opts)
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

func newSim(seed uint64, opts Options) *Sim {
	rng := NewRand(seed)
	cfg := RandomConfig(rng.Fork())
	if opts.Config != nil {
		cfg = *opts.Config
	}
	size := opts.TraceSize
	if size == 0 {
		size = 4000
	}
	s := &Sim{
		seed: seed, cfg: cfg, rng: rng, q: &Queue{}, trace: NewTrace(size),
		checker: NewChecker(), hist: history.NewRecorder(), clusterID: "sim",
		handles: map[core.Handle]*clientOp{}, admins: map[core.Handle]*adminOp{},
	}
	s.checker.OutcomesOnly = opts.OutcomesOnly
	s.net = NewNetwork(s.q, rng.Fork(), s.trace, s.deliver)
	return s
}

func (s *Sim) coreConfig(id uint64) core.Config {
	return core.Config{
		ClusterID:        s.clusterID,
		GroupID:          1,
		ID:               id,
		ElectionTicks:    s.cfg.ElectionTicks,
		HeartbeatTicks:   1,
		PreVote:          s.cfg.PreVote,
		CheckQuorum:      s.cfg.CheckQuorum,
		SnapshotEntries:  s.cfg.SnapshotEntries,
		SnapshotTrailing: s.cfg.SnapshotTrailing,
		MaxAppendEntries: max(s.cfg.MaxAppendEntries, 1),
	}
}

func (s *Sim) node(id uint64) *Node {
	if id == 0 || id > uint64(len(s.nodes)) {
		return nil
	}
	return s.nodes[id-1]
}

// fail records the first violation; the run stops after the current step.
func (s *Sim) fail(err error) {
	if s.failure == nil {
		s.failure = err
		s.trace.Add(s.q.Now(), 0, "FAILURE: %v", err)
	}
}

func (s *Sim) deliver(from, to uint64, msg any) bool {
	n := s.node(to)
	if n == nil {
		return false
	}
	return n.deliver(from, msg)
}

func (s *Sim) newHandle(op *clientOp) core.Handle {
	s.nextHandle++
	s.handles[s.nextHandle] = op
	return s.nextHandle
}

func (s *Sim) newAdminHandle(op *adminOp) core.Handle {
	s.nextHandle++
	s.admins[s.nextHandle] = op
	return s.nextHandle
}

// respond carries a response from node n to whoever waits on h. Clients sit
// next to their node: a response from a node that crashed before it arrives
// is lost.
func (s *Sim) respond(n *Node, h core.Handle, msg proto.Message) {
	inc := n.incarnation
	s.q.After(s.rng.Duration(0, 100*time.Microsecond), func() {
		if !n.up || n.incarnation != inc {
			return
		}
		if op, ok := s.handles[h]; ok {
			delete(s.handles, h)
			if op.done || op.handle != h {
				return
			}
			op.c.answer(op, n, msg)
			return
		}
		if op, ok := s.admins[h]; ok {
			delete(s.admins, h)
			s.admin.answer(op, n, msg)
		}
	})
}

func (s *Sim) currentLeader() *Node {
	var best *Node
	var bestTerm uint64
	for _, n := range s.nodes {
		if !n.up || n.core == nil {
			continue
		}
		st := n.core.Status()
		if st.Role == messages.Role_ROLE_LEADER && st.Term >= bestTerm {
			best, bestTerm = n, st.Term
		}
	}
	return best
}

func (s *Sim) run() {
	defer func() {
		// A panic in the code under test is a failure of the run, reported
		// with its seed like any other.
		if r := recover(); r != nil {
			s.fail(fmt.Errorf("panic: %v", r))
		}
		s.stats.SimTime = s.q.Now()
		s.stats.Faults.Net = s.net.Stats
		for _, n := range s.nodes {
			s.stats.Faults.LostWrites += n.disk.Stats.LostWrites
		}
	}()
	total := s.cfg.Voters + s.cfg.Spares
	founders := &messages.Membership{Addresses: map[uint64]string{}}
	for id := uint64(1); id <= uint64(total); id++ {
		n := newNode(s, id)
		s.nodes = append(s.nodes, n)
		if id <= uint64(s.cfg.Voters) {
			founders.Voters = append(founders.Voters, id)
			founders.Addresses[id] = addr(id)
		}
	}
	s.trace.Add(0, 0, "seed %d: %s", s.seed, s.cfg)
	for _, n := range s.nodes {
		if err := n.start(); err != nil {
			s.fail(err)
			return
		}
	}
	// Every founder is initialized with the same membership.
	for _, id := range founders.Voters {
		n := s.node(id)
		op := &adminOp{what: "initialize"}
		h := s.newAdminHandle(op)
		n.coreMB.post(clientReq{h: h, msg: &messages.InitializeRequest{Membership: proto.Clone(founders).(*messages.Membership)}})
	}
	s.admin = &admin{s: s, rng: s.rng.Fork()}
	for i := 0; i < s.cfg.Clients; i++ {
		c := &client{id: i + 1, s: s, rng: s.rng.Fork()}
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
	}
	if s.failure == nil && !s.live {
		s.fail(violation(PropLiveness, "no write committed and applied on every voter within %v of the faults stopping (%s)", s.cfg.CalmBound, s.describeNodes()))
	}
}

// observe runs the invariant checks after a step.
func (s *Sim) observe() {
	if s.failure != nil {
		return
	}
	// Only nodes a step touched can have changed; the checker keeps what
	// it learned from the others.
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

// calm ends the fault period: the network heals, every node runs at the
// normal pace, crashed nodes restart. From here the cluster must commit and
// apply a new write on every voter within CalmBound.
func (s *Sim) calm() {
	s.trace.Add(s.q.Now(), 0, "CALM: faults stop")
	s.stopClients = true
	s.net.Heal()
	s.net.SetFaults(CalmNet)
	for _, n := range s.nodes {
		n.pausedUntil = 0
		n.crashOnWrite = false
		n.tickEvery = s.cfg.Tick
		if !n.up {
			s.restart(n)
		}
	}
	s.probe = &client{id: len(s.clients) + 1, s: s, rng: s.rng.Fork(), probe: true}
	s.probe.scheduleNext(0)
}

// onAck is told of every acknowledged write; the first one of the liveness
// probe sets the index every voter must reach.
func (s *Sim) onAck(c *client, index uint64) {
	if c.probe && s.probeIndex == 0 {
		s.probeIndex = index
		s.checkLive()
	}
}

// checkLive ends the run once the probe write is applied on every voter of
// the leader's configuration.
func (s *Sim) checkLive() {
	l := s.currentLeader()
	if l == nil {
		return
	}
	for _, id := range voters(l.membership()) {
		n := s.node(id)
		if n == nil || !n.up || n.sm.appliedIndex < s.probeIndex {
			return
		}
	}
	s.live = true
	s.stats.LivenessAfter = s.q.Now() - s.calmAt
	s.trace.Add(s.q.Now(), 0, "LIVE: probe write at %d applied on every voter after %v", s.probeIndex, s.stats.LivenessAfter)
}

// crashAndRestart crashes n, keeping keep of its unsynced writes, and
// restarts it a while later (calm restarts it at the latest).
func (s *Sim) crashAndRestart(n *Node, keep int, rng *Rand) {
	if s.stopClients {
		return
	}
	n.crash(keep)
	inc := n.incarnation
	s.q.After(rng.Duration(0, 2*time.Second), func() {
		if !n.up && n.incarnation == inc {
			s.restart(n)
		}
	})
}

func (s *Sim) restart(n *Node) {
	s.stats.Restarts++
	if err := n.start(); err != nil {
		s.fail(err)
	}
}

func (s *Sim) describeNodes() string {
	var parts []string
	for _, n := range s.nodes {
		if !n.up {
			parts = append(parts, fmt.Sprintf("n%d down", n.id))
			continue
		}
		st := n.core.Status()
		parts = append(parts, fmt.Sprintf("n%d %s t%d commit=%d applied=%d durable=%d last=%d voters=%v",
			n.id, strings.TrimPrefix(st.Role.String(), "ROLE_"), st.Term, st.Commit, n.sm.appliedIndex, st.Durable, st.LastIndex, voters(st.Membership)))
	}
	return strings.Join(parts, "; ")
}

// scheduleFaults draws the fault period's injections.
func (s *Sim) scheduleFaults() {
	if s.cfg.Plan.Any() {
		s.cfg.Plan.schedule(s.rng.Fork(), s.cfg.FaultTime, s.q, s.inject)
	}
}

// inject starts one fault; its end is scheduled too (never after calm,
// which ends everything anyway).
func (s *Sim) inject(kind FaultKind, rng *Rand) {
	if s.stopClients {
		return
	}
	s.stats.Faults.Injected[kind]++
	now := s.q.Now()
	ids := make([]uint64, len(s.nodes))
	for i, n := range s.nodes {
		ids[i] = n.id
	}
	// Faults strike the leader half the time: leader changes are where Raft
	// bugs live (figure 8 needs several in a row).
	victim := s.node(Pick(rng, ids))
	if l := s.currentLeader(); l != nil && rng.Chance(0.5) {
		victim = l
	}
	if (netFaults{plan: s.cfg.Plan, q: s.q, net: s.net, trace: s.trace, counts: &s.stats.Faults}).start(kind, rng, victim.id, ids) {
		return
	}
	switch kind {
	case FaultCrash:
		n := victim
		if !n.up {
			return
		}
		if rng.Chance(0.5) {
			// Crash at the node's next disk write, before it is synced.
			n.crashOnWrite = true
			s.trace.Add(now, n.id, "crash armed for the next write")
			return
		}
		s.crashAndRestart(n, rng.Between(0, n.disk.Unsynced()), rng)
	case FaultPause:
		n := victim
		d := rng.Duration(50*time.Millisecond, 2*time.Second)
		n.pausedUntil = max(n.pausedUntil, now+d)
		s.trace.Add(now, n.id, "pause for %v", d)
	case FaultClockSkew:
		n := victim
		scale := Pick(rng, []float64{0.25, 0.5, 2, 3})
		n.tickEvery = time.Duration(float64(s.cfg.Tick) / scale)
		s.trace.Add(now, n.id, "clock runs at x%.2f", scale)
		s.q.After(rng.Duration(200*time.Millisecond, 3*time.Second), func() {
			n.tickEvery = s.cfg.Tick
		})
	case FaultClockJump:
		n := victim
		if !n.up {
			return
		}
		k := rng.Between(1, 3*s.cfg.ElectionTicks)
		s.trace.Add(now, n.id, "clock jumps %d ticks", k)
		for i := 0; i < k; i++ {
			n.coreMB.post(tick{})
		}
	}
}

func without(ids []uint64, x uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		if id != x {
			out = append(out, id)
		}
	}
	return out
}
