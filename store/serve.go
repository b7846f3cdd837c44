package store

import (
	"github.com/raftor/raftor/messages"
)

// The Serve functions answer the storage actor's messages (internal.proto)
// from a Store, so that the actor is a thin loop: appends go through a
// Committer, everything else through these.

// ServeLoad answers a StorageLoad.
func ServeLoad(s LogStore, m *messages.StorageLoad) *messages.StorageLoadResult {
	st, err := s.Load(m.GetGroupId())
	return &messages.StorageLoadResult{GroupId: m.GetGroupId(), State: st, Error: ToProto(err)}
}

// ServeReadEntries answers a StorageReadEntries.
func ServeReadEntries(s LogStore, m *messages.StorageReadEntries) *messages.StorageEntries {
	ents, err := s.Entries(m.GetGroupId(), m.GetLo(), m.GetHi(), m.GetMaxBytes())
	return &messages.StorageEntries{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Entries: ents, Error: ToProto(err)}
}

// ServePurge answers a StoragePurge.
func ServePurge(s LogStore, m *messages.StoragePurge) *messages.StoragePurgeResult {
	first, err := s.Purge(m.GetGroupId(), m.GetIndex())
	return &messages.StoragePurgeResult{GroupId: m.GetGroupId(), FirstIndex: first, Error: ToProto(err)}
}

// ServeSnapshotChunk answers a StorageReadSnapshotChunk.
func ServeSnapshotChunk(s SnapshotStore, m *messages.StorageReadSnapshotChunk) *messages.StorageSnapshotChunk {
	meta, data, done, err := s.ReadSnapshotChunk(m.GetGroupId(), m.GetSnapshotId(), m.GetOffset(), m.GetMaxBytes())
	return &messages.StorageSnapshotChunk{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Meta: meta, Offset: m.GetOffset(),
		Data: data, Done: done, Error: ToProto(err)}
}
