package core_test

import (
	"fmt"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
)

// A single-node group driven by hand: what an actor does with each Ready.
// Storage and the state machine are stand-ins that answer at once.
func Example() {
	c, err := core.New(core.Config{ClusterID: "demo", GroupID: 1, ID: 1}, nil)
	if err != nil {
		panic(err)
	}
	var log []*messages.Entry // the "disk"
	drain := func() {
		for c.HasReady() {
			rd := c.Ready()
			for _, ap := range rd.Persist { // storage actor: write, fsync, answer
				for _, e := range ap.Entries {
					log = append(log[:e.Index-1], e)
				}
				_ = c.Step(&messages.StorageAppendResult{GroupId: 1, Seq: ap.Seq, LastIndex: uint64(len(log))})
			}
			for _, m := range rd.Apply { // apply actor: apply, answer waiters
				if ac, ok := m.(*messages.ApplyCommitted); ok {
					for _, w := range ac.Waiters {
						fmt.Printf("write %d applied at index %d: %s\n", w.Handle, w.Index, log[w.Index-1].Data)
					}
					_ = c.Step(&messages.ApplyResult{AppliedIndex: ac.CommitIndex})
				}
			}
			for _, r := range rd.Responses {
				fmt.Printf("answer to %d: %T\n", r.Handle, r.Msg)
			}
			if rd.SoftState != nil {
				fmt.Printf("now %v in term %d\n", rd.SoftState.Role, rd.SoftState.Term)
			}
		}
	}
	c.Initialize(1, &messages.InitializeRequest{Membership: &messages.Membership{Voters: []uint64{1}}})
	drain()
	c.Campaign()
	drain()
	c.Propose(2, &messages.ClientWriteRequest{Data: []byte("hello")})
	drain()
	// Output:
	// now ROLE_FOLLOWER in term 1
	// answer to 1: *messages.InitializeResponse
	// now ROLE_LEADER in term 2
	// write 2 applied at index 3: hello
}
