package actors

import (
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
)

// Messages from other nodes that Raft refuses are counted by reason in the
// node's metrics (they are logged at debug level), and refusing them
// changes nothing: the node keeps leading and serving.
func TestRefusedWireMessagesAreCounted(t *testing.T) {
	tc := newTestCluster(t, nil)
	n := tc.start(1)
	if err := n.node.Initialize(ctxT(t, 20*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	l := tc.leader()
	write(t, l.node, "before")
	term := l.node.Metrics().GetTerm()

	hdr := func(cluster string, from uint64) *messages.Header {
		return &messages.Header{ClusterId: cluster, GroupId: 1, From: from, To: 1, Term: term + 5}
	}
	for _, m := range []any{
		&messages.VoteRequest{Header: hdr("another-cluster", 1), LastLogIndex: 100, LastLogTerm: term + 5},
		&messages.AppendEntriesRequest{Header: hdr("another-cluster", 1)},
		&messages.VoteRequest{Header: hdr(testClusterID, 9), LastLogIndex: 100, LastLogTerm: term + 5},
	} {
		tc.system.Root.Send(l.node.PID(), m)
	}
	waitFor(t, 10*time.Second, "the refusals to be counted", func() bool {
		r := l.node.Metrics().GetRejectedMessages()
		return r["ERROR_CODE_WRONG_CLUSTER"] == 2 && r["ERROR_CODE_UNKNOWN_SENDER"] == 1
	})
	if m := l.node.Metrics(); m.GetTerm() != term || m.GetRole() != messages.Role_ROLE_LEADER {
		t.Fatalf("a refused message changed the node: term %d -> %d, role %v", term, m.GetTerm(), m.GetRole())
	}
	write(t, l.node, "after")
}
