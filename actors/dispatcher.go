package actors

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// workerPool is a node's default Dispatcher. protoactor's own dispatcher
// starts a new goroutine for every mailbox run; on Raft's write path that
// is a dozen runs per write, and each new goroutine starts on a small
// stack that RaftCore's handlers outgrow, so the runtime copies stacks on
// most runs. The pool keeps the goroutines that ran a mailbox and hands
// them the next run, so their stacks are already grown. A worker that has
// been idle for workerIdle exits: a busy node keeps a few workers, an idle
// one (a tick every TickInterval, 100ms by default) holds none between its
// ticks, which keeps hundreds of idle groups cheap. Stop releases the rest.
type workerPool struct {
	mu sync.Mutex
	// idle is a stack: the worker that went idle last gets the next run,
	// so under a steady trickle of runs (ticks of many idle groups) one or
	// two workers stay busy and the rest time out. Handing runs out
	// first-come first-served kept every worker alive with a run every
	// few tens of milliseconds each.
	idle   []*worker
	closed bool
	// started counts the workers started, for tests.
	started atomic.Int64
}

type worker struct {
	// next receives the worker's next run; nil tells it to exit. It has
	// room for one, so that Schedule never waits for the worker.
	next chan func()
}

// workerIdle is how long a worker waits for another run before it exits:
// far longer than the gaps between runs of a node under load, shorter than
// the default tick.
const workerIdle = 50 * time.Millisecond

// poolThroughput is how many messages a mailbox run handles before it
// yields its worker (protoactor's default).
const poolThroughput = 300

func newWorkerPool() *workerPool { return &workerPool{} }

// Schedule hands fn to the worker idle the shortest time, or starts one
// when none is idle.
func (p *workerPool) Schedule(fn func()) {
	p.mu.Lock()
	if k := len(p.idle); k > 0 && !p.closed {
		w := p.idle[k-1]
		p.idle[k-1] = nil
		p.idle = p.idle[:k-1]
		p.mu.Unlock()
		w.next <- fn
		return
	}
	p.mu.Unlock()
	p.started.Add(1)
	go p.run(&worker{next: make(chan func(), 1)}, fn)
}

// Throughput implements actor.Dispatcher.
func (p *workerPool) Throughput() int { return poolThroughput }

func (p *workerPool) run(w *worker, fn func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for fn != nil {
		fn()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		idle.Reset(workerIdle)
		select {
		case fn = <-w.next:
		case <-idle.C:
			p.mu.Lock()
			i := slices.Index(p.idle, w)
			if i >= 0 {
				p.idle = slices.Delete(p.idle, i, i+1)
			}
			p.mu.Unlock()
			if i >= 0 {
				return
			}
			// Schedule took this worker off the stack as the timer fired:
			// its run is on the way.
			fn = <-w.next
		}
	}
}

// close makes idle workers exit; runs scheduled later still run, each on a
// goroutine of its own that exits after it.
func (p *workerPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}

// WorkerPool is the node's default dispatcher, for several nodes to
// share: pass it as Config.Dispatcher. cluster.Host gives one to all the
// groups of a member, so that a hundred idle groups keep a few workers
// between them rather than up to one each. The caller closes it after the
// nodes that use it stopped.
type WorkerPool struct{ p *workerPool }

// NewWorkerPool returns a pool with no worker yet.
func NewWorkerPool() *WorkerPool { return &WorkerPool{p: newWorkerPool()} }

// Schedule implements actor.Dispatcher.
func (w *WorkerPool) Schedule(fn func()) { w.p.Schedule(fn) }

// Throughput implements actor.Dispatcher.
func (w *WorkerPool) Throughput() int { return w.p.Throughput() }

// Close makes idle workers exit. A run scheduled later still runs, on a
// goroutine of its own.
func (w *WorkerPool) Close() { w.p.close() }
