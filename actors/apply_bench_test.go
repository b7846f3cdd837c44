package actors

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// BenchmarkApplyPipeline measures the apply actor's cost per committed
// write: ApplyCommitted messages of 1 or 64 entries of 128 bytes, each
// entry with a waiting client, applied to a state machine that only
// counts, and every client answered, with up to 1,024 writes in flight.
// The figure includes building the messages, as RaftCore does for each
// batch.
//
//	go test ./actors -run '^$' -bench ApplyPipeline -benchmem
func BenchmarkApplyPipeline(b *testing.B) {
	const window = 1024
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			system := quietSystem()
			defer system.Shutdown()
			st, err := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: 1})
			if err != nil {
				b.Fatal(err)
			}
			answers := &countingProcess{}
			answersPID, _ := system.ProcessRegistry.Add(answers, "bench-answers")
			core := &countingProcess{}
			corePID, _ := system.ProcessRegistry.Add(core, "bench-core")
			sm := &countingSM{}
			starts := 0
			apply := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
				return newApplyActor(1, sm, st, nil, corePID, quietLogger(), &starts)
			}))
			data := make([]byte, 128)
			b.ResetTimer()
			index := uint64(0)
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				ac := &messages.ApplyCommitted{Entries: make([]*messages.Entry, n), Waiters: make([]*messages.ApplyWaiter, n)}
				waiters := make(map[uint64]applyTarget, n)
				for k := range n {
					index++
					ac.Entries[k] = &messages.Entry{Index: index, Term: 1, Data: data}
					ac.Waiters[k] = &messages.ApplyWaiter{Handle: index, Index: index, Term: 1}
					waiters[index] = applyTarget{pid: answersPID}
				}
				ac.CommitIndex = index
				system.Root.Send(apply, &applyCommitted{msg: ac, waiters: waiters})
				// Keep at most window writes in flight, as MaxPendingWrites
				// does on a node, rather than queue b.N of them at once.
				for index-answers.n.Load() > window {
					runtime.Gosched()
				}
			}
			deadline := time.Now().Add(time.Minute)
			for answers.n.Load() < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d writes answered after a minute", answers.n.Load(), b.N)
				}
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			if got := sm.applied.Load(); got != index {
				b.Fatalf("state machine applied up to %d, want %d", got, index)
			}
		})
	}
}

// countingProcess counts the messages sent to it.
type countingProcess struct{ n atomic.Uint64 }

func (p *countingProcess) SendUserMessage(*actor.PID, any)   { p.n.Add(1) }
func (p *countingProcess) SendSystemMessage(*actor.PID, any) {}
func (p *countingProcess) Stop(*actor.PID)                   {}

// countingSM applies by counting.
type countingSM struct{ applied atomic.Uint64 }

func (s *countingSM) Apply(entries []*messages.Entry) ([]store.Result, error) {
	if len(entries) > 0 {
		s.applied.Store(entries[len(entries)-1].GetIndex())
	}
	return make([]store.Result, len(entries)), nil
}

func (s *countingSM) Snapshot() (store.StateSnapshot, error) {
	return nil, errors.New("countingSM takes no snapshot")
}
func (s *countingSM) Restore(io.Reader) error { return errors.New("countingSM restores nothing") }
func (s *countingSM) LastApplied() (uint64, uint64) {
	if i := s.applied.Load(); i > 0 {
		return i, 1
	}
	return 0, 0
}
