package messages

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// EntrySize returns proto.Size(e): the length of e's encoding. Every entry's
// size is needed several times on its way (the proposal's limit, the
// replication window, the stream's cache, the apply actor's snapshot
// trigger), and proto.Size walks the message by reflection; this adds up
// the fields of an Entry directly and asks proto.Size only for the nested
// messages that a plain write does not carry (command, membership).
// TestEntrySizeMatchesProtoSize holds the two together, field by field.
func EntrySize(e *Entry) int {
	if e == nil {
		return 0
	}
	n := 0
	if e.Term != 0 {
		n += 1 + protowire.SizeVarint(e.Term)
	}
	if e.Index != 0 {
		n += 1 + protowire.SizeVarint(e.Index)
	}
	if e.Kind != 0 {
		n += 1 + protowire.SizeVarint(uint64(int64(e.Kind)))
	}
	if len(e.Data) > 0 {
		n += 1 + protowire.SizeBytes(len(e.Data))
	}
	if e.Command != nil {
		n += 1 + protowire.SizeBytes(proto.Size(e.Command))
	}
	if e.Membership != nil {
		n += 1 + protowire.SizeBytes(proto.Size(e.Membership))
	}
	if r := e.Request; r != nil {
		m := 0
		if r.ClientId != 0 {
			m += 1 + protowire.SizeVarint(r.ClientId)
		}
		if r.Sequence != 0 {
			m += 1 + protowire.SizeVarint(r.Sequence)
		}
		m += len(r.unknownFields)
		n += 1 + protowire.SizeBytes(m)
	}
	return n + len(e.unknownFields)
}
