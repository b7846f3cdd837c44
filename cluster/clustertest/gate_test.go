package clustertest

import (
	"sync/atomic"
	"testing"
	"time"
)

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A paused gate holds mailbox runs and timers and releases them, in order,
// on resume; a killed gate drops everything, held or to come.
func TestGatePauseResumeKill(t *testing.T) {
	g := &gate{}
	var ran atomic.Int64
	g.Schedule(func() { ran.Add(1) })
	waitUntil(t, 5*time.Second, "an open gate to run", func() bool { return ran.Load() == 1 })

	g.pause()
	g.Schedule(func() { ran.Add(1) })
	fired := make(chan struct{})
	g.AfterFunc(time.Millisecond, func() { close(fired) })
	waitUntil(t, 5*time.Second, "the run and the timer to be held", func() bool { return g.heldCount() == 2 })
	if ran.Load() != 1 {
		t.Fatal("a paused gate ran a mailbox")
	}
	select {
	case <-fired:
		t.Fatal("a paused gate fired a timer")
	default:
	}
	g.resume()
	waitUntil(t, 5*time.Second, "held work to run on resume", func() bool { return ran.Load() == 2 })
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the held timer did not fire on resume")
	}

	g.pause()
	g.Schedule(func() { ran.Add(1) })
	g.kill()
	g.resume()
	g.Schedule(func() { ran.Add(1) })
	stopped := make(chan struct{})
	g.AfterFunc(0, func() { close(stopped) })
	if g.heldCount() != 0 {
		t.Fatal("a killed gate holds work")
	}
	// A killed gate never runs anything: give it the time a run would take.
	time.Sleep(20 * time.Millisecond)
	if ran.Load() != 2 {
		t.Fatalf("a killed gate ran %d more mailbox runs", ran.Load()-2)
	}
	select {
	case <-stopped:
		t.Fatal("a killed gate fired a timer")
	default:
	}
}

func TestGateTimerStop(t *testing.T) {
	g := &gate{}
	fired := make(chan struct{}, 1)
	stop := g.AfterFunc(50*time.Millisecond, func() { fired <- struct{}{} })
	stop()
	probe := make(chan struct{})
	g.AfterFunc(100*time.Millisecond, func() { close(probe) })
	<-probe // the later timer fired, so the stopped one would have too
	select {
	case <-fired:
		t.Fatal("a stopped timer fired")
	default:
	}
}
