package messages

import (
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestEntrySizeMatchesProtoSize checks the hand-written size against
// protobuf's for entries that set every field, none, and the extremes of
// each varint, and fails when Entry or RequestID gains a field EntrySize
// does not know.
func TestEntrySizeMatchesProtoSize(t *testing.T) {
	if got := (&Entry{}).ProtoReflect().Descriptor().Fields().Len(); got != 7 {
		t.Fatalf("Entry has %d fields, EntrySize adds up 7: update EntrySize and this test", got)
	}
	if got := (&RequestID{}).ProtoReflect().Descriptor().Fields().Len(); got != 2 {
		t.Fatalf("RequestID has %d fields, EntrySize adds up 2: update EntrySize and this test", got)
	}
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("from a newer version"))
	withUnknown := func(e *Entry) *Entry { e.ProtoReflect().SetUnknown(unknown); return e }
	reqWithUnknown := &RequestID{ClientId: 1}
	reqWithUnknown.ProtoReflect().SetUnknown(unknown)

	cases := map[string]*Entry{
		"nil":                nil,
		"empty":              {},
		"plain write":        {Term: 3, Index: 17, Kind: EntryKind_ENTRY_KIND_NORMAL, Data: make([]byte, 128), Request: &RequestID{ClientId: 9, Sequence: 4}},
		"largest varints":    {Term: math.MaxUint64, Index: math.MaxUint64, Data: make([]byte, 1<<20), Request: &RequestID{ClientId: math.MaxUint64, Sequence: math.MaxUint64}},
		"empty request":      {Index: 1, Request: &RequestID{}},
		"membership":         {Term: 1, Index: 2, Kind: EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: &Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}, Addresses: map[uint64]string{1: "a:1", 4: "b:2"}}},
		"typed command":      {Term: 1, Index: 5, Command: &anypb.Any{TypeUrl: "type.example/x", Value: []byte("v")}},
		"negative kind":      {Kind: EntryKind(-1)},
		"unknown fields":     withUnknown(&Entry{Term: 2, Index: 3, Data: []byte("x")}),
		"unknown in request": {Term: 2, Request: reqWithUnknown},
	}
	for name, e := range cases {
		if got, want := EntrySize(e), proto.Size(e); got != want {
			t.Errorf("%s: EntrySize = %d, proto.Size = %d", name, got, want)
		}
	}
}

func BenchmarkEntrySize(b *testing.B) {
	e := &Entry{Term: 3, Index: 1 << 20, Kind: EntryKind_ENTRY_KIND_NORMAL, Data: make([]byte, 128), Request: &RequestID{ClientId: 1 << 40, Sequence: 77}}
	b.Run("EntrySize", func(b *testing.B) {
		for b.Loop() {
			_ = EntrySize(e)
		}
	})
	b.Run("proto.Size", func(b *testing.B) {
		for b.Loop() {
			_ = proto.Size(e)
		}
	})
}
