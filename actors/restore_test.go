package actors

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// installSnapshot stores, as a follower does, a snapshot of a state machine
// that applied n entries.
func installSnapshot(t *testing.T, st store.Store, n, term uint64) *messages.SnapshotMeta {
	t.Helper()
	src := &logSM{}
	for i := uint64(1); i <= n; i++ {
		if _, err := src.Apply([]*messages.Entry{{Index: i, Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	snap, _ := src.Snapshot()
	w, err := st.CreateSnapshot(1, &messages.SnapshotMeta{Index: n, Term: term,
		Membership: &messages.Membership{Voters: []uint64{1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := snap.WriteTo(&body); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body.Bytes()); err != nil {
		t.Fatal(err)
	}
	meta, err := w.Install()
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

// A restore never moves a state machine back, and a snapshot that a newer
// one replaced in the store (two installs finishing in a row) is restored
// from the newer one: both hold committed entries only. Before, the first
// case rolled the state machine back under entries it had applied, and the
// second failed the node's storage (simulator seed 767, actor mode).
func TestRestoreNeverMovesTheStateMachineBack(t *testing.T) {
	for _, tc := range []struct {
		name        string
		smApplied   uint64 // entries the state machine applied before
		restore     uint64 // the snapshot asked for (10 or 20; both stored, 20 last)
		wantApplied uint64
	}{
		{name: "replaced snapshot restores from the newer one", smApplied: 5, restore: 10, wantApplied: 20},
		{name: "the latest snapshot", smApplied: 5, restore: 20, wantApplied: 20},
		{name: "state machine already past it", smApplied: 30, restore: 20, wantApplied: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: 1})
			if err != nil {
				t.Fatal(err)
			}
			metas := map[uint64]*messages.SnapshotMeta{10: installSnapshot(t, st, 10, 2), 20: installSnapshot(t, st, 20, 3)}
			sm := &logSM{}
			for i := uint64(1); i <= tc.smApplied; i++ {
				if _, err := sm.Apply([]*messages.Entry{{Index: i, Term: 3, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte(fmt.Sprint(i))}}); err != nil {
					t.Fatal(err)
				}
			}
			starts := 0
			a := newApplyActor(1, sm, st, nil, nil, quietLogger(), &starts)
			res := a.restore(nil, &messages.RestoreSnapshot{Seq: 1, Meta: metas[tc.restore]})
			if res.GetError() != nil {
				t.Fatalf("restore of the snapshot at %d: %v", tc.restore, res.GetError())
			}
			if got, _ := sm.LastApplied(); got != tc.wantApplied {
				t.Fatalf("state machine at %d after the restore, want %d", got, tc.wantApplied)
			}
			if got := len(sm.snapshotData()); uint64(got) != tc.wantApplied {
				t.Fatalf("state machine holds %d entries, want %d", got, tc.wantApplied)
			}
			if res.GetMeta().GetIndex() != tc.restore {
				t.Fatalf("the answer names the snapshot at %d, want the one asked for (%d)", res.GetMeta().GetIndex(), tc.restore)
			}
		})
	}
}

// When the committed entries the apply actor must read next were compacted
// under a snapshot storage installed (the log is compacted as the snapshot
// is stored, after RaftCore handed the entries out by index), it restores
// from that snapshot instead of failing the node's storage (simulator seed
// 5275, actor mode), and keeps reporting progress against what RaftCore
// handed out.
func TestCompactedEntriesAreCaughtUpFromTheSnapshot(t *testing.T) {
	st, err := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	installSnapshot(t, st, 20, 2)
	sm := &logSM{}
	for i := uint64(1); i <= 5; i++ {
		if _, err := sm.Apply([]*messages.Entry{{Index: i, Term: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	starts := 0
	a := newApplyActor(1, sm, st, nil, nil, quietLogger(), &starts)
	a.commit = 15 // RaftCore handed out entries up to 15
	if _, err := st.Entries(1, 6, 16, 1<<20); err == nil {
		t.Fatal("entries 6..15 are still in the store; the test needs them compacted")
	}
	if !a.catchUpFromSnapshot(nil) {
		t.Fatal("no catch-up from the snapshot that replaced the entries")
	}
	if got, _ := sm.LastApplied(); got != 20 || len(sm.snapshotData()) != 20 {
		t.Fatalf("state machine at %d with %d entries, want 20 and 20", got, len(sm.snapshotData()))
	}
	if a.commit != 15 {
		t.Fatalf("progress is reported against %d, want what RaftCore handed out (15)", a.commit)
	}
	// Nothing newer to catch up from: the read error stands.
	if a.catchUpFromSnapshot(nil) {
		t.Fatal("caught up again from a snapshot the state machine holds already")
	}
}
