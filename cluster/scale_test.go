//go:build !race

package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// countingSM is a light state machine for the scaling figures: it counts
// writes and deduplicates by RequestID like store/kvsm, without a Pebble
// database per group, so the figures are Raftor's cost, not kvsm's.
type countingSM struct {
	mu            sync.Mutex
	applied, term uint64
	last          map[uint64]uint64
	writes        uint64
}

func (s *countingSM) Apply(es []*messages.Entry) ([]store.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Result, len(es))
	for i, e := range es {
		if e.GetIndex() <= s.applied {
			out[i].Skipped = true
			continue
		}
		if r := e.GetRequest(); e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL && r.GetClientId() != 0 {
			if r.GetSequence() > s.last[r.GetClientId()] {
				s.last[r.GetClientId()] = r.GetSequence()
				s.writes++
			}
		}
		s.applied, s.term = e.GetIndex(), e.GetTerm()
	}
	return out, nil
}

func (s *countingSM) Snapshot() (store.StateSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &countingSnap{s.applied, s.term}, nil
}
func (s *countingSM) Restore(r io.Reader) error {
	var idx, term uint64
	if _, err := fmt.Fscan(r, &idx, &term); err != nil {
		return err
	}
	s.mu.Lock()
	s.applied, s.term = idx, term
	s.mu.Unlock()
	return nil
}
func (s *countingSM) LastApplied() (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied, s.term
}

type countingSnap struct{ idx, term uint64 }

func (c *countingSnap) Index() uint64 { return c.idx }
func (c *countingSnap) Term() uint64  { return c.term }
func (c *countingSnap) WriteTo(w io.Writer) (int64, error) {
	n, err := fmt.Fprintln(w, c.idx, c.term)
	return int64(n), err
}
func (c *countingSnap) Close() error { return nil }

func heapInuse() (uint64, int) {
	for range 3 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, runtime.NumGoroutine()
}

// TestGroupScaling measures what a group costs on a three-member cluster
// in one process, idle and busy, and the writes/s of 1, 10 and 100 groups.
// It takes about a minute, so it runs only with RAFTOR_GROUP_BENCH=1:
//
//	RAFTOR_GROUP_BENCH=1 go test -run TestGroupScaling -v ./cluster/
func TestGroupScaling(t *testing.T) {
	if os.Getenv("RAFTOR_GROUP_BENCH") == "" {
		t.Skip("set RAFTOR_GROUP_BENCH=1 to measure group costs")
	}
	sm := func(string, Group) (store.StateMachine, error) { return &countingSM{last: map[uint64]uint64{}}, nil }
	sizes := []int{1, 10, 100}
	if v := os.Getenv("RAFTOR_GROUP_BENCH_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				t.Fatalf("RAFTOR_GROUP_BENCH_SIZES: %q", v)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		t.Run(fmt.Sprintf("groups=%d", n), func(t *testing.T) {
			ms, dir := startCluster(t, clusterOpts{members: 3, groups: n, stateMachine: sm, deferGroups: true,
				node: actors.Config{TickInterval: 100 * time.Millisecond}})
			time.Sleep(time.Second) // let the cluster's gossip settle before the baseline
			heap0, gor0 := heapInuse()
			startGroups(t, ms, dir)
			waitLeaders(t, ms, dir)
			time.Sleep(2 * time.Second) // idle: heartbeats only
			heap1, gor1 := heapInuse()
			if f := os.Getenv("RAFTOR_GROUP_BENCH_GOROUTINES"); f != "" {
				// Where the idle goroutines are: go tool's text format.
				if out, err := os.Create(fmt.Sprintf("%s.%d", f, n)); err == nil {
					_ = pprof.Lookup("goroutine").WriteTo(out, 1)
					out.Close()
				}
			}
			t.Logf("idle: %d groups x 3 replicas: heap +%.1f KiB per group (%.1f KiB per replica), goroutines +%.1f per group",
				n, float64(heap1-heap0)/1024/float64(n), float64(heap1-heap0)/1024/float64(3*n), float64(gor1-gor0)/float64(n))

			// Busy: 64 writers per member, spread over the groups, for 10s; a
			// write in flight at the end is waited for and counted.
			var ok, failed atomic.Uint64
			var busyGor atomic.Int64
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Every member writes all its groups through one shared writer:
			// its Append calls are the member's log syncs.
			batches := func() (n uint64) {
				for _, m := range ms {
					n += m.host.StorageStats().Batches
				}
				return n
			}
			appends := func() (n uint64) {
				for _, m := range ms {
					n += m.host.StorageStats().Appends
				}
				return n
			}
			terms := func() (n uint64) {
				for _, g := range dir.Groups() {
					n += ms[0].host.Node(g.ID).Metrics().GetTerm()
				}
				return n
			}
			b0, a0, t0 := batches(), appends(), terms()
			start := time.Now()
			var wg sync.WaitGroup
			for i, m := range ms {
				for w := range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						g := dir.Groups()[(i*64+w)%n]
						for ctx.Err() == nil {
							wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
							_, err := m.client.WriteRequest(wctx, &messages.GroupWriteRequest{Group: g.Name, Data: []byte("order")})
							wcancel()
							if err == nil {
								ok.Add(1)
							} else if failed.Add(1) <= 3 {
								t.Logf("write to %s failed: %v", g.Name, err)
							}
						}
					}()
				}
			}
			time.Sleep(5 * time.Second)
			busyGor.Store(int64(runtime.NumGoroutine()))
			wg.Wait()
			el := time.Since(start)
			syncs, groupAppends := batches()-b0, appends()-a0
			t.Logf("busy: %d groups: %.0f writes/s (%d ok, %d failed in %v, 192 writers), goroutines while busy %d (idle %d), "+
				"%.0f synced log appends/s per member, %.2f log syncs per write (3 members), %.1f group appends per sync, %d elections",
				n, float64(ok.Load())/el.Seconds(), ok.Load(), failed.Load(), el.Round(time.Millisecond), busyGor.Load(), gor1,
				float64(syncs)/el.Seconds()/float64(len(ms)), float64(syncs)/float64(max(ok.Load(), 1)),
				float64(groupAppends)/float64(max(syncs, 1)), terms()-t0)
		})
	}
}

func waitLeaders(t testing.TB, ms []*member, dir *Directory) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, g := range dir.Groups() {
		for ms[0].host.Leaders().Leader(g.ID) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("group %s has no leader", g.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
