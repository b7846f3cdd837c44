package remote

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// faultBatch is a batch of votes with terms 1..n from sender, addressed to
// target.
func faultBatch(t *testing.T, target, sender *actor.PID, n int) *pr.MessageBatch {
	t.Helper()
	b := &pr.MessageBatch{
		TypeNames: []string{"raftor.v1.VoteRequest"},
		Targets:   []*actor.PID{target},
		Senders:   []*actor.PID{sender},
	}
	for i := 1; i <= n; i++ {
		data, err := proto.Marshal(&messages.VoteRequest{Header: &messages.Header{ClusterId: "c", Term: uint64(i)}})
		if err != nil {
			t.Fatal(err)
		}
		b.Envelopes = append(b.Envelopes, &pr.MessageEnvelope{TypeId: 0, Target: 0, Sender: 1, MessageData: data})
	}
	return b
}

func terms(b *pr.MessageBatch) []uint64 {
	var out []uint64
	for _, env := range b.Envelopes {
		m := &messages.VoteRequest{}
		_ = proto.Unmarshal(env.MessageData, m)
		out = append(out, m.GetHeader().GetTerm())
	}
	return out
}

func TestFaultFilterVerdicts(t *testing.T) {
	target := actor.NewPID("127.0.0.1:1", "core")
	sender := actor.NewPID("127.0.0.1:2", "stream")
	tests := []struct {
		name      string
		from      string // the connection's announced address
		verdict   func(term int) Verdict
		wantTerms []uint64
		wantFrom  string
		want      FaultStats
	}{
		{"deliver", "127.0.0.1:2", func(int) Verdict { return Verdict{} }, []uint64{1, 2, 3}, "127.0.0.1:2", FaultStats{}},
		{"drop all", "127.0.0.1:2", func(int) Verdict { return Verdict{Drop: true} }, nil, "127.0.0.1:2", FaultStats{Dropped: 3}},
		{"duplicate each twice", "127.0.0.1:2", func(int) Verdict { return Verdict{Duplicates: 2} }, []uint64{1, 1, 1, 2, 2, 2, 3, 3, 3}, "127.0.0.1:2", FaultStats{Duplicated: 6}},
		{"negative duplicates mean none", "127.0.0.1:2", func(int) Verdict { return Verdict{Duplicates: -4} }, []uint64{1, 2, 3}, "127.0.0.1:2", FaultStats{}},
		// Without a ConnectRequest on the stream, the sender PID names the peer.
		{"sender PID when the connection is unnamed", "", func(int) Verdict { return Verdict{} }, []uint64{1, 2, 3}, "127.0.0.1:2", FaultStats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			var mu sync.Mutex
			var froms []string
			f := newFaults(nil, func(from, typeName string) Verdict {
				mu.Lock()
				froms = append(froms, from)
				mu.Unlock()
				if typeName != "raftor.v1.VoteRequest" {
					t.Errorf("filter saw type %q", typeName)
				}
				return tt.verdict(int(calls.Add(1)))
			})
			b := faultBatch(t, target, sender, 3)
			f.apply(b, tt.from)
			if got := terms(b); !equalU64(got, tt.wantTerms) {
				t.Fatalf("delivered terms %v, want %v", got, tt.wantTerms)
			}
			for _, fr := range froms {
				if fr != tt.wantFrom {
					t.Fatalf("filter saw sender %q, want %q", fr, tt.wantFrom)
				}
			}
			if got := f.stats(); got != tt.want {
				t.Fatalf("stats %+v, want %+v", got, tt.want)
			}
		})
	}
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A delayed message leaves the batch and reaches its target later, with its
// sender, so a reply still finds its way; a shorter delay overtakes a longer
// one.
func TestFaultFilterDelayReordersAndDelivers(t *testing.T) {
	system := actor.NewActorSystem()
	defer system.Shutdown()
	got := make(chan uint64, 8)
	senders := make(chan *actor.PID, 8)
	pid, err := system.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.VoteRequest); ok {
			got <- m.GetHeader().GetTerm()
			senders <- ctx.Sender()
		}
	}), "core")
	if err != nil {
		t.Fatal(err)
	}
	sender := actor.NewPID("127.0.0.1:2", "stream")
	f := newFaults(system, func(from, typeName string) Verdict { return Verdict{} })
	delays := map[uint64]time.Duration{1: 150 * time.Millisecond, 2: 10 * time.Millisecond}
	var n atomic.Uint64
	f.filter = func(from, typeName string) Verdict {
		return Verdict{Delay: delays[n.Add(1)]}
	}
	b := faultBatch(t, pid, sender, 3)
	f.apply(b, "127.0.0.1:2")
	// Term 3 is not delayed and stays in the batch for protoactor's reader.
	if ts := terms(b); !equalU64(ts, []uint64{3}) {
		t.Fatalf("batch after delays holds terms %v, want [3]", ts)
	}
	var order []uint64
	for len(order) < 2 {
		select {
		case term := <-got:
			order = append(order, term)
			if s := <-senders; !s.Equal(sender) {
				t.Fatalf("delayed message arrived with sender %v, want %v", s, sender)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delayed messages not delivered; got %v", order)
		}
	}
	if !equalU64(order, []uint64{2, 1}) {
		t.Fatalf("delivery order %v, want the shorter delay first: [2 1]", order)
	}
	if s := f.stats(); s.Delayed != 2 {
		t.Fatalf("stats %+v, want 2 delayed", s)
	}
}

// Closing (remote shutdown) drops what is still held back.
func TestFaultFilterCloseDropsHeldMessages(t *testing.T) {
	system := actor.NewActorSystem()
	defer system.Shutdown()
	var delivered atomic.Int64
	pid := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*messages.VoteRequest); ok {
			delivered.Add(1)
		}
	}))
	f := newFaults(system, func(string, string) Verdict { return Verdict{Delay: 50 * time.Millisecond} })
	f.apply(faultBatch(t, pid, actor.NewPID("127.0.0.1:2", "s"), 2), "")
	f.close()
	f.apply(faultBatch(t, pid, actor.NewPID("127.0.0.1:2", "s"), 2), "")
	// Wait past the delay with a sentinel delivered through the same
	// system: once it arrives, any held vote would have arrived too.
	done := make(chan struct{})
	probe := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(string); ok {
			close(done)
		}
	}))
	time.AfterFunc(200*time.Millisecond, func() { system.Root.Send(probe, "tick") })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("probe not delivered")
	}
	if n := delivered.Load(); n != 0 {
		t.Fatalf("%d held messages delivered after close", n)
	}
}

// No filter: no fault state at all, so the guard's path is unchanged.
func TestNoFilterNoFaults(t *testing.T) {
	if f := newFaults(nil, nil); f != nil {
		t.Fatal("a nil filter built fault state")
	}
	var f *faults
	f.close()
	if s := f.stats(); s != (FaultStats{}) {
		t.Fatalf("stats of no filter %+v", s)
	}
}
