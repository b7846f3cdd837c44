package store_test

import (
	"bytes"
	"context"
	"log/slog"
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
