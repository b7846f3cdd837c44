package clustertest

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
)

// gate is the protoactor Dispatcher and the actors.Clock of one node
// incarnation. It is how the harness freezes a node (Pause: mailbox runs and
// timers are held, messages keep queueing in the mailboxes, as for a
// stopped process) and kills one (Crash: every later mailbox run and timer
// is dropped, so the incarnation never acts again, as for a dead process).
//
// A mailbox run already in progress when the gate closes finishes the
// messages its mailbox holds; protoactor asks the dispatcher again only once
// a mailbox went idle. With Raft's traffic that is a few milliseconds.
type gate struct {
	mu     sync.Mutex
	paused bool
	dead   bool
	held   []func()
}

var (
	_ actor.Dispatcher = (*gate)(nil)
	_ actors.Clock     = (*gate)(nil)
)

// gateThroughput is how many messages a mailbox run takes before it yields
// the processor (protoactor's default).
const gateThroughput = 300

// Schedule implements actor.Dispatcher.
func (g *gate) Schedule(fn func()) {
	if g.admit(fn) {
		go fn()
	}
}

// Throughput implements actor.Dispatcher.
func (g *gate) Throughput() int { return gateThroughput }

// Now implements actors.Clock: a paused process's clock keeps moving.
func (g *gate) Now() time.Time { return time.Now() }

// AfterFunc implements actors.Clock; a timer that falls due while the node
// is paused fires on Resume.
func (g *gate) AfterFunc(d time.Duration, f func()) func() {
	t := time.AfterFunc(d, func() {
		if g.admit(f) {
			f()
		}
	})
	return func() { t.Stop() }
}

// admit reports whether fn may run now; a paused gate keeps it for Resume
// and a dead one drops it.
func (g *gate) admit(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.dead:
		return false
	case g.paused:
		g.held = append(g.held, fn)
		return false
	}
	return true
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = true
}

// resume releases what was held, in the order it was held.
func (g *gate) resume() {
	g.mu.Lock()
	held := g.held
	g.held, g.paused = nil, false
	dead := g.dead
	g.mu.Unlock()
	if dead {
		return
	}
	for _, fn := range held {
		go fn()
	}
}

// kill drops everything held and everything to come.
func (g *gate) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dead = true
	g.held = nil
}

func (g *gate) heldCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}
