package actors

import (
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
	work chan func()
	quit chan struct{}
	once sync.Once
	// started counts the workers started, for tests.
	started atomic.Int64
}

// workerIdle is how long a worker waits for another run before it exits:
// far longer than the gaps between runs of a node under load, shorter than
// the default tick.
const workerIdle = 50 * time.Millisecond

// poolThroughput is how many messages a mailbox run handles before it
// yields its worker (protoactor's default).
const poolThroughput = 300

func newWorkerPool() *workerPool {
	return &workerPool{work: make(chan func()), quit: make(chan struct{})}
}

// Schedule hands fn to an idle worker, or starts one when none is idle.
func (p *workerPool) Schedule(fn func()) {
	select {
	case p.work <- fn:
	default:
		p.started.Add(1)
		go p.run(fn)
	}
}

// Throughput implements actor.Dispatcher.
func (p *workerPool) Throughput() int { return poolThroughput }

func (p *workerPool) run(fn func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(workerIdle)
		select {
		case fn = <-p.work:
		case <-idle.C:
			return
		case <-p.quit:
			return
		}
	}
}

// close makes idle workers exit; runs scheduled later still run, each on a
// goroutine of its own that exits after it.
func (p *workerPool) close() { p.once.Do(func() { close(p.quit) }) }
