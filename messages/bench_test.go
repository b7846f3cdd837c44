package messages_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// appendOf is an AppendEntries request as a leader sends it: n entries of
// payload bytes each.
func appendOf(n, payload int) *messages.AppendEntriesRequest {
	req := &messages.AppendEntriesRequest{
		Header:       &messages.Header{ClusterId: "bench", GroupId: 1, From: 1, To: 2, Term: 7},
		PrevLogIndex: 1000, PrevLogTerm: 7, LeaderCommit: 999, Seq: 42,
	}
	data := make([]byte, payload)
	for i := range n {
		req.Entries = append(req.Entries, &messages.Entry{Index: 1001 + uint64(i), Term: 7,
			Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: data,
			Request: &messages.RequestID{ClientId: 99, Sequence: uint64(i)}})
	}
	return req
}

// BenchmarkAppendEntriesEncoding measures the protobuf encoding and
// decoding of the message that carries entries between nodes (its size
// per op as MB/s), per request of 1 and 64 entries of 128 bytes.
//
//	go test ./messages -run '^$' -bench Encoding -benchmem
func BenchmarkAppendEntriesEncoding(b *testing.B) {
	for _, n := range []int{1, 64} {
		req := appendOf(n, 128)
		wire, err := proto.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("marshal/entries=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			var buf []byte
			for b.Loop() {
				buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], req)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("unmarshal/entries=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				var got messages.AppendEntriesRequest
				if err := proto.Unmarshal(wire, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
