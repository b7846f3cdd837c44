package clustertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// Options configures a test cluster. Zero values take the defaults in the
// comments.
type Options struct {
	// Nodes is the number of founding voters, IDs 1..Nodes. Default 3.
	Nodes int
	// ClusterID names the cluster. Default "clustertest".
	ClusterID string
	// TickInterval, ElectionTicks and HeartbeatTicks set every node's
	// clock. Defaults 20ms, 10 and 2: elections within 200-400ms.
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// Configure adjusts each node's configuration after the harness filled
	// it in (snapshot policy, limits, pre-vote...). It must not replace
	// Dispatcher, Clock or Address, which the harness's faults rely on.
	Configure func(id uint64, c *actors.Config)
	// NewStateMachine opens a node's state machine in dir on fs, for users
	// testing their own. Default: store/kvsm, which the key-value
	// operations (Put, Get, CAS, Delete, the load) need.
	NewStateMachine func(fs vfs.FS, dir string) (store.StateMachine, error)
	// Dir, when set, keeps each node's Pebble stores on the real file
	// system under Dir/node-ID instead of on an in-memory disk: for runs
	// whose data would not fit in memory, or that should pay for real
	// fsyncs. Crash then kills a node the way a killed process dies: the
	// disk keeps every write, synced or not (the operating system's cache
	// survives), so it cannot show the loss of unsynced writes.
	Dir string
	// Seed drives the network's random faults. Default: from the clock,
	// logged so a run can be repeated.
	Seed uint64
	// SkipFinalCheck turns off the checks run when the test ends (see
	// Check).
	SkipFinalCheck bool
	// Logger receives the nodes' log lines. Default: discarded, or debug
	// lines on stderr when RAFTOR_TEST_LOG is set.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.ClusterID == "" {
		o.ClusterID = "clustertest"
	}
	if o.TickInterval == 0 {
		o.TickInterval = 20 * time.Millisecond
	}
	if o.ElectionTicks == 0 {
		o.ElectionTicks = 10
	}
	if o.HeartbeatTicks == 0 {
		o.HeartbeatTicks = 2
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Logger == nil {
		if os.Getenv("RAFTOR_TEST_LOG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			o.Logger = slog.New(slog.DiscardHandler)
		}
	}
	return o
}

// Options returns the cluster's options, defaults applied.
func (c *Cluster) Options() Options { return c.opts }

// ElectionTimeout is the nodes' minimum election timeout.
func (c *Cluster) ElectionTimeout() time.Duration {
	return time.Duration(c.opts.ElectionTicks) * c.opts.TickInterval
}

// Cluster is a Raftor cluster whose nodes each run in their own protoactor
// actor system, talking over protoactor remote on loopback, each with its own
// Pebble store and state machine on its own in-memory, crashable file
// system. Its methods are safe for concurrent use; the ones that wait take a
// context and give up at its deadline.
type Cluster struct {
	t    testing.TB
	opts Options
	net  *network
	hist *history.Recorder

	mu      sync.Mutex
	nodes   map[uint64]*Node
	nextID  uint64
	dead    []*incarnation // crashed incarnations, released at the end
	checked bool

	clients atomic.Int64
	safety  safety
	// panics counts Node calls that panicked (see guardCall).
	panics    atomic.Int64
	lastPanic atomic.Value
}

// nodeState is where a node is in its life.
type nodeState int

const (
	stateUp nodeState = iota
	statePaused
	stateCrashed
	stateStopped
	stateRemoved
)

func (s nodeState) String() string {
	return [...]string{"up", "paused", "crashed", "stopped", "removed"}[s]
}

// Node is one node of the cluster, across its restarts: its ID, its address
// (kept across restarts, as the membership names it) and its file system.
type Node struct {
	c    *Cluster
	id   uint64
	addr string

	mu sync.Mutex
	fs *vfs.MemFS
	// root is the node's directory on the real file system with
	// Options.Dir; fs is nil then.
	root     string
	inc      *incarnation
	state    nodeState
	restarts int
}

