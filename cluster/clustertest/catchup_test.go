//go:build !race

package clustertest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster/clustertest"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store/kvsm"
)

// How long a new node takes to catch up, from a snapshot or from the log.
// By default a small version runs as a test that catch-up works and leaves
// the new node with the leader's data; RAFTOR_CATCHUP_BENCH=1 runs the
// full size, on the real disk, and logs the figures (docs/benchmarks.md,
// "Catching up a new node"):
//
//	RAFTOR_CATCHUP_BENCH=1 go test -run TestCatchUp -v ./cluster/clustertest
//
// RAFTOR_CATCHUP_DIR chooses the directory of the full run's stores
// (default: the test's temporary directory).
func TestCatchUp(t *testing.T) {
	bench := os.Getenv("RAFTOR_CATCHUP_BENCH") != ""
	type catchUpCase struct {
		name string
		// values values of valueBytes bytes each, under distinct keys.
		values, valueBytes int
		// snapshot: the leader snapshots and purges its log before the
		// new node joins, which must then install the snapshot; without
		// it snapshots are off and the new node must replicate the log.
		snapshot bool
	}
	cases := []catchUpCase{
		{name: "from a snapshot", values: 2000, valueBytes: 1024, snapshot: true},
		{name: "from the log", values: 2000, valueBytes: 128},
	}
	if bench {
		cases = []catchUpCase{
			{name: "from a snapshot of 100 MB", values: 100_000, valueBytes: 1024, snapshot: true},
			{name: "from 100,000 log entries", values: 100_000, valueBytes: 128},
		}
		// Other work on the machine shows in every figure: say how much.
		load, _ := os.ReadFile("/proc/loadavg")
		fields := strings.Fields(string(load))
		t.Logf("machine: %d CPUs, %s/%s, %s; load average %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH,
			runtime.Version(), strings.Join(fields[:min(3, len(fields))], " "))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := bound(t, 20*time.Minute)
			wire := newWireCounter()
			opts := clustertest.Options{Nodes: 3, Configure: func(id uint64, cfg *actors.Config) {
				// Snapshots only when the test asks for one.
				cfg.SnapshotEntries, cfg.SnapshotBytes = 0, 0
				cfg.Peers = wire.resolver(id, cfg.ClusterID, cfg.GroupID)
			}}
			if bench {
				// Production timing (actors.Config's defaults): its
				// replication timeout (5 ticks) decides when a slow chunk
				// is sent again.
				opts.TickInterval, opts.ElectionTicks, opts.HeartbeatTicks = 100*time.Millisecond, 10, 1
				opts.Dir = os.Getenv("RAFTOR_CATCHUP_DIR")
				if opts.Dir == "" {
					opts.Dir = t.TempDir()
				} else {
					opts.Dir, _ = os.MkdirTemp(opts.Dir, "catchup-")
					t.Cleanup(func() { _ = os.RemoveAll(opts.Dir) })
				}
			}
			c := clustertest.New(t, opts)
			for _, id := range c.IDs() {
				wire.attach(id, c.Node(id).System())
			}
			l := c.WaitLeader(20 * time.Second)

			start := time.Now()
			fillBytes := fill(ctx, t, c, tc.values, tc.valueBytes)
			fillTime := time.Since(start)
			t.Logf("filled %d values of %d bytes (%.1f MB of values) in %v: %.0f writes/s, %.1f MB/s",
				tc.values, tc.valueBytes, float64(fillBytes)/1e6, fillTime.Round(time.Millisecond),
				float64(tc.values)/fillTime.Seconds(), float64(fillBytes)/1e6/fillTime.Seconds())
			l = c.WaitLeader(20 * time.Second)
			c.WaitApplied(2 * time.Minute)

			var meta *messages.SnapshotMeta
			if tc.snapshot {
				start = time.Now()
				var err error
				meta, err = c.Node(l).Raft().TriggerSnapshot(ctx)
				if err != nil {
					c.Fatalf("snapshot: %v", err)
				}
				c.Eventually(time.Minute, "the leader purging its log", func() bool {
					return c.Node(l).Metrics().GetFirstLogIndex() > 1
				})
				t.Logf("snapshot at index %d, %.1f MB, built and the log purged in %v",
					meta.GetIndex(), float64(meta.GetSize())/1e6, time.Since(start).Round(time.Millisecond))
			}

			n, err := c.StartNode()
			if err != nil {
				c.Fatalf("start the new node: %v", err)
			}
			wire.attach(n.ID(), n.System())
			target := c.Node(l).Metrics().GetCommitIndex()
			start = time.Now()
			if err := c.AddLearner(ctx, n.ID()); err != nil {
				c.Fatalf("add learner %d: %v", n.ID(), err)
			}
			added := time.Since(start)
			// The change itself committed after target: wait for the
			// learner to apply the leader's commit index as it is now.
			target = max(target, c.Node(l).Metrics().GetCommitIndex())
			// Milestones on the way: the learner received the log up to
			// target, and it applied the snapshot's index (its state
			// machine was restored from the snapshot).
			var holds, restored time.Duration
			c.Eventually(10*time.Minute, "the learner applying the leader's commit index", func() bool {
				m := n.Metrics()
				if holds == 0 && m.GetLastLogIndex() >= target {
					holds = time.Since(start)
				}
				if restored == 0 && meta != nil && m.GetAppliedIndex() >= meta.GetIndex() {
					restored = time.Since(start)
				}
				return m.GetAppliedIndex() >= target
			})
			caughtUp := time.Since(start)
			t.Logf("the learner had received the log up to %d after %v", target, holds.Round(time.Millisecond))
			if meta != nil {
				t.Logf("the learner's state machine was restored from the snapshot after %v", restored.Round(time.Millisecond))
			}

			sent := wire.to(n.ID())
			m := n.Metrics()
			t.Logf("learner %d caught up to index %d in %v (AddLearner returned after %v): %s",
				n.ID(), target, caughtUp.Round(time.Millisecond), added.Round(time.Millisecond), sent)
			installs := sent.count["InstallSnapshotRequest"]
			if tc.snapshot {
				if m.GetSnapshotIndex() < meta.GetIndex() || installs == 0 {
					c.Fatalf("the learner caught up without the snapshot: snapshot index %d (leader's %d), %d install_snapshot chunks",
						m.GetSnapshotIndex(), meta.GetIndex(), installs)
				}
				t.Logf("snapshot: %d chunks (%d resent), %.1f MB sent, %.1f MB/s; chunks %s", installs, sent.resent,
					float64(sent.bytes["InstallSnapshotRequest"])/1e6, float64(sent.bytes["InstallSnapshotRequest"])/1e6/caughtUp.Seconds(),
					sent.span("InstallSnapshotRequest", start))
			} else {
				if m.GetSnapshotIndex() != 0 || installs != 0 {
					c.Fatalf("the learner installed a snapshot (index %d, %d chunks); it should have replicated the log", m.GetSnapshotIndex(), installs)
				}
				t.Logf("log: %d entries in %d appends, %.1f MB sent; %.0f entries/s, %.1f MB/s; appends %s", sent.entries,
					sent.count["AppendEntriesRequest"], float64(sent.bytes["AppendEntriesRequest"])/1e6,
					float64(sent.entries)/caughtUp.Seconds(), float64(sent.bytes["AppendEntriesRequest"])/1e6/caughtUp.Seconds(),
					sent.span("AppendEntriesRequest", start))
				if sent.entries < uint64(tc.values) {
					c.Fatalf("the learner got %d entries, fewer than the %d written", sent.entries, tc.values)
				}
			}

			// The learner holds the leader's data: spot checks here, and
			// Check compares every member's whole state.
			lkv, nkv := c.Node(l).KV(), n.KV()
			for _, i := range []int{0, tc.values / 2, tc.values - 1} {
				key := []byte(fmt.Sprintf("key-%07d", i))
				want, _, _ := lkv.Get(key)
				got, ok, err := nkv.Get(key)
				if err != nil || !ok || !bytes.Equal(got, want) || len(got) != tc.valueBytes {
					c.Fatalf("learner's %s: %d bytes, found %v, err %v; the leader holds %d bytes", key, len(got), ok, err, len(want))
				}
			}
			c.Check()
		})
	}
}

