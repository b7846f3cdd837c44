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
