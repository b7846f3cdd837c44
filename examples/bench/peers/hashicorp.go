package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// hashicorpCluster runs three hashicorp/raft nodes in this process.
//
// durable: raft-boltdb/v2 log and stable stores (bbolt with its default
// NoSync=false: every StoreLogs is one bolt transaction, and every bolt
// commit fdatasyncs), behind raft.LogCache as production users configure it;
// the NetworkTransport over loopback TCP; snapshots in files (never taken in
// a run this short).
//
// minimal: raft.InmemStore and raft.InmemTransport, all in memory.
//
// A write is raft.Apply on the leader; its future resolves once the entry is
// committed and applied to the leader's FSM.
type hashicorpCluster struct {
	nodes   []*raft.Raft
	closes  []func() error
	syncs   atomic.Int64
	synced  atomic.Int64
	durable bool
}

func startHashicorp(ctx context.Context, mode, dir string) (*hashicorpCluster, error) {
	c := &hashicorpCluster{durable: mode == "durable"}
	const n = 3
	ids := make([]raft.ServerID, n)
	trans := make([]raft.Transport, n)
	var servers []raft.Server
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: os.Stderr})

	for i := range n {
		ids[i] = raft.ServerID(fmt.Sprint(i + 1))
		if c.durable {
			t, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 10*time.Second, logger)
			if err != nil {
				c.Close()
				return nil, err
			}
			trans[i] = t
			c.closes = append(c.closes, t.Close)
		} else {
			_, t := raft.NewInmemTransport("")
			trans[i] = t
			c.closes = append(c.closes, t.Close)
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: ids[i], Address: trans[i].LocalAddr()})
	}
	if !c.durable {
		// Every in-memory transport must know every other one.
		for i := range n {
			for j := range n {
				if i != j {
					trans[i].(*raft.InmemTransport).Connect(trans[j].LocalAddr(), trans[j])
				}
			}
		}
	}

	for i := range n {
		conf := raft.DefaultConfig()
		conf.LocalID = ids[i]
		conf.Logger = logger
		// The timeouts stay at their defaults (1 s heartbeat and election
		// timeouts, 500 ms leader lease): with shorter ones a leader on a
		// two-core machine under 256 clients loses its lease and steps down.
		conf.SnapshotThreshold = 1 << 40 // no snapshots in a benchmark run

		var (
			logs   raft.LogStore
			stable raft.StableStore
			snaps  raft.SnapshotStore
		)
		if c.durable {
			d := filepath.Join(dir, fmt.Sprintf("hashicorp-%d", i+1))
			if err := os.MkdirAll(d, 0o755); err != nil {
				c.Close()
				return nil, err
			}
			bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(d, "raft.db")})
			if err != nil {
				c.Close()
				return nil, err
			}
			c.closes = append(c.closes, bolt.Close)
			cache, err := raft.NewLogCache(512, &countingLogStore{LogStore: bolt, syncs: &c.syncs, entries: &c.synced})
			if err != nil {
				c.Close()
				return nil, err
			}
			logs, stable = cache, bolt
			fs, err := raft.NewFileSnapshotStoreWithLogger(d, 1, logger)
			if err != nil {
				c.Close()
				return nil, err
			}
			snaps = fs
		} else {
			mem := raft.NewInmemStore()
			logs, stable, snaps = mem, mem, raft.NewDiscardSnapshotStore()
		}
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, trans[i], raft.Configuration{Servers: servers}); err != nil {
			c.Close()
			return nil, fmt.Errorf("hashicorp: bootstrap node %d: %w", i+1, err)
		}
		r, err := raft.NewRaft(conf, countFSM{}, logs, stable, snaps, trans[i])
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("hashicorp: start node %d: %w", i+1, err)
		}
		c.nodes = append(c.nodes, r)
	}
	return c, c.waitLeader(ctx)
}

func (c *hashicorpCluster) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if c.leader() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("hashicorp: no leader elected within 20s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *hashicorpCluster) leader() *raft.Raft {
	for _, r := range c.nodes {
		if r.State() == raft.Leader {
			return r
		}
	}
	return nil
}

func (c *hashicorpCluster) Write(ctx context.Context, _ int, payload []byte) error {
	r := c.leader()
	if r == nil {
		return errors.New("hashicorp: no leader")
	}
	return r.Apply(payload, 5*time.Second).Error()
}

func (c *hashicorpCluster) Counters() (int64, int64, bool) {
	return c.syncs.Load(), c.synced.Load(), c.durable
}

func (c *hashicorpCluster) Close() error {
	for _, r := range c.nodes {
		r.Shutdown().Error()
	}
	for i := len(c.closes) - 1; i >= 0; i-- {
		c.closes[i]()
	}
	return nil
}

// countingLogStore counts the log writes that reach bbolt: each StoreLogs is
// one bolt transaction, hence one fdatasync.
type countingLogStore struct {
	raft.LogStore
	syncs, entries *atomic.Int64
}

func (s *countingLogStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

func (s *countingLogStore) StoreLogs(logs []*raft.Log) error {
	err := s.LogStore.StoreLogs(logs)
	if err == nil {
		s.syncs.Add(1)
		s.entries.Add(int64(len(logs)))
	}
	return err
}

// countFSM is the state machine: it counts. Every system applies the same
// trivial state machine so that the figures compare the consensus path.
type countFSM struct{}

func (countFSM) Apply(*raft.Log) any { return applied.Add(1) }

func (countFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }

func (countFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}