// fill writes values values of valueBytes random bytes, under keys
// key-0000000 and up, through the leader with many writers at once (the
// leader batches them), bypassing the client history: the linearizability
// checker has nothing to learn from blind writes to distinct keys, and
// 100,000 of them would only slow it down. It returns the bytes of values
// written.
func fill(ctx context.Context, t *testing.T, c *clustertest.Cluster, values, valueBytes int) int64 {
	t.Helper()
	const writers = 256
	var next atomic.Int64
	var (
		mu     sync.Mutex
		failed error
	)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			value := make([]byte, valueBytes)
			for {
				i := int(next.Add(1)) - 1
				if i >= values || ctx.Err() != nil {
					return
				}
				for k := range value {
					value[k] = byte(rng.Uint32())
				}
				cmd := kvsm.Encode(kvsm.Put([]byte(fmt.Sprintf("key-%07d", i)), value))
				if err := writeRetrying(ctx, c, cmd); err != nil {
					mu.Lock()
					failed = errors.Join(failed, fmt.Errorf("write %d: %w", i, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		c.Fatalf("fill: %v", failed)
	}
	return int64(values) * int64(valueBytes)
}

// writeRetrying writes cmd through the current leader until it is
// acknowledged. A retry after an unknown outcome may apply the put twice,
// which leaves the same value.
func writeRetrying(ctx context.Context, c *clustertest.Cluster, cmd []byte) error {
	for {
		l, err := c.Leader(ctx)
		if err != nil {
			return err
		}
		r := c.Node(l).Raft()
		if r == nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = r.ClientWrite(wctx, cmd)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return err
		case errors.Is(err, actors.ErrOverloaded):
			time.Sleep(time.Millisecond) // the leader's queue is full: back off a little
		case errors.Is(err, actors.ErrNotLeader), errors.Is(err, actors.ErrTimeout), errors.Is(err, actors.ErrUnknownOutcome),
			errors.Is(err, actors.ErrTransferInProgress), errors.Is(err, actors.ErrStopped), errors.Is(err, actors.ErrAborted):
		default:
			return err
		}
	}
}

// wireCounter counts what each node sends to each other node: every wire
// message goes through a forwarding actor in the sender's actor system
// that adds up its encoded size by type, and then forwards it unchanged
// (with its sender, so that the answer goes straight back).
type wireCounter struct {
	mu      sync.Mutex
	systems map[uint64]*actor.ActorSystem
	proxies map[string]*actor.PID // by sender ID and target PID
	sent    map[uint64]*wireStats // by destination
	chunks  map[string]bool       // snapshot chunks sent, by destination, snapshot and offset
	highest map[uint64]uint64     // the highest entry index sent, by destination
}

type wireStats struct {
	count, bytes map[string]uint64
	// first and last are when the first and the latest message of each
	// type went out.
	first, last map[string]time.Time
	// entries counts the log entries in AppendEntriesRequests, and
	// resentEntries those of them at or below an index sent before;
	// resent counts the snapshot chunks sent again (the same snapshot at
	// the same offset).
	entries, resentEntries, resent uint64
}

func (s wireStats) String() string {
	var types []string
	for t := range s.count {
		types = append(types, t)
	}
	sort.Strings(types)
	var b strings.Builder
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s (%.2f MB)", s.count[t], t, float64(s.bytes[t])/1e6)
	}
	if s.resent > 0 {
		fmt.Fprintf(&b, ", %d snapshot chunks resent", s.resent)
	}
	if s.resentEntries > 0 {
		fmt.Fprintf(&b, ", %d entries resent", s.resentEntries)
	}
	return b.String()
}

func newWireStats() wireStats {
	return wireStats{count: map[string]uint64{}, bytes: map[string]uint64{}, first: map[string]time.Time{}, last: map[string]time.Time{}}
}

// span says when the messages of type typ went out, from start.
func (s wireStats) span(typ string, start time.Time) string {
	if s.count[typ] == 0 {
		return "none sent"
	}
	return fmt.Sprintf("first sent after %v, last after %v", s.first[typ].Sub(start).Round(time.Millisecond), s.last[typ].Sub(start).Round(time.Millisecond))
}

func newWireCounter() *wireCounter {
	return &wireCounter{systems: map[uint64]*actor.ActorSystem{}, proxies: map[string]*actor.PID{},
		sent: map[uint64]*wireStats{}, chunks: map[string]bool{}, highest: map[uint64]uint64{}}
}

// attach gives node id's actor system to the counter; until then the
// node's messages go out directly, uncounted.
func (w *wireCounter) attach(id uint64, sys *actor.ActorSystem) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.systems[id] = sys
}