// incarnation is one run of a node: an actor system, a remote, a store, a
// state machine and the Raftor node on them.
type incarnation struct {
	system *actor.ActorSystem
	remote *remote.Remote
	gate   *gate
	st     *store.PebbleStore
	sm     store.StateMachine
	kv     *kvsm.SM // nil with a custom state machine
	raft   *actors.Node
	// ctx ends when the incarnation crashes or stops: calls through it
	// return at once instead of waiting for their deadline.
	ctx    context.Context
	cancel context.CancelFunc
}

// New starts a cluster of opts.Nodes voters and initializes it. When the
// test ends it runs Check (unless the test failed or SkipFinalCheck is set)
// and stops every node; on failure it logs every node's state and where
// the client history was written.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	opts = opts.withDefaults()
	c := &Cluster{t: t, opts: opts, net: newNetwork(opts.Seed), hist: history.NewRecorder(), nodes: map[uint64]*Node{}}
	c.safety.init()
	t.Cleanup(c.finish)
	t.Logf("clustertest: %d nodes, network seed %d", opts.Nodes, opts.Seed)
	m := &messages.Membership{Addresses: map[uint64]string{}}
	for i := 0; i < opts.Nodes; i++ {
		n, err := c.StartNode()
		if err != nil {
			t.Fatalf("clustertest: %v", err)
		}
		m.Voters = append(m.Voters, n.id)
		m.Addresses[n.id] = n.addr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Node(1).Raft().Initialize(ctx, m); err != nil {
		c.Fatalf("initialize: %v", err)
	}
	return c
}

// StartNode starts a new, empty node that belongs to no configuration yet
// (AddLearner makes it one). It returns once the node listens.
func (c *Cluster) StartNode() (*Node, error) {
	c.mu.Lock()
	c.nextID++
	n := &Node{c: c, id: c.nextID, addr: "127.0.0.1:0"}
	if c.opts.Dir != "" {
		n.root = filepath.Join(c.opts.Dir, fmt.Sprintf("node-%d", n.id))
	} else {
		n.fs = vfs.NewCrashableMem()
	}
	c.nodes[n.id] = n
	c.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.startLocked(); err != nil {
		n.state = stateStopped
		return nil, fmt.Errorf("start node %d: %w", n.id, err)
	}
	return n, nil
}

// startLocked starts an incarnation on n's file system and address.
func (n *Node) startLocked() (err error) {
	c := n.c
	o := c.opts
	inc := &incarnation{gate: &gate{}}
	inc.ctx, inc.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			inc.release()
		}
	}()
	inc.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	// A restarted node takes its old port back; the kernel may need a
	// moment to release it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		inc.remote, err = remote.Start(inc.system, remote.Config{Address: n.addr, Inbound: c.net.inbound(n.id)})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	n.addr = inc.remote.Address()
	c.net.register(n.addr, n.id)
	fs, logDir, smDir := n.disk()
	if n.root != "" {
		if err := os.MkdirAll(n.root, 0o755); err != nil {
			return err
		}
	}
	inc.st, err = store.OpenPebble(logDir, store.PebbleOptions{
		Options: store.Options{ClusterID: o.ClusterID, NodeID: n.id, Incarnation: n.id}, FS: fs, Logger: o.Logger})
	if err != nil {
		return err
	}
	if o.NewStateMachine != nil {
		inc.sm, err = o.NewStateMachine(fs, smDir)
	} else {
		inc.kv, err = kvsm.Open(smDir, kvsm.Options{FS: fs, Logger: o.Logger})
		inc.sm = inc.kv
	}
	if err != nil {
		return err
	}
	cfg := actors.Config{
		ClusterID: o.ClusterID, NodeID: n.id, Address: n.addr,
		TickInterval: o.TickInterval, ElectionTicks: o.ElectionTicks, HeartbeatTicks: o.HeartbeatTicks,
		Logger: o.Logger,
	}
	if o.Configure != nil {
		o.Configure(n.id, &cfg)
	}
	cfg.Dispatcher, cfg.Clock, cfg.Address = inc.gate, inc.gate, n.addr
	inc.raft, err = actors.Start(inc.system, cfg, &recordingSM{StateMachine: inc.sm, c: c, id: n.id}, inc.st)
	if err != nil {
		return err
	}
	n.inc, n.state = inc, stateUp
	return nil
}

