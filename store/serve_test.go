package store_test

import (
	"testing"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

// TestServe checks that the actor-facing answers carry the request's group
// and seq, the data, and typed errors.
func TestServe(t *testing.T) {
	s, err := store.NewMemStore(storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]*messages.StorageAppend{{GroupId: 3, HardState: &messages.HardState{Term: 2, Commit: 2},
		Entries: []*messages.Entry{{Index: 1, Term: 1}, {Index: 2, Term: 2}, {Index: 3, Term: 2}}}}); err != nil {
		t.Fatal(err)
	}
	if r := store.ServeLoad(s, &messages.StorageLoad{GroupId: 3}); r.Error != nil || r.GroupId != 3 || r.State.LastIndex != 3 {
		t.Fatalf("load: %v", r)
	}
	if r := store.ServeReadEntries(s, &messages.StorageReadEntries{GroupId: 3, Seq: 4, Lo: 2, Hi: 4}); r.Error != nil || r.Seq != 4 || len(r.Entries) != 2 {
		t.Fatalf("read: %v", r)
	}
	if r := store.ServePurge(s, &messages.StoragePurge{GroupId: 3, Index: 2}); r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("purge without a snapshot: %v, want INVALID", r)
	}
	w, _ := s.CreateSnapshot(3, &messages.SnapshotMeta{Index: 2, Term: 2})
	w.Write([]byte("abcdef"))
	meta, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if r := store.ServePurge(s, &messages.StoragePurge{GroupId: 3, Index: 2}); r.Error != nil || r.FirstIndex != 3 {
		t.Fatalf("purge: %v", r)
	}
	if r := store.ServeReadEntries(s, &messages.StorageReadEntries{GroupId: 3, Seq: 5, Lo: 1, Hi: 4}); r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_COMPACTED || r.Seq != 5 {
		t.Fatalf("read of purged entries: %v, want COMPACTED", r)
	}
	r := store.ServeSnapshotChunk(s, &messages.StorageReadSnapshotChunk{GroupId: 3, Seq: 6, SnapshotId: meta.Id, Offset: 2, MaxBytes: 3})
	if r.Error != nil || string(r.Data) != "cde" || r.Done || r.Offset != 2 || r.Meta.GetId() != meta.Id {
		t.Fatalf("chunk: %v", r)
	}
	r = store.ServeSnapshotChunk(s, &messages.StorageReadSnapshotChunk{GroupId: 3, SnapshotId: meta.Id, Offset: 5, MaxBytes: 3})
	if string(r.Data) != "f" || !r.Done {
		t.Fatalf("last chunk: %v", r)
	}
}
