package core

import (
	"fmt"
	"testing"

	"github.com/raftor/raftor/messages"
)

// BenchmarkLeaderWriteCommit measures the core's own cost per write on a
// three-node leader: propose a batch, hand it out, acknowledge the fsync
// and both followers' matches, apply.
//
//	go test ./core -run '^$' -bench LeaderWriteCommit -benchmem
func BenchmarkLeaderWriteCommit(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := newTestCore(b, 1, three)
			c.elect(2)
			ps := make([]Proposal, batch)
			data := make([]byte, 128)
			for k := range ps {
				ps[k] = Proposal{Handle: Handle(k), Request: &messages.ClientWriteRequest{Data: data}}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				c.ProposeBatch(ps)
				rd := c.Ready()
				for _, ap := range rd.Persist {
					_ = c.Core.Step(&messages.StorageAppendResult{GroupId: 1, Seq: ap.Seq})
				}
				last := c.Status().LastIndex
				for _, p := range []uint64{2, 3} {
					_ = c.Core.Step(&messages.ReplicationReport{Term: c.Status().Term, Peer: p, MatchIndex: last, Heard: true})
				}
				rd = c.Ready()
				_ = c.Core.Step(&messages.ApplyResult{AppliedIndex: c.Status().Commit})
				c.Ready()
			}
		})
	}
}

// BenchmarkFollowerAppend measures the core's cost per entry on a
// follower: take an AppendEntries request from the leader, hand its
// entries to storage, acknowledge the fsync, answer, apply the leader's
// commit.
//
//	go test ./core -run '^$' -bench FollowerAppend -benchmem
func BenchmarkFollowerAppend(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := newTestCore(b, 2, three, withHardState(1, 1, 0))
			data := make([]byte, 128)
			last := uint64(0)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				es := make([]*messages.Entry, batch)
				for k := range es {
					es[k] = &messages.Entry{Index: last + 1 + uint64(k), Term: 1, Data: data}
				}
				prev := last
				prevTerm := uint64(0)
				if prev > 0 {
					prevTerm = 1
				}
				if err := c.Core.Step(appendReq(1, 2, 1, prev, prevTerm, prev, es...)); err != nil {
					b.Fatal(err)
				}
				last += uint64(batch)
				rd := c.Ready()
				for _, ap := range rd.Persist {
					_ = c.Core.Step(&messages.StorageAppendResult{GroupId: 1, Seq: ap.Seq})
				}
				c.Ready()
				if st := c.Status(); st.Commit > st.Applied {
					_ = c.Core.Step(&messages.ApplyResult{AppliedIndex: st.Commit})
					c.Ready()
				}
			}
			b.StopTimer()
			if st := c.Status(); st.LastIndex != last {
				b.Fatalf("follower's last index %d, want %d", st.LastIndex, last)
			}
		})
	}
}
