package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
)

// The group client's logic against scripted replicas in one actor system:
// PIDs at the replicas' addresses are routed to local actors, so the test
// controls who leads, who stays silent and which answers get lost.

// fakeGroup is the replicated state the scripted replicas share: who
// leads, and what was applied under which RequestID.
type fakeGroup struct {
	mu      sync.Mutex
	leader  uint64
	silent  map[uint64]bool
	applied map[ridKey]int // applications per RequestID
	last    map[uint64]uint64
	// loseReplies answers UNKNOWN_OUTCOME after applying, this many times.
	loseReplies int
	// inflight counts writes per client ID being handled (must stay <= 1).
	overlap bool
	busy    map[uint64]bool
}

func newFakeGroup(leader uint64) *fakeGroup {
	return &fakeGroup{leader: leader, silent: map[uint64]bool{}, applied: map[ridKey]int{}, last: map[uint64]uint64{}, busy: map[uint64]bool{}}
}

type fakeReplica struct {
	id uint64
	g  *fakeGroup
}

func (f *fakeReplica) Receive(ctx actor.Context) {
	w, ok := ctx.Message().(*messages.ClientWriteRequest)
	if !ok {
		return
	}
	g := f.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.silent[f.id] {
		return
	}
	if g.leader != f.id {
		ctx.Respond(&messages.ClientWriteResponse{Request: w.GetRequest(), Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER, LeaderId: g.leader}})
		return
	}
	rid := w.GetRequest()
	k := ridKey{rid.GetClientId(), rid.GetSequence()}
	if g.busy[k.client] {
		g.overlap = true
	}
	// Deduplicate like store/kvsm: the last sequence per client wins.
	dup := rid.GetSequence() <= g.last[k.client]
	if !dup {
		g.applied[k]++
		g.last[k.client] = rid.GetSequence()
	}
	if g.loseReplies > 0 {
		g.loseReplies--
		ctx.Respond(&messages.ClientWriteResponse{Request: rid, Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME}})
		return
	}
	res := []byte("applied")
	if dup {
		res = []byte("duplicate")
	}
	ctx.Respond(&messages.ClientWriteResponse{Request: rid, Index: 1, Term: 1, Result: res})
}

func (g *fakeGroup) count(k ridKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.applied[k]
}

// fakeCluster starts the replicas of one group "g" (ID 7) at three
// made-up addresses and a client with cfg.
func fakeCluster(t *testing.T, fg *fakeGroup, cfg ClientConfig) (*actor.ActorSystem, *GroupClient) {
	t.Helper()
	system := quietSystem()
	grp := Group{Name: "g", ID: 7, Replicas: []Replica{{1, "10.0.0.1:1"}, {2, "10.0.0.2:1"}, {3, "10.0.0.3:1"}}}
	dir, err := NewDirectory("test", grp)
	if err != nil {
		t.Fatal(err)
	}
	procs := map[string]actor.Process{}
	for _, r := range grp.Replicas {
		pid, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &fakeReplica{id: r.NodeID, g: fg} }), r.Address+"|"+actors.CoreName("test", 7, r.NodeID))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := system.ProcessRegistry.Get(pid)
		procs[r.Address+"|"+actors.CoreName("test", 7, r.NodeID)] = p
	}
	system.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		p, ok := procs[pid.GetAddress()+"|"+pid.GetId()]
		return p, ok
	})
	cfg.Directory = dir
	c, err := NewGroupClient(system, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(); system.Shutdown() })
	return system, c
}

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
}