// disk returns the node's file system and the directories of its log and
// state machine on it.
func (n *Node) disk() (fs vfs.FS, logDir, smDir string) {
	if n.fs != nil {
		return n.fs, "log", "sm"
	}
	return vfs.Default, filepath.Join(n.root, "log"), filepath.Join(n.root, "sm")
}

// kill makes the incarnation dead at once: no mailbox run or timer of it
// runs again, its calls return, and its remote stops listening and drops its
// connections.
func (inc *incarnation) kill() {
	inc.gate.kill()
	inc.cancel()
	if inc.remote != nil {
		inc.remote.Protoactor().Shutdown(false)
	}
}

// release frees what a dead or stopped incarnation still holds.
func (inc *incarnation) release() {
	inc.cancel()
	if inc.remote != nil {
		shutdownRemote(inc.remote)
	}
	if inc.sm != nil {
		if cl, ok := inc.sm.(interface{ Close() error }); ok {
			_ = cl.Close()
		}
	}
	if inc.st != nil {
		_ = inc.st.Close()
	}
	if inc.system != nil && !inc.system.IsStopped() {
		inc.system.Shutdown()
	}
}

// shutdownRemote stops a remote for good: the server at once, so that the
// port is free and peers see the node gone; then protoactor's endpoints,
// on a goroutine of their own. That graceful part can wait about 10 s for
// an endpoint writer still dialling a peer, and it panics (a send on a
// closed channel) when an inbound stream ended with an error, as one does
// when a peer crashed; the panic is recovered there.
func shutdownRemote(r *remote.Remote) {
	pr := r.Protoactor()
	pr.Shutdown(false)
	go func() {
		defer func() { _ = recover() }()
		pr.Shutdown(true)
	}()
}

// Node returns node id; it fails the test for an ID the cluster never had.
func (c *Cluster) Node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil {
		c.t.Fatalf("clustertest: no node %d", id)
	}
	return n
}

// IDs returns every node's ID, in order, whatever its state.
func (c *Cluster) IDs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Up returns the IDs of the nodes that run and are not paused.
func (c *Cluster) Up() []uint64 {
	var ids []uint64
	for _, id := range c.IDs() {
		if c.Node(id).IsUp() {
			ids = append(ids, id)
		}
	}
	return ids
}

// ID returns the node's ID.
func (n *Node) ID() uint64 { return n.id }

// Address returns the node's remote address.
func (n *Node) Address() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// IsUp reports whether the node runs and is not paused.
func (n *Node) IsUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state == stateUp
}

// Raft returns the running Raftor node, nil while the node is down.
func (n *Node) Raft() *actors.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return nil
	}
	return n.inc.raft
}

// KV returns the node's key-value state machine, nil while the node is down
// or with a custom state machine.
func (n *Node) KV() *kvsm.SM {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return nil
	}
	return n.inc.kv
}

// StateMachine returns the node's state machine, nil while the node is down.
func (n *Node) StateMachine() store.StateMachine {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return nil
	}
	return n.inc.sm
}

// System returns the node's actor system, nil while the node is down.
func (n *Node) System() *actor.ActorSystem {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return nil
	}
	return n.inc.system
}

// Remote returns the node's remote, nil while the node is down.
func (n *Node) Remote() *remote.Remote {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return nil
	}
	return n.inc.remote
}

// Metrics returns the node's latest metrics; a down node's are empty but
// for its ID.
func (n *Node) Metrics() *messages.Metrics {
	if r := n.Raft(); r != nil {
		return r.Metrics()
	}
	return &messages.Metrics{NodeId: n.id}
}

