package messages

import "google.golang.org/protobuf/proto"

// Forward wraps req, a client request a follower passes on to its leader,
// in a ForwardedRequest. It reports false for a request that is never
// forwarded.
func Forward(from uint64, hops uint32, req proto.Message) (*ForwardedRequest, bool) {
	f := &ForwardedRequest{From: from, Hops: hops}
	switch q := req.(type) {
	case *ClientWriteRequest:
		f.Request = &ForwardedRequest_Write{Write: q}
	case *ReadIndexRequest:
		f.Request = &ForwardedRequest_ReadIndex{ReadIndex: q}
	case *AddLearnerRequest:
		f.Request = &ForwardedRequest_AddLearner{AddLearner: q}
	case *ChangeMembershipRequest:
		f.Request = &ForwardedRequest_ChangeMembership{ChangeMembership: q}
	case *RemoveLearnerRequest:
		f.Request = &ForwardedRequest_RemoveLearner{RemoveLearner: q}
	case *TransferLeaderRequest:
		f.Request = &ForwardedRequest_TransferLeader{TransferLeader: q}
	default:
		return nil, false
	}
	return f, true
}

// Unwrap returns the forwarded client request, nil when there is none.
func (f *ForwardedRequest) Unwrap() proto.Message {
	switch q := f.GetRequest().(type) {
	case *ForwardedRequest_Write:
		return q.Write
	case *ForwardedRequest_ReadIndex:
		return q.ReadIndex
	case *ForwardedRequest_AddLearner:
		return q.AddLearner
	case *ForwardedRequest_ChangeMembership:
		return q.ChangeMembership
	case *ForwardedRequest_RemoveLearner:
		return q.RemoveLearner
	case *ForwardedRequest_TransferLeader:
		return q.TransferLeader
	}
	return nil
}
