package messages_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Every request a follower may pass to its leader survives the round trip
// through ForwardedRequest; anything else is not forwarded.
func TestForwardRoundTrip(t *testing.T) {
	for _, req := range []proto.Message{
		&messages.ClientWriteRequest{Data: []byte("x")},
		&messages.ReadIndexRequest{WaitApplied: true},
		&messages.AddLearnerRequest{NodeId: 4, Address: "a:1"},
		&messages.ChangeMembershipRequest{Voters: []uint64{1, 2}},
		&messages.RemoveLearnerRequest{NodeId: 4},
		&messages.TransferLeaderRequest{Target: 2},
	} {
		f, ok := messages.Forward(3, 1, req)
		if !ok || f.GetFrom() != 3 || f.GetHops() != 1 || !proto.Equal(f.Unwrap(), req) {
			t.Errorf("%T: forwarded %v, %v", req, f, ok)
		}
	}
	if _, ok := messages.Forward(3, 1, &messages.MetricsRequest{}); ok {
		t.Error("a metrics request was forwarded")
	}
	if (&messages.ForwardedRequest{}).Unwrap() != nil {
		t.Error("an empty ForwardedRequest unwrapped to a request")
	}
}