func put(t *testing.T) *anypb.Any {
	a, err := anypb.New(&messages.KVCommand{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestClientFindsLeaderAndRetriesSafely(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(*fakeGroup, *LeaderTable)
		wantErr error
		// wantResult is the state machine's answer the caller gets.
		wantResult string
	}{
		{
			name:       "follows the not-leader hint to the leader",
			setup:      func(g *fakeGroup, _ *LeaderTable) { g.leader = 3 },
			wantResult: "applied",
		},
		{
			name: "a silent leader in the table is given up for the others' hint",
			setup: func(g *fakeGroup, lt *LeaderTable) {
				lt.Learn(7, 2)
				g.silent[2] = true
				g.leader = 1
			},
			wantResult: "applied",
		},
		{
			name: "a lost answer is retried under the same RequestID and applied once",
			setup: func(g *fakeGroup, _ *LeaderTable) {
				g.leader = 1
				g.loseReplies = 2
			},
			wantResult: "duplicate",
		},
		{
			name: "no replica answers: the outcome is unknown, not failed",
			setup: func(g *fakeGroup, _ *LeaderTable) {
				g.silent[1], g.silent[2], g.silent[3] = true, true, true
			},
			wantErr: actors.ErrUnknownOutcome,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fg := newFakeGroup(0)
			lt := NewLeaderTable()
			tc.setup(fg, lt)
			_, c := fakeCluster(t, fg, ClientConfig{Leaders: lt, AttemptTimeout: 100 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			rid := &messages.RequestID{ClientId: 99, Sequence: 1}
			res, err := c.WriteRequest(ctx, &messages.GroupWriteRequest{Group: "g", Command: put(t), Request: rid})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Data) != tc.wantResult {
				t.Fatalf("result %q, want %q", res.Data, tc.wantResult)
			}
			if n := fg.count(ridKey{99, 1}); n != 1 {
				t.Fatalf("the write was applied %d times, want once", n)
			}
			if got := lt.Leader(7); got != fg.leader {
				t.Fatalf("leader table says %d, the leader is %d", got, fg.leader)
			}
		})
	}
}

func TestClientRefusesUnknownGroup(t *testing.T) {
	_, c := fakeCluster(t, newFakeGroup(1), ClientConfig{})
	_, err := c.Write(context.Background(), "nope", &messages.KVCommand{})
	if !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("err = %v, want INVALID", err)
	}
}

// Sessions carry one write at a time, so that a retry is always of the
// session's latest sequence; many concurrent writes share a bounded pool.
func TestClientSessionsCarryOneWriteAtATime(t *testing.T) {
	fg := newFakeGroup(2)
	_, c := fakeCluster(t, fg, ClientConfig{MaxSessions: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Write(ctx, "g", &messages.KVCommand{}); err != nil {
				errs <- fmt.Errorf("write %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fg.mu.Lock()
	defer fg.mu.Unlock()
	if len(fg.last) > 4 {
		t.Fatalf("%d client IDs used, MaxSessions is 4", len(fg.last))
	}
	total := 0
	for k, n := range fg.applied {
		if n != 1 {
			t.Fatalf("write %v applied %d times", k, n)
		}
		total++
	}
	if total != 200 {
		t.Fatalf("%d writes applied, want 200", total)
	}
	for id, last := range fg.last {
		for s := uint64(1); s <= last; s++ {
			if fg.applied[ridKey{id, s}] != 1 {
				t.Fatalf("client %d: sequence %d missing: a session skipped or reordered", id, s)
			}
		}
	}
}

func TestDirectoryRefusesBadGroups(t *testing.T) {
	r3 := []Replica{{1, "a:1"}, {2, "b:1"}, {3, "c:1"}}
	cases := []struct {
		name   string
		groups []Group
	}{
		{"two groups with one name", []Group{{Name: "x", ID: 1, Replicas: r3}, {Name: "x", ID: 2, Replicas: r3}}},
		{"two groups with one ID", []Group{{Name: "x", ID: 1, Replicas: r3}, {Name: "y", ID: 1, Replicas: r3}}},
		{"group ID 0", []Group{{Name: "x", Replicas: r3}}},
		{"no replicas", []Group{{Name: "x", ID: 1}}},
		{"two replicas on one member", []Group{{Name: "x", ID: 1, Replicas: []Replica{{1, "a:1"}, {2, "a:1"}}}}},
		{"node listed twice", []Group{{Name: "x", ID: 1, Replicas: []Replica{{1, "a:1"}, {1, "b:1"}}}}},
		{"address without port", []Group{{Name: "x", ID: 1, Replicas: []Replica{{1, "a"}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewDirectory("c", tc.groups...); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
