package sim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// defaultSeeds is how many seeds `go test ./...` runs (raceSeeds under the
// race detector).
const (
	defaultSeeds = 300
	raceSeeds    = 40
)

// TestSim runs many seeds (RAFTOR_SIM_SEEDS=N, default 300), or replays one
// (RAFTOR_SIM_SEED=S). A failure names its seed and the command that
// replays it; RAFTOR_SIM_TRACE=1 prints the events that led to it.
func TestSim(t *testing.T) {
	if s := os.Getenv("RAFTOR_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RAFTOR_SIM_SEED=%q: %v", s, err)
		}
		opts := Options{}
		if s := os.Getenv("RAFTOR_SIM_TRACE_SIZE"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v <= 0 {
				t.Fatalf("RAFTOR_SIM_TRACE_SIZE=%q is not a positive number", s)
			}
			opts.TraceSize = v
		}
		res := Run(seed, opts)
		t.Logf("seed %d: %s", seed, res.Config)
		t.Logf("seed %d: %s", seed, summary(res))
		if res.Err != nil {
			reportFailure(t, res)
		}
		return
	}
	n := defaultSeeds
	if raceEnabled {
		n = raceSeeds
	}
	if s := os.Getenv("RAFTOR_SIM_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("RAFTOR_SIM_SEEDS=%q is not a positive number", s)
		}
		n = v
	}
	base := uint64(1)
	if s := os.Getenv("RAFTOR_SIM_BASE"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RAFTOR_SIM_BASE=%q: %v", s, err)
		}
		base = v
	}
	// The simulation allocates a lot of short-lived objects and keeps
	// little: trading memory for less collection work is a clear win.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	start := time.Now()
	var (
		mu       sync.Mutex
		total    Stats
		failures []*Result
		next     atomic.Uint64
		wg       sync.WaitGroup
	)
	// Seeds are independent runs, each on one goroutine, so they spread
	// over the CPUs; each run is deterministic on its own.
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= uint64(n) {
					return
				}
				res := Run(base+i, Options{})
				mu.Lock()
				total.add(res.Stats)
				if res.Err != nil {
					failures = append(failures, res)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds from %d in %v", n, base, time.Since(start).Round(time.Millisecond))
	t.Logf("totals: %s", summaryStats(total))
	t.Logf("faults: %s", total.Faults)
	if len(failures) == 0 {
		return
	}
	sort.Slice(failures, func(i, j int) bool { return failures[i].Seed < failures[j].Seed })
	var seeds []string
	for _, res := range failures {
		seeds = append(seeds, strconv.FormatUint(res.Seed, 10))
	}
	t.Errorf("%d of %d seeds failed: %s", len(failures), n, strings.Join(seeds, " "))
	for i, res := range failures {
		if i == 10 {
			t.Logf("(details of the first 10 failures only)")
			break
		}
		reportFailure(t, res)
	}
}

func (s *Stats) add(o Stats) {
	s.Steps += o.Steps
	s.SimTime += o.SimTime
	s.Ops += o.Ops
	s.WritesAcked += o.WritesAcked
	s.ReadsOK += o.ReadsOK
	s.Unknown += o.Unknown
	s.AdminRequests += o.AdminRequests
	s.MembershipChanges += o.MembershipChanges
	s.Transfers += o.Transfers
	s.Snapshots += o.Snapshots
	s.SnapshotInstalls += o.SnapshotInstalls
	s.Restarts += o.Restarts
	s.LivenessAfter = max(s.LivenessAfter, o.LivenessAfter)
	s.Faults.Add(o.Faults)
}

func summaryStats(s Stats) string {
	return fmt.Sprintf("steps=%d simulated=%v ops=%d writes-acked=%d reads=%d unknown=%d admin=%d membership-changes=%d transfers=%d snapshots=%d installs=%d restarts=%d slowest-recovery=%v",
		s.Steps, s.SimTime.Round(time.Millisecond), s.Ops, s.WritesAcked, s.ReadsOK, s.Unknown, s.AdminRequests,
		s.MembershipChanges, s.Transfers, s.Snapshots, s.SnapshotInstalls, s.Restarts, s.LivenessAfter)
}

func summary(res *Result) string {
	return summaryStats(res.Stats) + "\nfaults: " + res.Stats.Faults.String()
}

// reportFailure prints the seed, the replay command and, on request, the
// trace and a visualization of the history.
func reportFailure(t *testing.T, res *Result) {
	t.Helper()
	reportFailureOf(t, "TestSim", res)
}

// reportFailureOf is reportFailure for the test named test (its replay
// command runs that test).
func reportFailureOf(t *testing.T, test string, res *Result) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "seed %d FAILED: %v\n", res.Seed, res.Err)
	fmt.Fprintf(&b, "config: %s\n", res.Config)
	fmt.Fprintf(&b, "replay: RAFTOR_SIM_SEED=%d go test ./cluster/sim -run '^%s$' -v\n", res.Seed, test)
	if os.Getenv("RAFTOR_SIM_TRACE") != "" {
		fmt.Fprintf(&b, "trace (last %d events):\n", len(res.Trace.Records()))
		res.Trace.WriteTo(&b)
	} else {
		fmt.Fprintf(&b, "(set RAFTOR_SIM_TRACE=1 to print the events that led here)\n")
	}
	if res.Linearizability != nil && !res.Linearizability.OK() {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("raftor-sim-%d.html", res.Seed))
		if err := res.Linearizability.WriteVisualization(path); err == nil {
			fmt.Fprintf(&b, "history visualization: %s\n", path)
		}
	}
	t.Error(b.String())
}
