package actors

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every scheduled run runs, also when many are scheduled at once.
func TestWorkerPoolRunsEverySchedule(t *testing.T) {
	p := newWorkerPool()
	defer p.close()
	var wg sync.WaitGroup
	const n = 2000
	wg.Add(n)
	for range n {
		go p.Schedule(wg.Done)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not every scheduled run ran within 20s")
	}
}

// Runs scheduled one after another reuse the worker that ran the previous
// one instead of starting a goroutine each (protoactor's default
// dispatcher starts one per run).
func TestWorkerPoolReusesWorkers(t *testing.T) {
	p := newWorkerPool()
	defer p.close()
	const n = 200
	for range n {
		ran := make(chan struct{})
		p.Schedule(func() { close(ran) })
		<-ran
		// Let the worker get back to waiting for work, as it does between
		// a node's mailbox runs.
		time.Sleep(100 * time.Microsecond)
	}
	if started := p.started.Load(); started > n/4 {
		t.Fatalf("%d runs started %d workers, want most runs on a reused worker", n, started)
	}
}

// Idle workers exit by themselves, and close releases them at once: a
// stopped node, or an idle one, holds no goroutine of the pool.
func TestWorkerPoolReleasesIdleWorkers(t *testing.T) {
	for _, closeIt := range []bool{false, true} {
		p := newWorkerPool()
		var wg sync.WaitGroup
		wg.Add(8)
		for range 8 {
			p.Schedule(func() { time.Sleep(time.Millisecond); wg.Done() })
		}
		wg.Wait()
		if closeIt {
			p.close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for poolWorkers() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("close=%v: %d workers still there after 10s", closeIt, poolWorkers())
			}
			time.Sleep(5 * time.Millisecond)
		}
		p.close()
	}
}

// Under a trickle of runs one after another (the ticks of idle groups)
// the workers of an earlier burst time out: the worker idle the shortest
// time gets each run, so the others stay idle long enough to exit.
func TestWorkerPoolTrickleKeepsFewWorkers(t *testing.T) {
	p := newWorkerPool()
	defer p.close()
	var burst sync.WaitGroup
	burst.Add(20)
	release := make(chan struct{})
	for range 20 {
		p.Schedule(func() { <-release; burst.Done() })
	}
	close(release)
	burst.Wait()
	if started := p.started.Load(); started != 20 {
		t.Fatalf("a burst of 20 blocked runs started %d workers, want 20", started)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ran := make(chan struct{})
		p.Schedule(func() { close(ran) })
		<-ran
		if poolWorkers() <= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still alive after 10s of one run every 2ms, want at most 2", poolWorkers())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// poolWorkers counts the goroutines running a worker of any pool.
func poolWorkers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "actors.(*workerPool).run")
}
