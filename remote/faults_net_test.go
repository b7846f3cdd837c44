// Several remotes in one process: see net_test.go's header.

//go:build !race

package remote_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftor/raftor/remote"
)

// The inbound filter sees the sender's address and the message type, and
// what it decides happens on the real transport: a cut link delivers
// nothing, a duplicate arrives twice, a delayed message arrives later.
func TestInboundFilterOverTheWire(t *testing.T) {
	var mode atomic.Value
	mode.Store("deliver")
	var lastFrom atomic.Value
	filter := func(from, typeName string) remote.Verdict {
		if typeName != "raftor.v1.VoteRequest" {
			return remote.Verdict{}
		}
		lastFrom.Store(from)
		switch mode.Load() {
		case "drop":
			return remote.Verdict{Drop: true}
		case "dup":
			return remote.Verdict{Duplicates: 1}
		case "delay":
			return remote.Verdict{Delay: 300 * time.Millisecond}
		}
		return remote.Verdict{}
	}
	a := startNode(t, remote.Config{})
	b := startNode(t, remote.Config{Inbound: filter})

	if _, err := ask(a, b.echoAt(), vote(1), 10*time.Second); err != nil {
		t.Fatalf("delivered vote: %v", err)
	}
	if from := lastFrom.Load(); from != a.rem.Address() {
		t.Fatalf("filter saw sender %v, want %s", from, a.rem.Address())
	}

	mode.Store("drop")
	before := b.received.Load()
	if _, err := ask(a, b.echoAt(), vote(2), 500*time.Millisecond); err == nil {
		t.Fatal("a dropped vote was answered")
	}
	if b.received.Load() != before {
		t.Fatal("a dropped vote reached the actor")
	}

	mode.Store("dup")
	before = b.received.Load()
	if _, err := ask(a, b.echoAt(), vote(3), 10*time.Second); err != nil {
		t.Fatalf("duplicated vote: %v", err)
	}
	waitFor(t, "the duplicate", func() bool { return b.received.Load() == before+2 })

	mode.Store("delay")
	start := time.Now()
	if _, err := ask(a, b.echoAt(), vote(4), 10*time.Second); err != nil {
		t.Fatalf("delayed vote: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("a vote delayed by 300ms was answered after %v", took)
	}
	st := b.rem.FaultStats()
	if st.Dropped != 1 || st.Duplicated != 1 || st.Delayed != 1 {
		t.Fatalf("fault stats %+v, want one of each", st)
	}
	if s := a.rem.FaultStats(); s != (remote.FaultStats{}) {
		t.Fatalf("a node without a filter counted faults: %+v", s)
	}
}
