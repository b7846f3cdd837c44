package store_test

import (
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/raftor/raftor/messages"
)

// TestSnapshotFilesAfterCrash checks that only the recorded snapshot's body
// stays on disk: a body still being written when the node crashed, and a
// body renamed into place whose meta was never recorded, are removed when
// the store opens, and a replaced body is removed when its successor is
// recorded.
func TestSnapshotFilesAfterCrash(t *testing.T) {
	h := &pebbleHarness{}
	s := h.Open(t)
	if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1},
		Entries: []*messages.Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1}}}}); err != nil {
		t.Fatal(err)
	}
	commit := func(index uint64) *messages.SnapshotMeta {
		w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: index, Term: 1})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("body"))
		m, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	commit(1)
	kept := commit(2)
	groupDir := dir + "/snapshots/1"
	files := func() []string {
		names, err := h.fs.List(groupDir)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	if got := files(); !slices.Equal(got, []string{kept.Id}) {
		t.Fatalf("files after two commits %v, want only %s", got, kept.Id)
	}
	// In flight at the crash: a body being written, and an orphan.
	w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 2, Term: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half"))
	f, _ := h.fs.Create(groupDir+"/00000000000000000002-00000000000000000001-deadbeef", vfs.WriteCategoryUnspecified)
	f.Write([]byte("orphan"))
	f.Sync()
	f.Close()
	d, _ := h.fs.OpenDir(groupDir)
	d.Sync()
	d.Close()
	s = h.Crash(t)
	if got := files(); !slices.Equal(got, []string{kept.Id}) {
		t.Fatalf("files after the crash %v, want only %s", got, kept.Id)
	}
	if m, err := s.Snapshot(1); err != nil || m.Id != kept.Id {
		t.Fatalf("latest after the crash %v, %v", m, err)
	}
}
