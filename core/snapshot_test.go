package core

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

func snapMeta(id string, index, term uint64) *messages.SnapshotMeta {
	return &messages.SnapshotMeta{Id: id, Index: index, Term: term, Size: 1,
		Membership: &messages.Membership{Voters: []uint64{1, 2, 3}}, MembershipIndex: 1}
}

// installs steps a one-chunk snapshot from leader 2 in term 2 through the
// storage write.
func (tc *testCore) install(meta *messages.SnapshotMeta) {
	tc.t.Helper()
	tc.mustStep(&messages.InstallSnapshotRequest{Header: hdr(2, 1, 2), Meta: meta, Data: []byte("x"), Done: true, Seq: meta.Index})
	tc.mustStep(&messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: meta.Index, Meta: meta, NextOffset: 1, Done: true})
}

// A follower installs a snapshot: the log's base moves (the whole log goes
// when it conflicts), the state machine is restored only once the new base
// is durable, and the leader hears "done" only after the restore.
func TestInstallSnapshot(t *testing.T) {
	tests := []struct {
		name     string
		terms    []uint64
		wantLast uint64
	}{
		{"log holds the snapshot's entry: suffix kept", []uint64{1, 2, 2, 2, 2, 2, 2}, 7},
		{"log conflicts at the snapshot's index: all dropped", []uint64{1, 1, 1, 1, 1, 1, 1}, 5},
		{"log shorter than the snapshot", []uint64{1, 2}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three, withTerms(tt.terms...), withHardState(2, 0, 1))
			c.hold = true
			c.install(snapMeta("s5", 5, 2))
			rd := c.take()
			if len(restores(rd)) != 0 || len(sentOf[*messages.InstallSnapshotResponse](rd)) != 0 {
				t.Fatalf("restored or answered before the new base was durable: %v %v", rd.Apply, rd.Send)
			}
			if len(rd.Persist) != 1 || rd.Persist[0].Snapshot.GetId() != "s5" {
				t.Fatalf("persist %v", rd.Persist)
			}
			c.ack(rd.Persist[0])
			rd = c.take()
			rs5 := restores(rd)
			if len(rs5) != 1 || rs5[0].Meta.GetId() != "s5" {
				t.Fatalf("apply %v", rd.Apply)
			}
			c.mustStep(&messages.SnapshotRestored{Seq: rs5[0].Seq, Meta: snapMeta("s5", 5, 2)})
			rs := sentOf[*messages.InstallSnapshotResponse](c.take())
			if len(rs) != 1 || !rs[0].Done {
				t.Fatalf("answer %v", rs)
			}
			st := c.Status()
			if st.SnapshotIndex != 5 || st.Commit < 5 || st.Applied != 5 || st.LastIndex != tt.wantLast || st.FirstIndex != 6 {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// Two installs may overlap while the first waits for its fsync; both
// restores are accepted in order and the node ends on the newer snapshot.
func TestOverlappingInstalls(t *testing.T) {
	c := newTestCore(t, 1, three, withHardState(2, 0, 1))
	c.hold = true
	c.install(snapMeta("a", 5, 2))
	c.install(snapMeta("b", 8, 2))
	rd := c.take()
	for _, ap := range rd.Persist {
		c.ack(ap)
	}
	rd = c.take()
	if len(restores(rd)) != 2 {
		t.Fatalf("apply %v", rd.Apply)
	}
	for _, r := range restores(rd) {
		c.mustStep(&messages.SnapshotRestored{Seq: r.Seq, Meta: r.Meta})
	}
	if st := c.Status(); st.SnapshotIndex != 8 || st.Applied != 8 || st.LastIndex != 8 {
		t.Fatalf("status %+v", st)
	}
	if err := c.step(&messages.SnapshotRestored{Seq: 9, Meta: snapMeta("c", 9, 2)}); err == nil {
		t.Fatal("restore of a snapshot never asked for accepted")
	}
}

func restores(rd Ready) []*messages.RestoreSnapshot {
	var out []*messages.RestoreSnapshot
	for _, a := range rd.Apply {
		if r, ok := a.(*messages.RestoreSnapshot); ok {
			out = append(out, r)
		}
	}
	return out
}

// A store names a received snapshot itself (it never takes a file name from
// the network). The follower must make the stored snapshot its log's base
// and restore from it, and still answer the leader under the leader's ID.
func TestInstallSnapshotStoredUnderLocalID(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 2), withHardState(2, 0, 1))
	c.hold = true
	leaderMeta := snapMeta("leader-5", 5, 2)
	localMeta := snapMeta("local-17", 5, 2)
	c.mustStep(&messages.InstallSnapshotRequest{Header: hdr(2, 1, 2), Meta: leaderMeta, Data: []byte("x"), Done: true, Seq: 5})
	c.mustStep(&messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: 5, Meta: localMeta, NextOffset: 1, Done: true})
	rd := c.take()
	if len(rd.Persist) != 1 || rd.Persist[0].Snapshot.GetId() != "local-17" {
		t.Fatalf("the log's base must be the stored snapshot: persist %v", rd.Persist)
	}
	c.ack(rd.Persist[0])
	rs := restores(c.take())
	if len(rs) != 1 || rs[0].Meta.GetId() != "local-17" {
		t.Fatalf("restore must open the stored snapshot: %v", rs)
	}
	c.mustStep(&messages.SnapshotRestored{Seq: rs[0].Seq, Meta: localMeta})
	ans := sentOf[*messages.InstallSnapshotResponse](c.take())
	if len(ans) != 1 || !ans[0].Done || ans[0].SnapshotId != "leader-5" {
		t.Fatalf("the leader must hear done for its own snapshot ID: %v", ans)
	}
	if st := c.Status(); st.SnapshotIndex != 5 || st.Applied != 5 {
		t.Fatalf("status %+v", st)
	}
}

