package actors

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// BenchmarkGroupsOnOneStore measures the writes/s of many one-node groups
// on one Pebble store (real fsyncs), each group with its own writer or all
// of them on one SharedWriter. 8 concurrent writers per group; it reports
// the store's syncs per write. Elections take a second, so run it with a
// fixed count of writes:
//
//	go test -run XXX -bench GroupsOnOneStore -benchtime 5000x ./actors/
func BenchmarkGroupsOnOneStore(b *testing.B) {
	for _, groups := range []int{1, 10, 100} {
		for _, shared := range []bool{false, true} {
			name := fmt.Sprintf("groups=%d/writer=private", groups)
			if shared {
				name = fmt.Sprintf("groups=%d/writer=shared", groups)
			}
			b.Run(name, func(b *testing.B) { benchGroupsOnOneStore(b, groups, shared) })
		}
	}
}

func benchGroupsOnOneStore(b *testing.B, groups int, shared bool) {
	system := quietSystem()
	defer system.Shutdown()
	st, err := store.OpenPebble(b.TempDir(), store.PebbleOptions{
		Options: store.Options{ClusterID: testClusterID, NodeID: 1}, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var sw *SharedWriter
	if shared {
		sw, _ = NewSharedWriter(st, WriterOptions{})
		defer sw.Close()
	}
	nodes := make([]*Node, groups)
	var started sync.WaitGroup
	for g := range nodes {
		started.Add(1)
		go func() {
			defer started.Done()
			nodes[g] = startBenchGroup(b, system, st, sw, uint64(g+1))
		}()
	}
	started.Wait()
	for _, n := range nodes {
		if n == nil {
			b.FailNow()
		}
		defer n.Stop()
	}
	syncs0 := st.Syncs()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g, n := range nodes {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					if _, err := n.ClientWrite(ctxB(b), []byte("order")); err != nil {
						b.Errorf("group %d: %v", g+1, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "writes/s")
	b.ReportMetric(float64(st.Syncs()-syncs0)/float64(b.N), "syncs/write")
}

func startBenchGroup(b *testing.B, system *actor.ActorSystem, st store.Store, sw *SharedWriter, group uint64) *Node {
	cfg := testConfig(1)
	cfg.GroupID, cfg.SharedWriter, cfg.Logger = group, sw, nil
	n, err := Start(system, cfg, &logSM{}, st)
	if err != nil {
		b.Error(err)
		return nil
	}
	if err := n.Initialize(ctxB(b), &messages.Membership{Voters: []uint64{1}}); err != nil {
		b.Error(err)
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			b.Errorf("group %d elected no leader", group)
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}
