//go:build !race

package remote_test

import (
	"testing"
	"time"

	"github.com/raftor/raftor/remote"
)

// A node whose peer went away must still stop promptly: protoactor's own
// graceful stop waits up to 10 s on the dead peer's streams.
func TestShutdownWithPeerGone(t *testing.T) {
	a := startNode(t, remote.Config{})
	b := startNode(t, remote.Config{})
	if _, err := ask(a, b.echoAt(), vote(1), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(b, a.echoAt(), vote(1), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.rem.Shutdown()
	// a keeps trying to reach b, as a leader does with a dead follower.
	for range 3 {
		if _, err := ask(a, b.echoAt(), vote(2), 300*time.Millisecond); err == nil {
			t.Fatal("a stopped node answered")
		}
	}
	start := time.Now()
	a.rem.Shutdown()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v with a peer gone", d)
	}
}