// Storage makes a received snapshot the log's base when it writes the last
// chunk. If a newer leader's append arrived meanwhile (the install's term is
// over), the core must still follow the store: otherwise it believes its log
// ends below the store's base, its next append is refused as "covered by the
// snapshot", and the node's storage fails (simulator seed 849, actor mode).
func TestInstallFinishedAfterTermChangeIsAdopted(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 2), withHardState(2, 0, 1))
	leaderMeta := snapMeta("leader-9", 9, 2)
	localMeta := snapMeta("local-3", 9, 2)
	c.mustStep(&messages.InstallSnapshotRequest{Header: hdr(2, 1, 2), Meta: leaderMeta, Data: []byte("x"), Done: true, Seq: 5})
	c.take()
	// A leader of term 3 appears before the last chunk is durable.
	c.mustStep(&messages.AppendEntriesRequest{Header: hdr(3, 1, 3), PrevLogIndex: 2, PrevLogTerm: 2, Heartbeat: true, Seq: 1})
	c.take()
	// Storage has installed the snapshot; the core adopts it.
	c.mustStep(&messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: 5, Meta: localMeta, NextOffset: 1, Done: true})
	rd := c.take()
	if st := c.Status(); st.SnapshotIndex != 9 || st.FirstIndex != 10 || st.LastIndex != 9 || st.Commit != 9 {
		t.Fatalf("after the install: snapshot %d first %d last %d commit %d, want 9 10 9 9",
			st.SnapshotIndex, st.FirstIndex, st.LastIndex, st.Commit)
	}
	if ans := sentOf[*messages.InstallSnapshotResponse](rd); len(ans) != 0 {
		t.Fatalf("no leader waits for this install, yet the core answered %v", ans)
	}
	rs := restores(rd)
	if len(rs) != 1 || rs[0].Meta.GetId() != "local-3" {
		t.Fatalf("the state machine must restore from the stored snapshot: %v", rs)
	}
	c.mustStep(&messages.SnapshotRestored{Seq: rs[0].Seq, Meta: localMeta})
	// The new leader's next append lands after the snapshot.
	c.mustStep(&messages.AppendEntriesRequest{Header: hdr(3, 1, 3), PrevLogIndex: 9, PrevLogTerm: 2, Seq: 2,
		Entries: []*messages.Entry{{Index: 10, Term: 3}}})
	rd = c.take()
	for _, p := range rd.Persist {
		if es := p.GetEntries(); len(es) > 0 && es[0].GetIndex() <= 9 {
			t.Fatalf("append below the installed snapshot: %v", p)
		}
	}
	if st := c.Status(); st.LastIndex != 10 || st.Applied != 9 {
		t.Fatalf("last %d applied %d, want 10 and 9", st.LastIndex, st.Applied)
	}
}

// A snapshot adopted late, whose entries the state machine was handed
// already, compacts the log and restores nothing: a restore would move the
// state machine back under entries it applied.
func TestLateInstallBelowAppliedRestoresNothing(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2), withHardState(2, 0, 12))
	if st := c.Status(); st.Commit != 12 {
		t.Fatalf("commit %d, want 12", st.Commit)
	}
	c.mustStep(&messages.InstallSnapshotRequest{Header: hdr(2, 1, 2), Meta: snapMeta("leader-10", 10, 2), Data: []byte("x"), Done: true, Seq: 5})
	c.mustStep(&messages.AppendEntriesRequest{Header: hdr(3, 1, 3), PrevLogIndex: 12, PrevLogTerm: 2, Heartbeat: true, Seq: 1})
	c.take()
	c.mustStep(&messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: 5, Meta: snapMeta("local-1", 10, 2), NextOffset: 1, Done: true})
	rd := c.take()
	if rs := restores(rd); len(rs) != 0 {
		t.Fatalf("restored %v, but the state machine was handed entries up to 12", rs)
	}
	if st := c.Status(); st.SnapshotIndex != 10 || st.FirstIndex != 11 || st.LastIndex != 12 || st.Commit != 12 {
		t.Fatalf("snapshot %d first %d last %d commit %d, want 10 11 12 12", st.SnapshotIndex, st.FirstIndex, st.LastIndex, st.Commit)
	}
}
