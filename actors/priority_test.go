package actors

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
)

// RaftCore's mailbox serves results of work under way before ticks, and
// ticks before new client requests (which arrive in envelopes, at the
// default priority), whatever order they were queued in.
func TestRaftCoreMailboxPriorities(t *testing.T) {
	q := actor.NewPriorityGoringQueue()
	write := &actor.MessageEnvelope{Message: &messages.ClientWriteRequest{}, Sender: actor.NewPID("x", "client")}
	flush := &coreFlush{}
	drain := &coreDrain{}
	tick := &coreTick{}
	results := []any{
		&messages.StorageAppendResult{}, &messages.ReplicationReport{}, &messages.ApplyResult{},
		&messages.StorageLoadResult{}, &messages.SnapshotBuilt{}, &messages.SnapshotRestored{},
		&messages.StoragePurgeResult{}, &messages.StorageSnapshotChunkWritten{}, &relayed{}, &applyRestarted{},
	}
	q.Push(drain)
	q.Push(write)
	q.Push(flush)
	q.Push(tick)
	for _, r := range results {
		q.Push(r)
	}
	var order []any
	for m := q.Pop(); m != nil; m = q.Pop() {
		order = append(order, m)
	}
	want := append(append([]any{}, results...), tick, write, flush, drain)
	if len(order) != len(want) {
		t.Fatalf("popped %d messages, want %d", len(order), len(want))
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("message %d out of the mailbox is %T, want %T", i, order[i], want[i])
		}
	}
}
