package store_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

// Pebble: a group's log entries are keyed (group, kind, big-endian index),
// so that each group's log is one contiguous, index-ordered key range that
// no other group's entry falls into, whatever the indexes' byte lengths.
func TestLogKeysAreContiguousPerGroup(t *testing.T) {
	groups := []uint64{1, 2, 255, 256, 1 << 40}
	indexes := []uint64{0, 1, 255, 256, 65535, 65536, 1 << 32, 1<<63 - 1}
	for gi, g := range groups {
		for k := 1; k < len(indexes); k++ {
			if bytes.Compare(store.EntryKey(g, indexes[k-1]), store.EntryKey(g, indexes[k])) >= 0 {
				t.Fatalf("group %d: the key of index %d does not sort before the key of index %d", g, indexes[k-1], indexes[k])
			}
		}
		lo, hi := store.EntryKey(g, 0), store.EntryKey(g, 1<<63-1)
		for _, other := range groups[:gi] {
			for _, i := range indexes {
				if k := store.EntryKey(other, i); bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0 {
					t.Fatalf("entry %d of group %d falls inside the key range of group %d", i, other, g)
				}
			}
		}
	}
}

// countingFS counts the writes and syncs of the files under it.
type countingFS struct {
	mu     sync.Mutex
	writes []string
	syncs  []string
}

func (c *countingFS) wrap(fs vfs.FS) vfs.FS {
	return errorfs.Wrap(fs, errorfs.InjectorFunc(func(op errorfs.Op) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt:
			c.writes = append(c.writes, op.Path)
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			c.syncs = append(c.syncs, op.Path)
		}
		return nil
	}))
}

func (c *countingFS) reset() (writes, syncs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	writes, syncs = c.writes, c.syncs
	c.writes, c.syncs = nil, nil
	return writes, syncs
}

// Pebble: the hard state and the entries of an append (of several groups)
// go to the disk in one batch with one sync: one write and one sync of
// Pebble's write-ahead log, never a hard state that a crash can separate
// from its entries. A purge is one range deletion, not a tombstone per
// entry.
func TestAppendIsOneSyncedBatchAndPurgeOneRangeDeletion(t *testing.T) {
	mem := vfs.NewCrashableMem()
	var c countingFS
	s, err := store.OpenPebble("/raftor", store.PebbleOptions{Options: storetest.Options, FS: c.wrap(mem), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ents := func(group, from uint64, n int) []*messages.Entry {
		out := make([]*messages.Entry, n)
		for i := range out {
			out[i] = &messages.Entry{Index: from + uint64(i), Term: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: bytes.Repeat([]byte{byte(group)}, 100)}
		}
		return out
	}
	appendOK := func(reqs ...*messages.StorageAppend) {
		t.Helper()
		res, err := s.Append(reqs)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.GetError() != nil {
				t.Fatalf("append: %v", r.GetError())
			}
		}
	}
	appendOK(&messages.StorageAppend{GroupId: 1, Seq: 1, HardState: &messages.HardState{Term: 2}, Entries: ents(1, 1, 1990)})
	c.reset()
	appendOK(&messages.StorageAppend{GroupId: 1, Seq: 2, HardState: &messages.HardState{Term: 2, Vote: 3}, Entries: ents(1, 1991, 10)},
		&messages.StorageAppend{GroupId: 2, Seq: 1, HardState: &messages.HardState{Term: 2, Vote: 1}, Entries: ents(2, 1, 10)})
	writes, syncs := c.reset()
	if len(writes) != 1 || len(syncs) != 1 || !strings.HasSuffix(syncs[0], ".log") {
		t.Fatalf("an append of two groups' hard states and entries wrote %v and synced %v; want one write and one sync of the WAL", writes, syncs)
	}
	// A crash right after: both groups' hard state and entries, together.
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s, err = store.OpenPebble("/raftor", store.PebbleOptions{Options: storetest.Options, FS: c.wrap(crashed), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for g, want := range map[uint64]uint64{1: 2000, 2: 10} {
		st, err := s.Load(g)
		if err != nil || st.GetLastIndex() != want || st.GetHardState().GetTerm() != 2 || st.GetHardState().GetVote() == 0 {
			t.Fatalf("group %d after the crash: last %d hard state %v (%v); want %d and term 2", g, st.GetLastIndex(), st.GetHardState(), err, want)
		}
	}
	w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 1990, Term: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("state"))
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(1, 1990); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	tables, err := s.DB().SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	var points, ranges uint64
	for _, level := range tables {
		for _, tb := range level {
			ranges += tb.Properties.NumRangeDeletions
			points += tb.Properties.NumDeletions - tb.Properties.NumRangeDeletions
		}
	}
	if ranges != 1 || points != 0 {
		t.Fatalf("purging 1990 entries left %d range deletions and %d point deletions; want one range deletion", ranges, points)
	}
	if got, _ := s.FirstIndex(1); got != 1991 {
		t.Fatalf("first index %d after the purge, want 1991", got)
	}
}

// Pebble: a log in an LSM can take many times its size on disk. Through a
// 1 MiB memtable, 64 MiB of 1 KiB entries pass through a log that keeps
// 256 entries after each snapshot (every 1024 entries); compaction
// reclaims what the purges' range deletions cover, so the disk holds a few
// memtables' worth however much was written. BenchmarkLogSpace measures
// the same on a real disk with the default memtable.
func TestLogDiskUsageStaysBoundedAsItChurns(t *testing.T) {
	const memtable = 1 << 20
	s, err := store.OpenPebble("/raftor", store.PebbleOptions{Options: storetest.Options, FS: vfs.NewMem(), MemTableSize: memtable, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1}}}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1024)
	next := uint64(1)
	var peak uint64
	for k := 0; k < 1024; k++ {
		ents := make([]*messages.Entry, 64)
		for i := range ents {
			ents[i] = &messages.Entry{Index: next + uint64(i), Term: 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: data}
		}
		if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: ents}}); err != nil {
			t.Fatal(err)
		}
		next += 64
		if last := next - 1; last%1024 == 0 {
			w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: last - 256, Term: 1})
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("state"))
			if _, err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Purge(1, last-256); err != nil {
				t.Fatal(err)
			}
		}
		if k >= 256 && k%8 == 0 {
			peak = max(peak, s.DB().Metrics().DiskSpaceUsage())
		}
	}
	written := (next - 1) * uint64(len(data))
	t.Logf("%d MiB written; disk peaked at %.1f MiB after the first 16 MiB", written>>20, float64(peak)/(1<<20))
	if peak > 8*memtable {
		t.Fatalf("the log's disk usage reached %.1f MiB for 256 KiB of live entries through a 1 MiB memtable: space is not reclaimed", float64(peak)/(1<<20))
	}
}
