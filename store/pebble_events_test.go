package store_test

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

// syncBuffer is a log destination several goroutines may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A store whose memtable fills flushes it, and DiskStats and the debug log
// say so: what an operator reads to tell Pebble's own work from a slow
// disk when synced writes slow down.
func TestDiskStatsCountFlushes(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := store.OpenPebble(t.TempDir(), store.PebbleOptions{Options: storetest.Options,
		MemTableSize: 256 << 10, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.DiskStats(); got.Flushes != 0 || got.WriteStalls != 0 {
		t.Fatalf("a new store reports %+v", got)
	}
	if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1}}}); err != nil {
		t.Fatal(err)
	}
	// 4 MiB of entries through a 256 KiB memtable.
	payload := bytes.Repeat([]byte{'x'}, 4096)
	for i := uint64(1); i <= 1024; i += 16 {
		ents := make([]*messages.Entry, 16)
		for j := range ents {
			ents[j] = &messages.Entry{Index: i + uint64(j), Term: 1, Data: payload}
		}
		if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: ents}}); err != nil {
			t.Fatal(err)
		}
	}
	// Flushes finish in the background: wait for the first one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for s.DiskStats().Flushes == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no flush reported after 4 MiB through a 256 KiB memtable: %+v", s.DiskStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.DiskStats(); got.FlushTime <= 0 {
		t.Errorf("flushes took no time: %+v", got)
	}
	if !strings.Contains(logs.String(), "pebble flush") {
		t.Errorf("no flush in the debug log:\n%s", logs.String())
	}
	// The entries are all there after the flushes.
	ents, err := s.Entries(1, 1, 1025, 0)
	if err != nil || len(ents) != 1024 {
		t.Fatalf("Entries after flushes: %d entries, %v", len(ents), err)
	}
}

// writeLog appends n entries of 1 KiB to group 1, 16 to an append, with
// the hard state in every append or only in the first, and returns the
// store's DiskStats once it is closed (Close waits for the compactions
// under way).
func writeLog(t *testing.T, n uint64, hardStateEveryAppend bool) store.DiskStats {
	t.Helper()
	s, err := store.OpenPebble(t.TempDir(), store.PebbleOptions{Options: storetest.Options,
		MemTableSize: 256 << 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Random bytes, so that the tables are as large as the entries.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := uint64(1); i <= n; i += 16 {
		ap := &messages.StorageAppend{GroupId: 1}
		if i == 1 || hardStateEveryAppend {
			ap.HardState = &messages.HardState{Term: 1, Commit: i - 1}
		}
		for j := range uint64(16) {
			payload := make([]byte, 1024)
			for k := range payload {
				payload[k] = byte(rng.Uint32())
			}
			ap.Entries = append(ap.Entries, &messages.Entry{Index: i + j, Term: 1, Data: payload})
		}
		if _, err := s.Append([]*messages.StorageAppend{ap}); err != nil {
			t.Fatal(err)
		}
	}
	// Overlapping tables stack up in level 0 and a compaction starts in
	// the background: wait for the first. Disjoint ones stay side by side
	// in one sublevel, which starts none.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for hardStateEveryAppend && s.DiskStats().Compactions == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no compaction after %d entries: %+v", n, s.DiskStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return s.DiskStats()
}

// A log written in a steady term, entries only, is flushed into tables of
// disjoint index ranges, which Pebble keeps side by side in one sublevel
// of level 0 and does not compact (not below 500 of them, Pebble's
// L0CompactionFileThreshold): each entry is written once to the WAL and
// once to a table.
// A hard state in every append, as RaftCore wrote before it kept the
// commit index out of them (core's TestHardStateIsWrittenWhenTermOrVoteChange),
// puts one key in every table, so that the tables overlap and compactions
// rewrite the log. The counts are what DiskStats reports to operators.
func TestSteadyLogIsNotRewrittenByCompactions(t *testing.T) {
	const n = 16 << 10 // 16 MiB of entries through a 256 KiB memtable
	entriesOnly := writeLog(t, n, false)
	t.Logf("entries only: %d flushes (%d KiB), %d compactions, %d moves, %d KiB rewritten",
		entriesOnly.Flushes, entriesOnly.FlushedBytes>>10, entriesOnly.Compactions, entriesOnly.Moves, entriesOnly.RewrittenBytes>>10)
	if entriesOnly.Flushes < 8 || entriesOnly.FlushedBytes < n<<10/2 {
		t.Fatalf("16 MiB through a 256 KiB memtable flushed only %d times, %d bytes", entriesOnly.Flushes, entriesOnly.FlushedBytes)
	}
	if entriesOnly.RewrittenBytes > entriesOnly.FlushedBytes/10 {
		t.Errorf("entries only: %d bytes rewritten for %d flushed; want under a tenth",
			entriesOnly.RewrittenBytes, entriesOnly.FlushedBytes)
	}
	everyAppend := writeLog(t, n, true)
	t.Logf("hard state in every append: %d flushes (%d KiB), %d compactions, %d moves, %d KiB rewritten",
		everyAppend.Flushes, everyAppend.FlushedBytes>>10, everyAppend.Compactions, everyAppend.Moves, everyAppend.RewrittenBytes>>10)
	if everyAppend.RewrittenBytes < everyAppend.FlushedBytes/2 {
		t.Errorf("hard state in every append: %d bytes rewritten for %d flushed; the overlap this test is about is gone, and so is its point",
			everyAppend.RewrittenBytes, everyAppend.FlushedBytes)
	}
}