// Restarts counts the node's restarts.
func (n *Node) Restarts() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.restarts
}

func (n *Node) incarnation() *incarnation {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inc
}

// Crash kills node id the way a power cut would: its actors never run
// again, its connections drop, and its disk keeps only what was synced
// (Pebble's crashable file system). Restart brings it back on that disk.
func (c *Cluster) Crash(id uint64) {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc == nil {
		return
	}
	inc := n.inc
	inc.kill()
	n.inc, n.state = nil, stateCrashed
	if n.fs == nil {
		// On a real disk the next incarnation opens the same directories:
		// the dead one must let go of Pebble's locks first.
		inc.release()
		return
	}
	n.fs = n.fs.CrashClone(vfs.CrashCloneCfg{})
	c.mu.Lock()
	c.dead = append(c.dead, inc)
	c.mu.Unlock()
}

// Stop stops node id cleanly: requests are answered, the store and the
// state machine are closed. Restart brings it back.
func (c *Cluster) Stop(id uint64) {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked(stateStopped)
}

func (n *Node) stopLocked(to nodeState) {
	if n.inc == nil {
		if n.state != stateRemoved {
			n.state = to
		}
		return
	}
	inc := n.inc
	inc.gate.resume()
	_ = inc.raft.Stop()
	inc.release()
	n.inc, n.state = nil, to
}

// Restart starts a crashed or stopped node again on its disk and address.
func (c *Cluster) Restart(id uint64) {
	c.t.Helper()
	n := c.Node(id)
	err := func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		switch {
		case n.inc != nil:
			return nil
		case n.state == stateRemoved:
			return errors.New("it was removed from the cluster")
		}
		n.restarts++
		return n.startLocked()
	}()
	if err != nil {
		c.Fatalf("restart node %d: %v", id, err)
	}
}

// Pause freezes node id: its actors and timers stop running while messages
// keep arriving in its mailboxes, as for a process stopped with SIGSTOP.
func (c *Cluster) Pause(id uint64) {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc != nil && n.state == stateUp {
		n.inc.gate.pause()
		n.state = statePaused
	}
}

// Resume lets a paused node run again; it handles what queued meanwhile.
func (c *Cluster) Resume(id uint64) {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inc != nil && n.state == statePaused {
		n.state = stateUp
		n.inc.gate.resume()
	}
}

// ---- the network ----

// Cut drops every message from node from to node to (one direction).
func (c *Cluster) Cut(from, to uint64) { c.net.setCut(from, to, true) }

// Uncut restores the link from -> to.
func (c *Cluster) Uncut(from, to uint64) { c.net.setCut(from, to, false) }

// Disconnect cuts a and b from each other in both directions.
func (c *Cluster) Disconnect(a, b uint64) {
	c.Cut(a, b)
	c.Cut(b, a)
}

// Isolate cuts node id from every other node, both ways.
func (c *Cluster) Isolate(id uint64) {
	for _, other := range c.IDs() {
		if other != id {
			c.Disconnect(id, other)
		}
	}
}

// Split partitions the network: nodes talk only within their group, and a
// node in no group talks to no one. Split adds to the cuts in place.
func (c *Cluster) Split(groups ...[]uint64) { c.net.split(c.IDs(), groups) }

// Unreliable makes the network drop dropShare and duplicate dupShare of
// Raftor's messages, and delay each by up to maxDelay (so messages
// overtake each other). Zeros make it reliable again.
func (c *Cluster) Unreliable(dropShare, dupShare float64, maxDelay time.Duration) {
	c.net.setUnreliable(dropShare, dupShare, maxDelay)
}

// Heal removes every cut and makes the network reliable again.
func (c *Cluster) Heal() { c.net.heal() }

// ---- leaders ----

// errNoLeader is returned when no leader emerged before the deadline.
var errNoLeader = errors.New("clustertest: no leader")

