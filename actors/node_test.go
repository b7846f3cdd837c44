package actors

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

func TestConfigValidation(t *testing.T) {
	valid := Config{ClusterID: "c", NodeID: 1}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"defaults are valid", func(*Config) {}, ""},
		{"cluster id required", func(c *Config) { c.ClusterID = "" }, "ClusterID must not be empty"},
		{"cluster id is part of actor names", func(c *Config) { c.ClusterID = "a/b" }, "must not contain"},
		{"node id required", func(c *Config) { c.NodeID = 0 }, "NodeID must not be 0"},
		{"heartbeat below election timeout", func(c *Config) { c.ElectionTicks, c.HeartbeatTicks = 5, 5 }, "HeartbeatTicks 5 must be at least 1 and lower than ElectionTicks 5"},
		{"tick too short", func(c *Config) { c.TickInterval = time.Microsecond }, "TickInterval"},
		{"lease read needs check quorum", func(c *Config) { c.LeaseRead, c.DisableCheckQuorum = true, true }, "LeaseRead requires check-quorum"},
		{"entry fits an append", func(c *Config) { c.MaxEntryBytes, c.MaxAppendBytes = 2<<20, 1<<20 }, "MaxEntryBytes"},
		{"negative limits", func(c *Config) { c.MaxPendingWrites = -1 }, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// Start refuses what it cannot run rather than failing later.
func TestStartRefusesBadInput(t *testing.T) {
	tc := newTestCluster(t, nil)
	st, _ := store.NewMemStore(store.Options{ClusterID: "other", NodeID: 1})
	if _, err := Start(tc.system, testConfig(1), &logSM{}, st); err == nil || !strings.Contains(err.Error(), "belongs to cluster") {
		t.Errorf("start with another cluster's store: %v", err)
	}
	tc.start(1)
	st2, _ := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: 1})
	if _, err := Start(tc.system, testConfig(1), &logSM{}, st2); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Errorf("start node 1 twice: %v", err)
	}
	bad := testConfig(2)
	bad.HeartbeatTicks = 100
	if _, err := Start(tc.system, bad, &logSM{}, st2); err == nil {
		t.Error("start with an invalid config succeeded")
	}
}

// A disk that fails stops the node's writes: the write that hit the
// failure and every later one fail with STORAGE_FAILED, nothing is
// acknowledged, and the metrics say why.
func TestStorageFailureStopsWrites(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader()
	write(t, n.node, "durable")
	n.st.(*store.MemStore).FailSyncs(errors.New("disk on fire"))
	// The write that meets the failure was never durable here, but in a
	// bigger cluster it could commit elsewhere: its outcome is unknown.
	if _, err := n.node.ClientWrite(ctxT(t, 10*time.Second), []byte("lost")); !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("write meeting the failure: %v, want UNKNOWN_OUTCOME", err)
	}
	for i := 0; i < 2; i++ {
		_, err := n.node.ClientWrite(ctxT(t, 10*time.Second), []byte("refused"))
		if !errors.Is(err, ErrStorageFailed) {
			t.Fatalf("write %d after the disk failed: %v, want STORAGE_FAILED", i, err)
		}
	}
	waitFor(t, 10*time.Second, "storage error in metrics", func() bool { return n.node.Metrics().GetStorageError() != nil })
	if !n.node.StorageStats().Failed {
		t.Error("StorageStats.Failed not set")
	}
	if got := n.sm.snapshotData(); !slices.Equal(got, []string{"durable"}) {
		t.Errorf("applied %v; only the write before the failure may be applied", got)
	}
}

