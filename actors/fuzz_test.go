package actors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Fuzzing a running node with wire messages: arbitrary bytes, unmarshalled
// as each wire RPC a peer may send, are delivered to a node's RaftCore as if
// from the network. No input may make an actor fail (a panic is recovered by
// protoactor's supervision, so failures are counted from its supervision
// events, not from the process surviving), and the node keeps serving.
//
//	go test ./actors -run '^$' -fuzz FuzzNodeWireInput -fuzztime 60s

// wireKinds are the messages another node may send to a RaftCore.
var wireKinds = []func() proto.Message{
	func() proto.Message { return &messages.VoteRequest{} },
	func() proto.Message { return &messages.VoteResponse{} },
	func() proto.Message { return &messages.AppendEntriesRequest{} },
	func() proto.Message { return &messages.AppendEntriesResponse{} },
	func() proto.Message { return &messages.InstallSnapshotRequest{} },
	func() proto.Message { return &messages.InstallSnapshotResponse{} },
	func() proto.Message { return &messages.TimeoutNowRequest{} },
	func() proto.Message { return &messages.WireReject{} },
	func() proto.Message { return &messages.ForwardedRequest{} },
}

// fuzzNode is one single-node cluster shared by every fuzz input.
var fuzzNode struct {
	once     sync.Once
	system   *actor.ActorSystem
	node     *Node
	failures atomic.Int64
	err      error
}

func startFuzzNode(t *testing.T) *Node {
	fuzzNode.once.Do(func() {
		sys := quietSystem()
		sub := sys.EventStream.Subscribe(func(evt any) {
			if _, ok := evt.(*actor.SupervisorEvent); ok {
				fuzzNode.failures.Add(1)
			}
		})
		_ = sub
		tc := &testCluster{t: t, system: sys, nodes: map[uint64]*testNode{}, cfg: testConfig}
		n := tc.start(1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.node.Initialize(ctx, &messages.Membership{Voters: []uint64{1}}); err != nil {
			fuzzNode.err = err
			return
		}
		fuzzNode.system, fuzzNode.node = sys, n.node
	})
	if fuzzNode.err != nil {
		t.Fatalf("starting the fuzz node: %v", fuzzNode.err)
	}
	return fuzzNode.node
}

func FuzzNodeWireInput(f *testing.F) {
	hdr := &messages.Header{ClusterId: testClusterID, GroupId: 1, From: 2, To: 1, Term: 3}
	seeds := []proto.Message{
		&messages.VoteRequest{Header: hdr, LastLogIndex: 9, LastLogTerm: 2},
		&messages.VoteResponse{Header: hdr, Granted: true},
		&messages.AppendEntriesRequest{Header: hdr, PrevLogIndex: 1, PrevLogTerm: 1, LeaderCommit: 1,
			Entries: []*messages.Entry{{Term: 3, Index: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte("x")}}},
		&messages.AppendEntriesResponse{Header: hdr, Success: true, MatchIndex: 5},
		&messages.InstallSnapshotRequest{Header: hdr, Meta: &messages.SnapshotMeta{Id: "s", Index: 4, Term: 2, Size: 1}, Data: []byte("x"), Done: true},
		&messages.InstallSnapshotResponse{Header: hdr, SnapshotId: "s", Done: true},
		&messages.TimeoutNowRequest{Header: hdr},
		&messages.WireReject{Header: hdr},
		&messages.ForwardedRequest{From: 2, Request: &messages.ForwardedRequest_Write{Write: &messages.ClientWriteRequest{Data: []byte("x")}}},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b, false)
		f.Add(uint8(i), b, true)
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte, fromLeader bool) {
		n := startFuzzNode(t)
		msg := wireKinds[int(kind)%len(wireKinds)]()
		if err := proto.Unmarshal(data, msg); err != nil {
			return // protoactor's deserializer would have refused it too
		}
		if fromLeader {
			// Make the header plausible so the input reaches Raft's own
			// checks rather than stopping at the cluster ID.
			if h, ok := msg.ProtoReflect().Interface().(interface{ GetHeader() *messages.Header }); ok && h.GetHeader() != nil {
				h.GetHeader().ClusterId, h.GetHeader().GroupId, h.GetHeader().To = testClusterID, 1, 1
			}
		}
		fuzzNode.system.Root.Send(n.PID(), msg)
		// The node still answers, and no actor of it failed.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := n.ReadIndex(ctx); err != nil && !isRetryable(err) {
			t.Fatalf("node stopped serving after %T %v: %v (metrics %v, failures %d)", msg, msg, err, n.Metrics(), fuzzNode.failures.Load())
		}
		if f := fuzzNode.failures.Load(); f != 0 {
			t.Fatalf("%d actor failures after %T %v", f, msg, msg)
		}
	})
}

// isRetryable reports errors a healthy node may give while leadership
// settles (a fuzz input may carry a term that makes it campaign again).
func isRetryable(err error) bool {
	for _, e := range []error{ErrNotLeader, ErrTimeout, ErrNoQuorum} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
