package actors

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// BenchmarkClusterWrites measures acknowledged writes per second through
// the leader of a 3-node in-process cluster, with 64 concurrent writers of
// 128-byte commands.
func BenchmarkClusterWrites(b *testing.B) {
	for _, backend := range []string{"memory", "pebble"} {
		b.Run(backend, func(b *testing.B) {
			tc := &testCluster{system: quietSystem(), nodes: map[uint64]*testNode{}, cfg: testConfig}
			defer tc.stopAll()
			m := &messages.Membership{}
			for id := uint64(1); id <= 3; id++ {
				var st store.Store
				var err error
				if backend == "pebble" {
					ps, perr := store.OpenPebble(filepath.Join(b.TempDir(), fmt.Sprint(id)), store.PebbleOptions{
						Options: store.Options{ClusterID: testClusterID, NodeID: id}, Logger: quietLogger()})
					if perr != nil {
						b.Fatal(perr)
					}
					defer ps.Close()
					st = ps
				} else {
					st, err = store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: id})
					if err != nil {
						b.Fatal(err)
					}
				}
				n, err := Start(tc.system, testConfig(id), &logSM{}, st)
				if err != nil {
					b.Fatal(err)
				}
				tc.nodes[id] = &testNode{id: id, node: n}
				m.Voters = append(m.Voters, id)
			}
			ctx := ctxB(b)
			if err := tc.nodes[1].node.Initialize(ctx, m); err != nil {
				b.Fatal(err)
			}
			var l *Node
			deadline := time.Now().Add(20 * time.Second)
			for l == nil {
				for _, n := range tc.nodes {
					if n.node.IsLeader() {
						l = n.node
					}
				}
				if time.Now().After(deadline) {
					b.Fatal("no leader")
				}
				time.Sleep(5 * time.Millisecond)
			}
			payload := make([]byte, 128)
			before := l.StorageStats()
			b.ResetTimer()
			var wg sync.WaitGroup
			var next sync.Mutex
			left := b.N
			for w := 0; w < benchWriters; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						next.Lock()
						if left == 0 {
							next.Unlock()
							return
						}
						left--
						next.Unlock()
						if _, err := l.ClientWrite(ctx, payload); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			after := l.StorageStats()
			if batches := after.Batches - before.Batches; batches > 0 {
				b.ReportMetric(float64(b.N)/float64(batches), "writes/fsync")
			}
		})
	}
}

// benchWriters is the number of concurrent writers of BenchmarkClusterWrites.
var benchWriters = envInt("RAFTOR_BENCH_WRITERS", 64)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