// leaderNow returns the node that leads with the support of a majority of
// its configuration's voters, as their metrics say: they report it as
// leader in its term. 0 when there is none.
func (c *Cluster) leaderNow() uint64 {
	metrics := map[uint64]*messages.Metrics{}
	for _, id := range c.Up() {
		metrics[id] = c.Node(id).Metrics()
	}
	var best uint64
	var bestTerm uint64
	for id, m := range metrics {
		if m.GetRole() != messages.Role_ROLE_LEADER || m.GetTerm() < bestTerm {
			continue
		}
		voters := m.GetMembership().GetVoters()
		support := 0
		for _, v := range voters {
			if vm := metrics[v]; vm != nil && vm.GetTerm() == m.GetTerm() && vm.GetLeaderId() == id {
				support++
			}
		}
		if support*2 > len(voters) && (best == 0 || m.GetTerm() > bestTerm) {
			best, bestTerm = id, m.GetTerm()
		}
	}
	return best
}

// Leader waits for a leader that a majority of its voters follow, and
// returns its ID.
func (c *Cluster) Leader(ctx context.Context) (uint64, error) {
	var id uint64
	err := c.waitCtx(ctx, func() bool { id = c.leaderNow(); return id != 0 })
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errNoLeader, err)
	}
	return id, nil
}

// WaitLeader is Leader that fails the test when no leader emerges within d.
func (c *Cluster) WaitLeader(d time.Duration) uint64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	id, err := c.Leader(ctx)
	if err != nil {
		c.Fatalf("no leader within %v", d)
	}
	return id
}

// WaitApplied waits until the leader committed everything in its log and
// every running member of its configuration applied it.
func (c *Cluster) WaitApplied(d time.Duration) {
	c.t.Helper()
	c.Eventually(d, "every running member applying the leader's commit index", func() bool {
		l := c.leaderNow()
		if l == 0 {
			return false
		}
		lm := c.Node(l).Metrics()
		// The leader's own blank entry must have committed: before that
		// its commit index says nothing about the others.
		commit := lm.GetCommitIndex()
		if commit == 0 || commit < lm.GetLastLogIndex() {
			return false
		}
		for _, id := range c.members(l) {
			if c.Node(id).Metrics().GetAppliedIndex() < commit {
				return false
			}
		}
		return true
	})
}

// Leaders returns every running node that considers itself leader, with its
// term: during a partition an old leader may still believe it leads.
func (c *Cluster) Leaders() map[uint64]uint64 {
	out := map[uint64]uint64{}
	for _, id := range c.IDs() {
		if r := c.Node(id).Raft(); r != nil {
			if m := r.Metrics(); m.GetRole() == messages.Role_ROLE_LEADER {
				out[id] = m.GetTerm()
			}
		}
	}
	return out
}

// ---- waiting ----

// pollInterval is how often conditions are re-evaluated.
const pollInterval = 5 * time.Millisecond

