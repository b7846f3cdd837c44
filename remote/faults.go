package remote

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"
)

// Verdict is what an inbound fault filter decides for one message. The zero
// Verdict delivers the message unchanged.
type Verdict struct {
	// Drop discards the message, as a lost packet or a cut link would.
	Drop bool
	// Duplicates is how many extra copies are delivered with it.
	Duplicates int
	// Delay holds the message (and its copies) back before delivering it.
	// Messages delayed by different amounts overtake each other, which
	// protoactor's ordered streams never do on their own.
	Delay time.Duration
}

// InboundFilter decides the fate of each message that arrives from the node
// at address from; typeName is the message's protobuf full name (such as
// "raftor.v1.AppendEntriesRequest"). It runs on the connection's receiving
// goroutine for every envelope, so it must be fast and safe for concurrent
// use. It exists for fault injection in tests: cutting the link A->B is B's
// filter dropping everything from A's address.
type InboundFilter func(from, typeName string) Verdict

// FaultStats counts what an InboundFilter did.
type FaultStats struct {
	Dropped, Duplicated, Delayed uint64
}

// faults applies Config.Inbound to batches the guard has already validated.
// It is nil when no filter is configured, and then costs one nil check per
// batch.
type faults struct {
	filter InboundFilter
	system *actor.ActorSystem

	dropped, duplicated, delayed atomic.Uint64

	mu     sync.Mutex
	closed bool
	timers map[*time.Timer]struct{}
}

func newFaults(system *actor.ActorSystem, f InboundFilter) *faults {
	if f == nil {
		return nil
	}
	return &faults{filter: f, system: system, timers: map[*time.Timer]struct{}{}}
}

// apply rewrites b in place as the filter decides. from is the address the
// connection announced; when it is unknown, the envelope's sender PID says.
// Delayed envelopes leave the batch and are delivered to their target
// later, the way protoactor's reader delivers them.
func (f *faults) apply(b *pr.MessageBatch, from string) {
	kept := make([]*pr.MessageEnvelope, 0, len(b.Envelopes))
	for _, env := range b.Envelopes {
		src := from
		if src == "" && env.Sender > 0 {
			src = b.Senders[env.Sender-1].GetAddress()
		}
		typeName := b.TypeNames[env.TypeId]
		v := f.filter(src, typeName)
		if v.Drop {
			f.dropped.Add(1)
			continue
		}
		copies := 1 + max(v.Duplicates, 0)
		if copies > 1 {
			f.duplicated.Add(uint64(copies - 1))
		}
		if v.Delay > 0 && f.delay(b, env, typeName, copies, v.Delay) {
			f.delayed.Add(1)
			continue
		}
		for i := 0; i < copies; i++ {
			kept = append(kept, env)
		}
	}
	b.Envelopes = kept
}

// delay schedules copies of env for delivery after d. It reports false
// when the envelope must stay in the batch: a system message (watch,
// terminate), whose handling protoactor's reader owns, or one that does
// not deserialize (the reader then reports it).
func (f *faults) delay(b *pr.MessageBatch, env *pr.MessageEnvelope, typeName string, copies int, d time.Duration) bool {
	msg, err := pr.Deserialize(env.MessageData, typeName, env.SerializerId)
	if err != nil {
		return false
	}
	if _, ok := msg.(actor.SystemMessage); ok {
		return false
	}
	if _, ok := msg.(*actor.Terminated); ok {
		return false
	}
	target := pidAt(b.Targets[env.Target], env.TargetRequestId)
	var sender *actor.PID
	if env.Sender > 0 {
		sender = pidAt(b.Senders[env.Sender-1], env.SenderRequestId)
	}
	var header map[string]string
	if env.MessageHeader != nil {
		header = env.MessageHeader.HeaderData
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return true // the remote is shutting down: the message is lost
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		f.mu.Lock()
		_, live := f.timers[t]
		delete(f.timers, t)
		f.mu.Unlock()
		if !live {
			return
		}
		for i := 0; i < copies; i++ {
			m := msg
			if i > 0 {
				if pm, ok := msg.(proto.Message); ok {
					m = proto.Clone(pm)
				}
			}
			if sender == nil && header == nil {
				f.system.Root.Send(target, m)
				continue
			}
			f.system.Root.Send(target, &actor.MessageEnvelope{Header: header, Message: m, Sender: sender})
		}
	})
	f.timers[t] = struct{}{}
	return true
}

// pidAt is pid with a request ID, copied so the batch's table stays intact.
func pidAt(pid *actor.PID, requestID uint32) *actor.PID {
	if requestID == 0 {
		return pid
	}
	c := proto.Clone(pid).(*actor.PID)
	c.RequestId = requestID
	return c
}

// close drops every message still held back.
func (f *faults) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for t := range f.timers {
		t.Stop()
	}
	clear(f.timers)
}

func (f *faults) stats() FaultStats {
	if f == nil {
		return FaultStats{}
	}
	return FaultStats{Dropped: f.dropped.Load(), Duplicated: f.duplicated.Load(), Delayed: f.delayed.Load()}
}

// FaultStats returns what Config.Inbound dropped, duplicated and delayed.
func (r *Remote) FaultStats() FaultStats { return r.guard.faults.stats() }
