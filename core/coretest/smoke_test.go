package coretest

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

func TestSmokeReplicates(t *testing.T) {
	net := New(t, Options{ElectionTicks: 10, HeartbeatTicks: 1, PreVote: true, CheckQuorum: true}, 1, 2, 3)
	net.Elect(1)
	h := net.Node(1).Propose("x")
	net.DeliverAll()
	net.Run(3)
	r, _ := net.Node(1).Response(h).(*messages.ClientWriteResponse)
	if r == nil || r.GetError() != nil || string(r.GetResult()) != "x" {
		t.Fatalf("response %v", r)
	}
	for _, id := range net.IDs() {
		if got := net.Node(id).AppliedData(); len(got) != 1 || got[0] != "x" {
			t.Fatalf("node %d applied %v; status %+v", id, got, net.Node(id).Status())
		}
	}
}
