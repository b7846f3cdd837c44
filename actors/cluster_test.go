package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/raftor/raftor/messages"
)

// The story of a cluster: it forms, elects one leader, and every node
// applies the same writes in the same order, whatever its size.
func TestClusterOfEverySizeAppliesWritesInOneOrder(t *testing.T) {
	for _, size := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			tc := newTestCluster(t, nil)
			tc.boot(size)
			l := tc.leader()
			var want []string
			for i := 0; i < 10; i++ {
				d := fmt.Sprintf("w%02d", i)
				res := write(t, l.node, d)
				if string(res.Data) != fmt.Sprintf("ok:%d", res.Index) {
					t.Fatalf("write %s: result %q at index %d, want the state machine's answer", d, res.Data, res.Index)
				}
				want = append(want, d)
			}
			tc.waitApplied(l.node.Metrics().GetCommitIndex())
			for id, n := range tc.nodes {
				if got := n.sm.snapshotData(); !slices.Equal(got, want) {
					t.Errorf("node %d applied %v, want %v", id, got, want)
				}
			}
		})
	}
}

// When the leader stops, the others elect a new one in a higher term, and
// writes acknowledged before stay applied.
func TestLeaderStoppedNewLeaderTakesOver(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	old := tc.leader()
	oldTerm := old.node.Metrics().GetTerm()
	write(t, old.node, "before")
	tc.stop(old.id)

	l := tc.leader()
	if l.id == old.id || l.node.Metrics().GetTerm() <= oldTerm {
		t.Fatalf("leader after stop is node %d in term %d; want another node in a term above %d", l.id, l.node.Metrics().GetTerm(), oldTerm)
	}
	write(t, l.node, "after")
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	for id, n := range tc.nodes {
		if got := n.sm.snapshotData(); !slices.Equal(got, []string{"before", "after"}) {
			t.Errorf("node %d applied %v", id, got)
		}
	}
}

// A new node joins as a learner (asked through a follower, which forwards
// to the leader), catches up, is promoted to voter, and then holds every
// write.
func TestLearnerAddedCaughtUpAndPromoted(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	for i := 0; i < 5; i++ {
		write(t, l.node, fmt.Sprintf("w%d", i))
	}
	tc.start(4)
	// Through a follower: membership requests are forwarded too.
	f := tc.nodes[l.id%3+1]
	if err := f.node.AddLearner(ctxT(t, 20*time.Second), 4, ""); err != nil {
		t.Fatalf("add learner through follower %d: %v", f.id, err)
	}
	if m := tc.nodes[4].node.Metrics(); m.GetRole() != messages.Role_ROLE_LEARNER && m.GetRole() != messages.Role_ROLE_FOLLOWER {
		t.Errorf("node 4 role %v after AddLearner, want a learner", m.GetRole())
	}
	if err := l.node.ChangeMembership(ctxT(t, 20*time.Second), []uint64{1, 2, 3, 4}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	m := l.node.Metrics().GetMembership()
	if !slices.Contains(m.GetVoters(), 4) || slices.Contains(m.GetLearners(), 4) || len(m.GetVotersOutgoing()) != 0 {
		t.Fatalf("membership after promotion %v; want 4 a voter, not joint", m)
	}
	write(t, l.node, "after promotion")
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	if got := tc.nodes[4].sm.snapshotData(); !slices.Equal(got, []string{"w0", "w1", "w2", "w3", "w4", "after promotion"}) {
		t.Errorf("node 4 applied %v", got)
	}
}

// A voter removed from the configuration no longer counts: the other two
// keep committing without it. Removing the leader itself makes it step
// down once the change commits, and the rest elect a new leader.
func TestVoterRemoved(t *testing.T) {
	for _, removeLeader := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader=%v", removeLeader), func(t *testing.T) {
			tc := newTestCluster(t, nil)
			tc.boot(3)
			l := tc.leader()
			write(t, l.node, "before")
			victim := l.id
			if !removeLeader {
				victim = l.id%3 + 1
			}
			var keep []uint64
			for id := uint64(1); id <= 3; id++ {
				if id != victim {
					keep = append(keep, id)
				}
			}
			if err := l.node.ChangeMembership(ctxT(t, 20*time.Second), keep); err != nil {
				t.Fatalf("remove %d: %v", victim, err)
			}
			tc.stop(victim)
			nl := tc.leader()
			if m := nl.node.Metrics().GetMembership(); slices.Contains(m.GetVoters(), victim) {
				t.Fatalf("membership %v still has %d", m, victim)
			}
			write(t, nl.node, "after")
			tc.waitApplied(nl.node.Metrics().GetCommitIndex())
			for id, n := range tc.nodes {
				if got := n.sm.snapshotData(); !slices.Equal(got, []string{"before", "after"}) {
					t.Errorf("node %d applied %v", id, got)
				}
			}
		})
	}
}

func TestTransferLeader(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "x")
	target := l.id%3 + 1
	if err := l.node.TransferLeader(ctxT(t, 20*time.Second), target); err != nil {
		t.Fatalf("transfer to %d: %v", target, err)
	}
	if nl := tc.leader(); nl.id != target {
		t.Fatalf("leader after transfer is %d, want %d", nl.id, target)
	}
	write(t, tc.nodes[target].node, "y")

	// Asked of a follower, the transfer is forwarded to the leader.
	nl := tc.leader()
	follower := nl.id%3 + 1
	next := follower%3 + 1
	if next == nl.id {
		next = next%3 + 1
	}
	if err := tc.nodes[follower].node.TransferLeader(ctxT(t, 20*time.Second), next); err != nil {
		t.Fatalf("transfer to %d asked of follower %d: %v", next, follower, err)
	}
	if got := tc.leader(); got.id != next {
		t.Fatalf("leader after a transfer through a follower is %d, want %d", got.id, next)
	}
}