// Writes that arrive while the log is being synced share the next append
// and its fsync: the writer takes every append waiting. The test holds the
// first sync until all the other writes are in RaftCore's log, so that
// they are waiting whatever the machine's speed.
func TestConcurrentWritesShareFsyncs(t *testing.T) {
	_, gate, n := gatedLeader(t)
	before := n.node.StorageStats()
	base := n.node.Metrics().GetLastLogIndex()
	release := gate.holdAppends()
	defer release()

	const writers = 200
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		go func() {
			_, err := n.node.ClientWrite(ctxT(t, 20*time.Second), []byte(fmt.Sprintf("c%d", i)))
			errs <- err
		}()
		if i == 0 {
			// The first write's append is the one held.
			select {
			case <-gate.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the first write's append never reached the store")
			}
		}
	}
	waitFor(t, 10*time.Second, "every write in RaftCore's log", func() bool {
		return n.node.Metrics().GetLastLogIndex() >= base+writers
	})
	release()
	for i := 0; i < writers; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent write: %v", err)
		}
	}
	after := n.node.StorageStats()
	batches := after.Batches - before.Batches
	t.Logf("%d writes took %d fsyncs (%d appends)", writers, batches, after.Appends-before.Appends)
	if batches > 5 {
		t.Errorf("%d writes took %d fsyncs: the 199 that waited behind the first sync did not share one", writers, batches)
	}
	if got := len(n.sm.snapshotData()); got != writers+1 {
		t.Errorf("applied %d writes, want %d", got, writers+1)
	}
}

// gatedLeader starts a single-node cluster on a gated store and returns it
// with its leader, one write already applied.
func gatedLeader(t *testing.T) (*testCluster, *gatedStore, *testNode) {
	t.Helper()
	tc := newTestCluster(t, nil)
	gate := newGatedStore(t)
	tc.startWith(1, &logSM{}, gate)
	if err := tc.nodes[1].node.Initialize(ctxT(t, 10*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	n := tc.leader()
	write(t, n.node, "first")
	return tc, gate, n
}

// A node stopped and started again on its store and state machine comes
// back with its term and log, rejoins, and catches up on what it missed.
func TestNodeRestartsFromItsStore(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "a")
	f := tc.nodes[l.id%3+1]
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	term := f.node.Metrics().GetTerm()
	tc.stop(f.id)
	write(t, l.node, "b")
	reopened, err := f.st.(*store.MemStore).Reopen(store.Options{ClusterID: testClusterID, NodeID: f.id})
	if err != nil {
		t.Fatal(err)
	}
	back := tc.startWith(f.id, f.sm, reopened)
	waitFor(t, 10*time.Second, "restarted node to load its term", func() bool { return back.node.Metrics().GetTerm() >= term })
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	if got := back.sm.snapshotData(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("restarted node applied %v, want [a b] each once", got)
	}
}

// The same cluster on Pebble stores.
func TestPebbleCluster(t *testing.T) {
	tc := newTestCluster(t, nil)
	m := &messages.Membership{}
	for id := uint64(1); id <= 3; id++ {
		st, err := store.OpenPebble(filepath.Join(t.TempDir(), fmt.Sprint(id)), store.PebbleOptions{
			Options: store.Options{ClusterID: testClusterID, NodeID: id}, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		tc.startWith(id, &logSM{}, st)
		m.Voters = append(m.Voters, id)
	}
	if err := tc.nodes[1].node.Initialize(ctxT(t, 10*time.Second), m); err != nil {
		t.Fatal(err)
	}
	l := tc.leader()
	for i := 0; i < 10; i++ {
		write(t, l.node, fmt.Sprint(i))
	}
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	// Stop the nodes before their stores close (Cleanup runs in reverse).
	tc.stopAll()
}

// Initialize on a node that already has a configuration is refused.
func TestInitializeTwice(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	tc.leader()
	err := tc.nodes[1].node.Initialize(ctxT(t, 5*time.Second), &messages.Membership{Voters: []uint64{1}})
	if !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Initialize: %v, want ALREADY_INITIALIZED", err)
	}
}

// WatchMetrics delivers changes: a watcher sees the node become leader and
// its applied index move, and the channel closes on Stop.
func TestWatchMetrics(t *testing.T) {
	tc := newTestCluster(t, nil)
	n := tc.start(1)
	ch, cancel := n.node.WatchMetrics()
	defer cancel()
	if err := n.node.Initialize(ctxT(t, 5*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for led := false; !led; {
		select {
		case m := <-ch:
			led = m.GetRole() == messages.Role_ROLE_LEADER
		case <-deadline:
			t.Fatal("watcher never saw the node lead")
		}
	}
	tc.stop(1)
	for range ch {
	}
}

// Time comes only from the Clock: with a manual clock nothing happens
// until the test moves it, and an election needs the election timeout.
func TestManualClockDrivesTimers(t *testing.T) {
	clock := NewManualClock(time.Unix(0, 0))
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.Clock = clock
		return c
	})
	n := tc.start(1)
	if err := n.node.Initialize(ctxT(t, 5*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the tick timer", func() bool { return clock.Pending() > 0 })
	if n.node.IsLeader() {
		t.Fatal("leader before any time passed")
	}
	waitFor(t, 20*time.Second, "an election driven by the manual clock", func() bool {
		clock.Advance(20 * time.Millisecond)
		return n.node.IsLeader()
	})
}

// With InlineStorage the storage actor writes in its own mailbox runs (no
// writer goroutine, for simulators); appends still share Append calls.
func TestInlineStorage(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.InlineStorage = true
		return c
	})
	tc.boot(3)
	l := tc.leader()
	for i := 0; i < 10; i++ {
		write(t, l.node, fmt.Sprint(i))
	}
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	for id, n := range tc.nodes {
		if got := n.sm.snapshotData(); len(got) != 10 {
			t.Errorf("node %d applied %v", id, got)
		}
	}
	if s := l.node.StorageStats(); s.Batches == 0 || s.Appends < s.Batches {
		t.Errorf("storage stats %+v", s)
	}
}

// With LeaseRead the leader answers linearizable reads from its lease.
func TestLeaseRead(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.LeaseRead = true
		return c
	})
	tc.boot(3)
	l := tc.leader()
	write(t, l.node, "x")
	if err := l.node.EnsureLinearizable(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("lease read: %v", err)
	}
	if got := l.sm.snapshotData(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("after the read the leader holds %v", got)
	}
}