func (c *Cluster) waitCtx(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Eventually waits up to d for cond, and fails the test with the cluster's
// state when it does not hold by then.
func (c *Cluster) Eventually(d time.Duration, what string, cond func() bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := c.waitCtx(ctx, cond); err != nil {
		c.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Consistently checks cond every few milliseconds for d, and fails the test
// with the cluster's state the first time it does not hold. It is for
// properties that must hold for a while (no leader without a quorum), which
// no single observation can show.
func (c *Cluster) Consistently(d time.Duration, what string, cond func() bool) {
	c.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !cond() {
			c.Fatalf("%s no longer holds", what)
		}
		time.Sleep(pollInterval)
	}
}

// ---- reporting ----

// Fatalf fails the test with the message, every node's state and the
// client history, written to a file whose path it prints.
func (c *Cluster) Fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("clustertest: %s\n%s", fmt.Sprintf(format, args...), c.Dump())
	if path := c.saveHistory(); path != "" {
		c.t.Logf("clustertest: client history: %s", path)
	}
	c.t.Fatalf("clustertest: "+format, args...)
}

// Dump describes every node (state, role, term, leader, log, commit,
// applied, membership and, on a leader, each peer's progress) and the
// network.
func (c *Cluster) Dump() string {
	var b strings.Builder
	for _, id := range c.IDs() {
		n := c.Node(id)
		n.mu.Lock()
		state, addr, restarts := n.state, n.addr, n.restarts
		n.mu.Unlock()
		fmt.Fprintf(&b, "node %d %s at %s (restarts %d)", id, state, addr, restarts)
		if r := n.Raft(); r != nil {
			m := r.Metrics()
			fmt.Fprintf(&b, ": %s term %d leader %d, log %d..%d (last term %d), commit %d, applied %d, snapshot %d, pending writes %d\n",
				strings.TrimPrefix(m.GetRole().String(), "ROLE_"), m.GetTerm(), m.GetLeaderId(), m.GetFirstLogIndex(),
				m.GetLastLogIndex(), m.GetLastLogTerm(), m.GetCommitIndex(), m.GetAppliedIndex(), m.GetSnapshotIndex(), m.GetPendingWrites())
			mem := m.GetMembership()
			fmt.Fprintf(&b, "    membership at %d: voters %v outgoing %v learners %v\n", m.GetMembershipIndex(),
				mem.GetVoters(), mem.GetVotersOutgoing(), mem.GetLearners())
			peers := m.GetPeers()
			sort.Slice(peers, func(i, j int) bool { return peers[i].GetNodeId() < peers[j].GetNodeId() })
			for _, p := range peers {
				fmt.Fprintf(&b, "    peer %d: match %d next %d %s lag %d reachable %v last contact %dms inflight %d\n",
					p.GetNodeId(), p.GetMatchIndex(), p.GetNextIndex(), strings.TrimPrefix(p.GetMode().String(), "REPLICATION_MODE_"),
					p.GetLag(), p.GetReachable(), p.GetLastContactMs(), p.GetInflightEntries())
			}
			if e := m.GetStorageError(); e != nil {
				fmt.Fprintf(&b, "    storage error: %v\n", e)
			}
		} else {
			b.WriteString("\n")
		}
	}
	b.WriteString(c.net.String())
	cnt := c.hist.Counts()
	fmt.Fprintf(&b, "\nhistory: %d operations (%d writes, %d reads; %d unknown, %d failed, %d pending)",
		cnt.Ops, cnt.Writes, cnt.Reads, cnt.Unknown, cnt.Failed, cnt.Pending)
	return b.String()
}

// finish runs at the end of the test: the final checks, the report of a
// failure, and the stop of every node. The stop is deferred so that it
// happens even when a check fails the test (which ends this function).
func (c *Cluster) finish() {
	defer c.teardown()
	c.mu.Lock()
	checked := c.checked
	c.mu.Unlock()
	if n := c.panics.Load(); n > 0 {
		// No panic may cross Raftor's API.
		c.t.Errorf("clustertest: %d Node call(s) panicked in the caller's goroutine (outcome recorded as unknown); last: %v", n, c.lastPanic.Load())
	}
	if c.t.Failed() {
		c.t.Logf("clustertest: cluster at the end of the failed test:\n%s", c.Dump())
		if path := c.saveHistory(); path != "" {
			c.t.Logf("clustertest: client history: %s", path)
		}
		return
	}
	if !checked && !c.opts.SkipFinalCheck {
		c.check(false)
	}
}

// teardown stops every node and releases every incarnation.
func (c *Cluster) teardown() {
	var wg sync.WaitGroup
	for _, id := range c.IDs() {
		n := c.Node(id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.inc != nil {
				// Kill first so that no node waits on another one that
				// is already gone.
				n.inc.kill()
				n.inc.release()
				n.inc = nil
			}
		}()
	}
	wg.Wait()
	c.mu.Lock()
	dead := c.dead
	c.dead = nil
	c.mu.Unlock()
	for _, inc := range dead {
		inc.release()
	}
}
