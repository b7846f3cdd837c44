package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
)

// raftorCluster runs three Raftor nodes in this process.
//
// durable: one actor system per node, joined by protoactor remote on
// loopback (remote.Start), each node's log in its own Pebble store
// (store.OpenPebble: entries and hard state in one synced batch per storage
// write, which RaftCore waits for before it counts or acknowledges them).
//
// minimal: one actor system, the three nodes' RaftCores reaching each other
// in-process by name, logs in store.MemStore.
//
// A write is Node.ClientWrite on the leader: it returns once the entry is
// committed and applied to the leader's state machine.
type raftorCluster struct {
	durable bool
	nodes   []*actors.Node
	systems []*actor.ActorSystem
	remotes []*remote.Remote
	stores  []store.Store
	syncs   atomic.Int64
	synced  atomic.Int64
	writes  writeTimes
	// stallsAtReset is what the stores had reported at ResetLogWrites.
	stallsAtReset store.DiskStats
}

const raftorClusterID = "bench"

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}

func startRaftor(ctx context.Context, mode, dir string) (*raftorCluster, error) {
	c := &raftorCluster{durable: mode == "durable"}
	const n = 3
	members := &messages.Membership{Addresses: map[uint64]string{}}
	var shared *actor.ActorSystem
	systemOf := make([]*actor.ActorSystem, n)
	for i := range n {
		id := uint64(i + 1)
		members.Voters = append(members.Voters, id)
		if !c.durable {
			if shared == nil {
				shared = quietSystem()
				c.systems = append(c.systems, shared)
			}
			systemOf[i] = shared
			continue
		}
		sys := quietSystem()
		c.systems = append(c.systems, sys)
		systemOf[i] = sys
		rem, err := remote.Start(sys, remote.Config{Address: "127.0.0.1:0"})
		if err != nil {
			c.Close()
			return nil, err
		}
		c.remotes = append(c.remotes, rem)
		members.Addresses[id] = rem.Address()
	}
	for i := range n {
		id := uint64(i + 1)
		opts := store.Options{ClusterID: raftorClusterID, NodeID: id}
		var (
			st  store.Store
			err error
		)
		if c.durable {
			st, err = store.OpenPebble(filepath.Join(dir, fmt.Sprintf("raftor-%d", id)), store.PebbleOptions{
				Options: opts, Logger: slog.New(slog.DiscardHandler)})
		} else {
			st, err = store.NewMemStore(opts)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		c.stores = append(c.stores, st)
		node, err := actors.Start(systemOf[i], actors.Config{
			ClusterID: raftorClusterID,
			NodeID:    id,
			Address:   members.Addresses[id],
			// The same timing as the etcd driver: 10ms ticks, elections
			// after 200-400ms, heartbeats every 20ms.
			TickInterval:   10 * time.Millisecond,
			ElectionTicks:  20,
			HeartbeatTicks: 2,
			RequestTimeout: 5 * time.Second,
		}, &countingSM{}, &countingStore{Store: st, syncs: &c.syncs, entries: &c.synced, times: &c.writes})
		if err != nil {
			c.Close()
			return nil, err
		}
		c.nodes = append(c.nodes, node)
	}
	if !c.durable {
		members.Addresses = nil
	}
	ictx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.nodes[0].Initialize(ictx, members); err != nil {
		c.Close()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	for c.leader() == nil {
		if ictx.Err() != nil {
			c.Close()
			return nil, errors.New("no leader elected within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, nil
}

func (c *raftorCluster) leader() *actors.Node {
	for _, n := range c.nodes {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *raftorCluster) Write(ctx context.Context, _ int, payload []byte) error {
	n := c.leader()
	if n == nil {
		n = c.nodes[0] // forwards to the leader once there is one
	}
	// No context deadline per write: the node bounds every call by its
	// RequestTimeout (5 s here, set below), as hashicorp's Apply does with its
	// timeout. A context.WithTimeout per write under a cancellable parent
	// cost the clients 7% of the CPU in minimal mode.
	_, err := n.ClientWrite(ctx, payload)
	return err
}

func (c *raftorCluster) Counters() (int64, int64, bool) {
	return c.syncs.Load(), c.synced.Load(), c.durable
}

// ResetLogWrites implements load.LogWriteTimer.
func (c *raftorCluster) ResetLogWrites() {
	c.writes.reset()
	c.stallsAtReset = c.diskStats()
}

// WriteStalls implements load.LogWriteTimer: Pebble's write stalls on the
// three nodes since the reset.
func (c *raftorCluster) WriteStalls() (int64, time.Duration) {
	now := c.diskStats()
	return now.WriteStalls - c.stallsAtReset.WriteStalls, now.WriteStallTime - c.stallsAtReset.WriteStallTime
}

// diskStats sums what the nodes' Pebble stores reported.
func (c *raftorCluster) diskStats() store.DiskStats {
	var sum store.DiskStats
	for _, st := range c.stores {
		if p, ok := st.(*store.PebbleStore); ok {
			d := p.DiskStats()
			sum.WriteStalls += d.WriteStalls
			sum.WriteStallTime += d.WriteStallTime
		}
	}
	return sum
}

// LogWriteP50 implements load.LogWriteTimer: the median time of one
// store Append (one batch, one sync) on any of the three nodes.
func (c *raftorCluster) LogWriteP50() time.Duration {
	s := c.writes.sorted()
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// LogWriteTail implements load.LogWriteTimer: the p99 and the longest of
// the same writes.
func (c *raftorCluster) LogWriteTail() (p99, longest time.Duration) {
	s := c.writes.sorted()
	if len(s) == 0 {
		return 0, 0
	}
	return s[min(len(s)-1, len(s)*99/100)], s[len(s)-1]
}

// writeTimes keeps the durations of the latest log writes (up to a bound,
// so a long run does not grow it without end).
type writeTimes struct {
	mu sync.Mutex
	d  []time.Duration
	n  int
}

const maxWriteTimes = 1 << 16

func (w *writeTimes) add(d time.Duration) {
	w.mu.Lock()
	if len(w.d) < maxWriteTimes {
		w.d = append(w.d, d)
	} else {
		w.d[w.n%maxWriteTimes] = d
	}
	w.n++
	w.mu.Unlock()
}

func (w *writeTimes) reset() {
	w.mu.Lock()
	w.d, w.n = w.d[:0], 0
	w.mu.Unlock()
}

// sorted returns the kept durations in increasing order.
func (w *writeTimes) sorted() []time.Duration {
	w.mu.Lock()
	s := slices.Clone(w.d)
	w.mu.Unlock()
	slices.Sort(s)
	return s
}

func (c *raftorCluster) Close() error {
	for _, n := range c.nodes {
		n.Stop()
	}
	for _, r := range c.remotes {
		r.Shutdown()
	}
	for _, s := range c.systems {
		s.Shutdown()
	}
	for _, st := range c.stores {
		st.Close()
	}
	return nil
}

// countingStore counts the storage writes that reach the log store: each
// Append is one write and one sync (store.LogStore's contract).
type countingStore struct {
	store.Store
	syncs, entries *atomic.Int64
	times          *writeTimes
}

func (s *countingStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	start := time.Now()
	res, err := s.Store.Append(reqs)
	s.times.add(time.Since(start))
	if err == nil {
		s.syncs.Add(1)
		for _, r := range reqs {
			s.entries.Add(int64(len(r.GetEntries())))
		}
	}
	return res, err
}

// countingSM is the benchmark's state machine, the same for every system: it
// counts the entries it applies and keeps nothing else, so the figures
// compare the consensus path, not a storage engine under the state machine.
type countingSM struct {
	mu          sync.Mutex
	index, term uint64
	applied     uint64
}

func (s *countingSM) Apply(entries []*messages.Entry) ([]store.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Result, len(entries))
	for i, e := range entries {
		if e.GetIndex() <= s.index {
			out[i].Skipped = true
			continue
		}
		s.index, s.term = e.GetIndex(), e.GetTerm()
		s.applied++
	}
	return out, nil
}

func (s *countingSM) Snapshot() (store.StateSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return emptySnapshot{s.index, s.term}, nil
}

func (s *countingSM) Restore(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *countingSM) LastApplied() (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index, s.term
}

type emptySnapshot struct{ index, term uint64 }

func (e emptySnapshot) Index() uint64                    { return e.index }
func (e emptySnapshot) Term() uint64                     { return e.term }
func (e emptySnapshot) WriteTo(io.Writer) (int64, error) { return 0, nil }
func (e emptySnapshot) Close() error                     { return nil }