// A cancelled context returns context.Canceled at once, not a timeout.
func TestCancelledContext(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.node.ClientWrite(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a cancelled context: %v", err)
	}
}

// A call that got its answer gives its reply process back for the next
// call; a stray message that reaches a kept process is not the next
// call's answer; Stop unregisters every kept process.
func TestReplyProcessesAreReused(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader().node
	write(t, n, "a")
	kept := func() []*replyProcess {
		n.replyMu.Lock()
		defer n.replyMu.Unlock()
		return slices.Clone(n.freeReplies)
	}
	before := kept()
	if len(before) == 0 {
		t.Fatal("a call that got its answer kept no reply process")
	}
	rp := before[len(before)-1]
	n.system.Root.Send(rp.pid, &messages.ClientWriteResponse{Index: 999_999})
	res := write(t, n, "b")
	if res.Index == 999_999 {
		t.Fatal("a stray message sent to a kept reply process answered the next call")
	}
	if after := kept(); len(after) != len(before) || !slices.Contains(after, rp) {
		t.Fatalf("kept %d processes after a sequential call, want the same %d", len(after), len(before))
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if left := kept(); len(left) != 0 {
		t.Fatalf("%d reply processes kept after Stop", len(left))
	}
	if _, ok := n.system.ProcessRegistry.GetLocal(rp.pid.GetId()); ok {
		t.Fatalf("reply process %s still registered after Stop", rp.pid.GetId())
	}
}

// An answer delivered twice (a transport that duplicates messages) whose
// second copy comes while the caller's next call waits must not answer
// that call: the next call reuses the reply process, never its address.
// clustertest's TestFigure8Unreliable saw a client's delete acknowledged at
// the index of an earlier put this way.
func TestLateAnswerNeverAnswersTheNextCall(t *testing.T) {
	_, gate, leader := gatedLeader(t)
	n := leader.node
	n.replyMu.Lock()
	if len(n.freeReplies) == 0 {
		n.replyMu.Unlock()
		t.Fatal("a call that got its answer kept no reply process")
	}
	old := n.freeReplies[len(n.freeReplies)-1].pid
	n.replyMu.Unlock()

	release := gate.holdAppends()
	defer release()
	done := make(chan *WriteResult, 1)
	go func() {
		res, err := n.ClientWrite(ctxT(t, 20*time.Second), []byte("second"))
		if err != nil {
			t.Errorf("second write: %v", err)
		}
		done <- res
	}()
	select {
	case <-gate.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the second write's append never reached the store")
	}
	// The second call waits for its append; the first call's address gets
	// an answer again.
	n.system.Root.Send(old, &messages.ClientWriteResponse{Index: 999_999, Term: 1})
	release()
	select {
	case res := <-done:
		if res != nil && res.Index == 999_999 {
			t.Fatal("an answer addressed to the previous call answered the next one")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the second write was never answered")
	}
}

// A write delivered twice from one sender while its first copy waits (a
// transport that duplicates messages) goes into the log once and is
// answered once, by its first copy: answering the second copy on its own
// (refused, say, because a leader transfer began in between) could reach
// the sender first and report as failed a write the first copy made.
func TestDuplicateWriteIsAnsweredOnce(t *testing.T) {
	tc, gate, n := gatedLeader(t)
	base := n.node.Metrics().GetLastLogIndex()
	in := newInbox(t, tc.system)
	release := gate.holdAppends()
	defer release()
	dup := &messages.ClientWriteRequest{Data: []byte("dup"), Request: &messages.RequestID{ClientId: 7, Sequence: 1}, TimeoutMs: 20_000}
	tc.system.Root.RequestWithCustomSender(n.node.PID(), dup, in.pid)
	select {
	case <-gate.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the write's append never reached the store")
	}
	tc.system.Root.RequestWithCustomSender(n.node.PID(), proto.Clone(dup), in.pid)
	next := &messages.ClientWriteRequest{Data: []byte("next"), Request: &messages.RequestID{ClientId: 7, Sequence: 2}, TimeoutMs: 20_000}
	tc.system.Root.RequestWithCustomSender(n.node.PID(), next, in.pid)
	waitFor(t, 10*time.Second, "the later write in RaftCore's log", func() bool {
		return n.node.Metrics().GetLastLogIndex() >= base+2
	})
	release()

	// Answers come in log order: once the later write's is here, any
	// answer to a second copy would be too.
	var answers []*messages.ClientWriteResponse
	deadline := time.After(20 * time.Second)
	for len(answers) == 0 || answers[len(answers)-1].GetRequest().GetSequence() != 2 {
		select {
		case m := <-in.ch:
			r, ok := m.(*messages.ClientWriteResponse)
			if !ok {
				t.Fatalf("unexpected answer %T", m)
			}
			answers = append(answers, r)
		case <-deadline:
			t.Fatalf("no answer to the later write after 20s; answers so far: %v", answers)
		}
	}
	if len(answers) != 2 || answers[0].GetError() != nil || answers[0].GetIndex() != base+1 {
		t.Fatalf("answers %v: want one answer to the duplicated write, at index %d, then the later write's", answers, base+1)
	}
	if got := answers[1].GetIndex(); got != base+2 {
		t.Errorf("the later write went to index %d, want %d: the duplicate took a log entry", got, base+2)
	}
}

// A call without a deadline whose request is lost on the way (a forward to
// a leader that died) ends with TIMEOUT once RequestTimeout and a second
// have passed; the process's timer, kept for the next call, neither fires
// into that call nor stops it from being answered.
func TestCallWithoutDeadlineEndsWhenItsAnswerIsLost(t *testing.T) {
	const requestTimeout = 300 * time.Millisecond
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.RequestTimeout = requestTimeout
		return c
	})
	tc.boot(1)
	n := tc.leader().node
	write(t, n, "a")

	// A PID that takes every message and answers none stands in for
	// RaftCore while the lost call waits.
	hole, err := tc.system.Root.SpawnNamed(actor.PropsFromFunc(func(actor.Context) {}), "black-hole")
	if err != nil {
		t.Fatal(err)
	}
	core := n.corePID
	n.corePID = hole
	start := time.Now()
	_, err = n.ClientWrite(context.Background(), []byte("lost"))
	took := time.Since(start)
	n.corePID = core
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("a call whose request was lost ended with %v, want a timeout", err)
	}
	if took < requestTimeout+time.Second {
		t.Fatalf("a call whose request was lost ended after %v, before RequestTimeout (%v) and a second", took, requestTimeout)
	}
	// The next calls reuse the process and its timer: they get their own
	// answers, each well within the timer's bound.
	for _, data := range []string{"b", "c"} {
		res, err := n.ClientWrite(context.Background(), []byte(data))
		if err != nil {
			t.Fatalf("write %q after the lost call: %v", data, err)
		}
		if res.Index == 0 {
			t.Fatalf("write %q answered with index 0", data)
		}
	}
}
