package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/lni/dragonboat/v3"
	"github.com/lni/dragonboat/v3/config"
	"github.com/lni/dragonboat/v3/logger"
	transport "github.com/lni/dragonboat/v3/plugin/chan"
	sm "github.com/lni/dragonboat/v3/statemachine"
	gvfs "github.com/lni/goutils/vfs"
)

// dragonboatCluster runs three dragonboat v3 NodeHosts in this process, one
// Raft cluster (shard) with a replica on each.
//
// durable: dragonboat's default LogDB (its Pebble-based store, which writes
// every Raft update batch with Sync: true) on the local disk and its default
// TCP transport on loopback.
//
// minimal: the same LogDB on dragonboat's in-memory filesystem (syncs do
// nothing) and its in-process channel transport (plugin/chan).
//
// A write is SyncPropose with a no-op session on the leader's NodeHost: it
// returns once the entry is committed and applied there.
type dragonboatCluster struct {
	hosts []*dragonboat.NodeHost
}

const dbClusterID = 1

func startDragonboat(ctx context.Context, mode, dir string) (*dragonboatCluster, error) {
	for _, pkg := range []string{"dragonboat", "raft", "rsm", "transport", "logdb", "raftpb", "config", "settings", "pebblekv", "server", "tools", "raft-mt", "LogDB"} {
		logger.GetLogger(pkg).SetLevel(logger.ERROR)
	}
	durable := mode == "durable"
	const n = 3
	members := map[uint64]string{}
	for i := range n {
		if durable {
			addr, err := freeLoopbackAddr()
			if err != nil {
				return nil, err
			}
			members[uint64(i+1)] = addr
		} else {
			members[uint64(i+1)] = fmt.Sprintf("node-%d:1", i+1)
		}
	}
	c := &dragonboatCluster{}
	memfs := gvfs.NewMem()
	for i := range n {
		id := uint64(i + 1)
		nhc := config.NodeHostConfig{
			NodeHostDir:    filepath.Join(dir, fmt.Sprintf("dragonboat-%d", id)),
			WALDir:         filepath.Join(dir, fmt.Sprintf("dragonboat-%d", id), "wal"),
			RTTMillisecond: 10,
			RaftAddress:    members[id],
		}
		if !durable {
			nhc.Expert.FS = memfs
			nhc.Expert.TransportFactory = &chanTransport{}
		}
		nh, err := dragonboat.NewNodeHost(nhc)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("dragonboat: node host %d: %w", id, err)
		}
		c.hosts = append(c.hosts, nh)
		rc := config.Config{
			NodeID:             id,
			ClusterID:          dbClusterID,
			ElectionRTT:        20,
			HeartbeatRTT:       2,
			CheckQuorum:        true,
			SnapshotEntries:    0, // no snapshots in a benchmark run
			CompactionOverhead: 0,
		}
		if err := nh.StartCluster(members, false, func(uint64, uint64) sm.IStateMachine { return &dbSM{} }, rc); err != nil {
			c.Close()
			return nil, fmt.Errorf("dragonboat: start replica %d: %w", id, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.leader() == nil {
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Close()
			return nil, errors.New("dragonboat: no leader elected within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (c *dragonboatCluster) leader() *dragonboat.NodeHost {
	for i, nh := range c.hosts {
		lead, ok, err := nh.GetLeaderID(dbClusterID)
		if err == nil && ok && lead == uint64(i+1) {
			return nh
		}
	}
	return nil
}

func (c *dragonboatCluster) Write(ctx context.Context, _ int, payload []byte) error {
	nh := c.leader()
	if nh == nil {
		return errors.New("dragonboat: no leader")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := nh.SyncPropose(ctx, nh.GetNoOPSession(dbClusterID), payload)
	return err
}

func (c *dragonboatCluster) Counters() (int64, int64, bool) { return 0, 0, false }

func (c *dragonboatCluster) Close() error {
	for _, nh := range c.hosts {
		nh.Stop()
	}
	return nil
}

// chanTransport is dragonboat's in-process transport; its factory's own
// Validate panics ("not suppose to be called"), so addresses are checked here.
type chanTransport struct{ transport.ChanTransportFactory }

func (*chanTransport) Validate(addr string) bool { return addr != "" }

type dbSM struct{ n uint64 }

func (s *dbSM) Update(data []byte) (sm.Result, error) {
	s.n++
	applied.Add(1)
	return sm.Result{Value: s.n}, nil
}

func (s *dbSM) Lookup(any) (any, error) { return s.n, nil }

func (s *dbSM) SaveSnapshot(io.Writer, sm.ISnapshotFileCollection, <-chan struct{}) error {
	return nil
}

func (s *dbSM) RecoverFromSnapshot(io.Reader, []sm.SnapshotFile, <-chan struct{}) error {
	return nil
}

func (s *dbSM) Close() error { return nil }