// to returns what was sent to node id so far.
func (w *wireCounter) to(id uint64) wireStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := newWireStats()
	if s := w.sent[id]; s != nil {
		maps.Copy(out.count, s.count)
		maps.Copy(out.bytes, s.bytes)
		maps.Copy(out.first, s.first)
		maps.Copy(out.last, s.last)
		out.entries, out.resentEntries, out.resent = s.entries, s.resentEntries, s.resent
	}
	return out
}

func (w *wireCounter) note(to uint64, msg proto.Message) {
	name := string(msg.ProtoReflect().Descriptor().Name())
	size := uint64(proto.Size(msg))
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sent[to]
	if s == nil {
		ns := newWireStats()
		s = &ns
		w.sent[to] = s
	}
	now := time.Now()
	if s.count[name] == 0 {
		s.first[name] = now
	}
	s.last[name] = now
	s.count[name]++
	s.bytes[name] += size
	switch m := msg.(type) {
	case *messages.AppendEntriesRequest:
		s.entries += uint64(len(m.GetEntries()))
		for _, e := range m.GetEntries() {
			if e.GetIndex() <= w.highest[to] {
				s.resentEntries++
			}
		}
		if n := len(m.GetEntries()); n > 0 {
			w.highest[to] = max(w.highest[to], m.GetEntries()[n-1].GetIndex())
		}
	case *messages.InstallSnapshotRequest:
		key := fmt.Sprintf("%d/%s/%d", to, m.GetMeta().GetId(), m.GetOffset())
		if w.chunks[key] {
			s.resent++
		}
		w.chunks[key] = true
	}
}

