package actors

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
)

// A state machine that panics restarts the apply actor, not the node. The
// write being applied is answered UNKNOWN_OUTCOME (it may have been
// applied), and the restarted actor goes on from the state machine's
// LastApplied: every entry is applied exactly once, in order.
func TestApplyPanicRestartsApplyActorOnly(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader()
	write(t, n.node, "a")
	applied, _ := n.sm.LastApplied()
	n.sm.mu.Lock()
	n.sm.panicAt = applied + 1
	n.sm.mu.Unlock()
	_, err := n.node.ClientWrite(ctxT(t, 10*time.Second), []byte("b"))
	if err != nil && !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("write that met the panic: %v, want success or UNKNOWN_OUTCOME", err)
	}
	write(t, n.node, "c")
	waitFor(t, 10*time.Second, "c applied", func() bool { return len(n.sm.snapshotData()) == 3 })
	if got := n.sm.snapshotData(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("applied %v, want [a b c] once each", got)
	}
	if !n.node.IsLeader() {
		t.Error("the node lost leadership over an apply failure")
	}
}

// Under a sustained load of large writes the leader keeps its term:
// heartbeats have a path of their own and are not starved behind appends,
// so followers start no needless election (PITFALLS #18).
func TestNoSpuriousElectionsUnderLoad(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		// A 1-2s election timeout: starvation by the load itself, not by a
		// slow test machine, is what this test is after.
		c := testConfig(id)
		c.ElectionTicks = 50
		return c
	})
	tc.boot(3)
	l := tc.leader()
	term := l.node.Metrics().GetTerm()
	payload := make([]byte, 16<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := l.node.ClientWrite(ctxT(t, 20*time.Second), payload); err != nil {
					errs <- fmt.Errorf("writer %d write %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id, n := range tc.nodes {
		if got := n.node.Metrics().GetTerm(); got != term {
			t.Errorf("node %d is in term %d after the load, want %d: an election happened", id, got, term)
		}
	}
}

// An application actor that sets a RequestID gets it back in the answer,
// to match answers with writes it has in flight.
func TestWriteResponseEchoesRequestID(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader()
	resp, err := n.node.call(ctxT(t, 10*time.Second), &messages.ClientWriteRequest{Data: []byte("x"),
		Request: &messages.RequestID{ClientId: 7, Sequence: 42}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.(*messages.ClientWriteResponse).GetRequest(); r.GetClientId() != 7 || r.GetSequence() != 42 {
		t.Fatalf("response request id %v, want 7/42", r)
	}
}

// A panic inside a ReplicationStream restarts that stream only: the leader
// keeps its term, the peer's requests in flight are retried, and every
// node applies every write.
func TestStreamPanicRestartsStreamOnly(t *testing.T) {
	var mu sync.Mutex
	panics := 0
	streamFailpoint = func(peer uint64, msg any) {
		if s, ok := msg.(*messages.StreamSend); ok && !s.GetHeartbeat() && s.GetHi() > s.GetLo() {
			mu.Lock()
			defer mu.Unlock()
			if panics < 2 {
				panics++
				panic("injected stream failure")
			}
		}
	}
	t.Cleanup(func() { streamFailpoint = nil })
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	term := l.node.Metrics().GetTerm()
	for i := 0; i < 5; i++ {
		write(t, l.node, fmt.Sprint(i))
	}
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	mu.Lock()
	got := panics
	mu.Unlock()
	if got == 0 {
		t.Fatal("the failpoint never fired")
	}
	if m := l.node.Metrics(); m.GetRole() != messages.Role_ROLE_LEADER || m.GetTerm() != term {
		t.Fatalf("leader is %v in term %d after stream failures, want leader in term %d", m.GetRole(), m.GetTerm(), term)
	}
	for id, n := range tc.nodes {
		if d := n.sm.snapshotData(); len(d) != 5 {
			t.Errorf("node %d applied %v", id, d)
		}
	}
}

// A panic inside RaftCore restarts it from storage: the new instance loads
// term, vote and log, answers the requests the old one held, and the node
// takes part again. No acknowledged write is lost or applied twice.
func TestRaftCorePanicRecoversFromStorage(t *testing.T) {
	var mu sync.Mutex
	armed := uint64(0)
	coreFailpoint = func(node uint64, msg any) {
		if _, ok := msg.(*coreFlush); !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if armed != 0 && node == armed {
			armed = 0
			panic("injected raftcore failure")
		}
	}
	t.Cleanup(func() { coreFailpoint = nil })
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "before")
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	term := l.node.Metrics().GetTerm()
	mu.Lock()
	armed = l.id
	mu.Unlock()
	write(t, l.node, "during")
	nl := tc.leader()
	write(t, nl.node, "after")
	tc.waitApplied(nl.node.Metrics().GetCommitIndex())
	for id, n := range tc.nodes {
		if got := n.sm.snapshotData(); !slices.Equal(got, []string{"before", "during", "after"}) {
			t.Errorf("node %d applied %v", id, got)
		}
		if got := n.node.Metrics().GetTerm(); got < term {
			t.Errorf("node %d is in term %d, below %d: a restart forgot the term", id, got, term)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if armed != 0 {
		t.Fatal("the failpoint never fired")
	}
}

// burstActor is an application actor that fires n writes at a node and counts
// every answer, whether a response or a dead letter.
type burstActor struct {
	node    *actor.PID
	n       int
	answers chan any
}

func (b *burstActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case string:
		for i := 0; i < b.n; i++ {
			ctx.Request(b.node, &messages.ClientWriteRequest{Data: []byte(m), Request: &messages.RequestID{ClientId: 1, Sequence: uint64(i + 1)}})
		}
	case *messages.ClientWriteResponse, *actor.DeadLetterResponse:
		b.answers <- m
	}
}

// Stopping a node while an application actor's requests are queued in
// RaftCore's mailbox still answers every one of them: each gets its
// result, STOPPED, UNKNOWN_OUTCOME or (once the node is gone) a dead
// letter. None is dropped silently.
func TestStopAnswersEveryQueuedRequest(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader()
	const burst = 2000
	answers := make(chan any, burst)
	pid := tc.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &burstActor{node: n.node.PID(), n: burst, answers: answers}
	}))
	tc.system.Root.Send(pid, "burst")
	// Stop while the burst is in flight.
	waitFor(t, 10*time.Second, "the burst to start", func() bool { return n.node.Metrics().GetPendingWrites() > 0 || len(answers) > 0 })
	tc.stop(n.id)
	got := map[string]int{}
	seen := map[uint64]bool{}
	for i := 0; i < burst; i++ {
		select {
		case a := <-answers:
			switch a := a.(type) {
			case *messages.ClientWriteResponse:
				if seq := a.GetRequest().GetSequence(); seq == 0 || seen[seq] {
					t.Fatalf("answer with sequence %d: missing or repeated", seq)
				}
				seen[a.GetRequest().GetSequence()] = true
				if e := a.GetError(); e != nil {
					got[e.GetCode().String()]++
				} else {
					got["ok"]++
				}
			default:
				got["dead letter"]++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d requests answered (%v); the rest were dropped", i, burst, got)
		}
	}
	t.Logf("answers: %v", got)
	for code := range got {
		switch code {
		case "ok", "dead letter", "ERROR_CODE_STOPPED", "ERROR_CODE_UNKNOWN_OUTCOME":
		default:
			t.Errorf("unexpected answer %s", code)
		}
	}
}
