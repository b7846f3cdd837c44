//go:build raftor_mutation

package sim

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestMutationCaught proves the simulator's checks have teeth: built with
// -tags raftor_mutation and RAFTOR_MUTATION naming a bug that core can
// re-introduce (figure8: commit by counting replicas of an old-term entry;
// vote_persist: answer a vote before it is durable), seeds run in order
// until one breaks a safety property. The test fails if none of RAFTOR_SIM_SEEDS seeds
// (default 5000) catches the bug, and reports which seed caught it first.
//
//	RAFTOR_MUTATION=figure8 go test -tags raftor_mutation ./cluster/sim -run TestMutationCaught -v
//
// RAFTOR_SIM_MODE=actors runs the actor mode (RunActors) instead.
func TestMutationCaught(t *testing.T) {
	mut := os.Getenv("RAFTOR_MUTATION")
	if mut == "" {
		t.Skip("set RAFTOR_MUTATION=figure8 or vote_persist")
	}
	limit := uint64(5000)
	if s := os.Getenv("RAFTOR_SIM_SEEDS"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v == 0 {
			t.Fatalf("RAFTOR_SIM_SEEDS=%q is not a positive number", s)
		}
		limit = v
	}
	// RAFTOR_SIM_OUTCOMES_ONLY=1 leaves out the direct check of the commit
	// rule, to see how soon the bug shows in what users see.
	outcomesOnly := os.Getenv("RAFTOR_SIM_OUTCOMES_ONLY") != ""
	run, test := Run, "TestSim"
	if os.Getenv("RAFTOR_SIM_MODE") == "actors" {
		run, test = RunActors, "TestActorSim"
	}
	start := time.Now()
	// Workers take seeds in order; the lowest failing seed is the answer,
	// so every seed below the first failure found is still run.
	var (
		mu      sync.Mutex
		next    uint64 = 1
		first   *Result
		workers = runtime.GOMAXPROCS(0)
		wg      sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				seed := next
				next++
				done := seed > limit || (first != nil && seed > first.Seed)
				mu.Unlock()
				if done {
					return
				}
				res := run(seed, Options{OutcomesOnly: outcomesOnly})
				// Only a broken safety property counts: a run that merely
				// stalls may stall for reasons of its own.
				var v *Violation
				if errors.As(res.Err, &v) && v.Property != PropLiveness {
					mu.Lock()
					if first == nil || seed < first.Seed {
						first = res
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		t.Fatalf("mutation %s survived %d seeds (%v)", mut, limit, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("outcome checks only: %v", outcomesOnly)
	t.Logf("mutation %s caught by seed %d (the %dth seed tried) in %v: %v",
		mut, first.Seed, first.Seed, time.Since(start).Round(time.Millisecond), first.Err)
	t.Logf("replay: RAFTOR_MUTATION=%s RAFTOR_SIM_SEED=%d go test -tags raftor_mutation ./cluster/sim -run '^%s$' -v", mut, first.Seed, test)
}