// resolver is node self's PeerResolver: the peer's RaftCore by its
// well-known name, behind a counting proxy once self's system is attached.
// It takes no lock of the cluster's, since RaftCore calls it from its
// mailbox.
func (w *wireCounter) resolver(self uint64, clusterID string, groupID uint64) actors.PeerResolver {
	if groupID == 0 {
		groupID = 1 // the default Start applies
	}
	return actors.PeerResolverFunc(func(peer uint64, address string) *actor.PID {
		target := actor.NewPID(address, actors.CoreName(clusterID, groupID, peer))
		w.mu.Lock()
		defer w.mu.Unlock()
		sys := w.systems[self]
		if sys == nil || address == "" {
			return target
		}
		key := fmt.Sprintf("%d->%s", self, target)
		if pid := w.proxies[key]; pid != nil {
			return pid
		}
		pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			if m, ok := ctx.Message().(proto.Message); ok {
				w.note(peer, m)
				ctx.Forward(target)
			}
		}))
		w.proxies[key] = pid
		return pid
	})
}

// With Options.Dir the nodes keep their stores on the real disk: a node
// that crashes comes back on its directories (the dead incarnation let go
// of Pebble's locks) with everything it had written.
func TestOnDiskNodesCrashAndRestart(t *testing.T) {
	ctx := bound(t, 60*time.Second)
	dir := t.TempDir()
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Dir: dir})
	l := c.WaitLeader(10 * time.Second)
	for i := 0; i < 10; i++ {
		put(t, ctx, c, l, fmt.Sprintf("k%d", i%3), fmt.Sprintf("v%d", i))
	}
	for _, id := range c.IDs() {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("node-%d", id), "log")); err != nil {
			c.Fatalf("node %d's log is not on disk: %v", id, err)
		}
	}
	f := otherThan(c, l)[0]
	c.WaitApplied(10 * time.Second)
	applied := c.Node(f).Metrics().GetAppliedIndex()
	c.Crash(f)
	put(t, ctx, c, l, "k0", "while down")
	c.Restart(f)
	if a, _ := c.Node(f).StateMachine().LastApplied(); a < applied {
		c.Fatalf("node %d restarted with applied index %d, below the %d it had applied before the crash", f, a, applied)
	}
	c.WaitApplied(20 * time.Second)
	if v, _ := get(t, ctx, c, f, "k0"); v != "while down" {
		c.Fatalf("node %d reads k0=%q after its restart, want the write made while it was down", f, v)
	}
}