// After the leader changes, EnsureLinearizable on any node (the new leader
// or a follower) returns only once that node's state machine holds every
// write acknowledged before.
func TestLinearizableReadAfterLeaderChange(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	old := tc.leader()
	for i := 0; i < 5; i++ {
		write(t, old.node, fmt.Sprintf("w%d", i))
	}
	tc.stop(old.id)
	nl := tc.leader()
	for _, n := range tc.nodes {
		// As a client would, retry while leadership settles (a loaded
		// machine can delay heartbeats past an election timeout).
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := n.node.EnsureLinearizable(ctxT(t, 10*time.Second))
			if err == nil {
				break
			}
			if !errors.Is(err, ErrNotLeader) || time.Now().After(deadline) {
				t.Fatalf("node %d (leader %v): EnsureLinearizable: %v", n.id, n == nl, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := n.sm.snapshotData(); len(got) != 5 {
			t.Errorf("node %d holds %v after EnsureLinearizable; want all 5 acknowledged writes", n.id, got)
		}
	}
	idx, err := nl.node.ReadIndex(ctxT(t, 10*time.Second))
	if err != nil || idx < 6 {
		t.Fatalf("read index %d, %v; want at least the 5 writes and the blank entries", idx, err)
	}
}

// Writes through a follower are forwarded to the leader; with no_forward
// the follower answers NOT_LEADER and names the leader.
func TestFollowerForwardsOrNamesLeader(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	f := tc.nodes[l.id%3+1]
	res := write(t, f.node, "via follower")
	if res.Index == 0 {
		t.Fatalf("forwarded write result %+v", res)
	}
	_, err := f.node.Write(ctxT(t, 5*time.Second), &messages.ClientWriteRequest{Data: []byte("no"), NoForward: true})
	var e *Error
	if !errors.As(err, &e) || e.Code != messages.ErrorCode_ERROR_CODE_NOT_LEADER || e.LeaderID != l.id {
		t.Fatalf("no_forward write on follower: %v; want NOT_LEADER naming %d", err, l.id)
	}
}

// appActor is an application actor: it writes through a node's PID by
// message and hands the responses to a channel.
type appActor struct {
	node *actor.PID
	out  chan *messages.ClientWriteResponse
}

func (a *appActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case string:
		ctx.Request(a.node, &messages.ClientWriteRequest{Data: []byte(m)})
	case *messages.ClientWriteResponse:
		a.out <- m
	}
}

func TestApplicationActorWritesByMessage(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "warm")
	for _, target := range []*testNode{l, tc.nodes[l.id%3+1]} {
		out := make(chan *messages.ClientWriteResponse, 1)
		pid := tc.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &appActor{node: target.node.PID(), out: out} }))
		tc.system.Root.Send(pid, "from actor")
		select {
		case resp := <-out:
			if resp.GetError() != nil || string(resp.GetResult()) != fmt.Sprintf("ok:%d", resp.GetIndex()) {
				t.Fatalf("response through node %d: %v", target.id, resp)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no response through node %d", target.id)
		}
		tc.system.Root.Stop(pid)
	}
}

// Writes that cannot commit (no quorum) pile up to MaxPendingWrites; the
// next one is refused at once with OVERLOADED instead of queueing. The
// waiting ones time out with their context, and Stop answers the rest.
func TestBackpressureAndDeadlines(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.MaxPendingWrites = 4
		c.DisableCheckQuorum = true // keep the lonely leader leading
		return c
	})
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "committed")
	for id := range tc.nodes {
		if id != l.id {
			tc.stop(id)
		}
	}
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			_, err := l.node.ClientWrite(ctxT(t, 30*time.Second), []byte("stuck"))
			errs <- err
		}()
	}
	waitFor(t, 10*time.Second, "4 pending writes", func() bool { return l.node.Metrics().GetPendingWrites() == 4 })
	_, err := l.node.ClientWrite(ctxT(t, 5*time.Second), []byte("one too many"))
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("write beyond MaxPendingWrites: %v, want OVERLOADED", err)
	}
	start := time.Now()
	_, err = func() (*WriteResult, error) {
		tc.stop(l.id) // Stop answers the four waiters
		return nil, nil
	}()
	for i := 0; i < 4; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrStopped) {
				t.Errorf("pending write after Stop: %v, want UNKNOWN_OUTCOME or STOPPED", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a pending write got no answer after Stop")
		}
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("Stop took %v", time.Since(start))
	}
	if _, err := l.node.ClientWrite(context.Background(), []byte("late")); !errors.Is(err, ErrStopped) {
		t.Errorf("write after Stop: %v, want STOPPED", err)
	}
}

func TestContextDeadlineIsHonoured(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.DisableCheckQuorum = true
		return c
	})
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "committed")
	for id := range tc.nodes {
		if id != l.id {
			tc.stop(id)
		}
	}
	start := time.Now()
	_, err := l.node.ClientWrite(ctxT(t, 300*time.Millisecond), []byte("no quorum"))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("write without quorum: %v, want TIMEOUT", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a 300ms deadline returned after %v", took)
	}
}

// A stopped node leaves no goroutine behind: not the storage writer, not
// a timer, not a replication actor.
func TestStopLeavesNoGoroutines(t *testing.T) {
	// protoactor's dead-letter log throttle runs a goroutine for one
	// interval after a dead letter (messages to a stopped node are); it is
	// the actor system's, not the node's.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "x")
	tc.stopAll()
}
