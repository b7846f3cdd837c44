//go:build linux

package store_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

const benchPayload = 256

func benchEntries(lo uint64, n int) []*messages.Entry {
	data := make([]byte, benchPayload)
	out := make([]*messages.Entry, n)
	for i := range out {
		out[i] = &messages.Entry{Index: lo + uint64(i), Term: 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: data}
	}
	return out
}

func benchStore(b *testing.B) *store.PebbleStore {
	b.Helper()
	s, err := store.OpenPebble(b.TempDir(), store.PebbleOptions{Options: storetest.Options})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1}}}); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkRawFsync is the disk's own rate, in the same temporary directory
// as the store benchmarks: a 256-byte write and an fdatasync, appending to a
// growing file (each sync also writes the file's size) and overwriting a
// preallocated one (as Pebble's recycled WAL files are).
func BenchmarkRawFsync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, benchPayload)
			const prealloc = 64 << 20
			if mode == "overwrite" {
				if err := f.Truncate(prealloc); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(benchPayload)
			off := int64(0)
			for b.Loop() {
				if mode == "overwrite" {
					_, err = f.WriteAt(buf, off%prealloc)
					off += benchPayload
				} else {
					_, err = f.Write(buf)
				}
				if err != nil {
					b.Fatal(err)
				}
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
		})
	}
}

// BenchmarkAppend appends batches of 1, 16 and 256 entries, each batch one
// synced Append.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := benchStore(b)
			next := uint64(1)
			b.SetBytes(int64(batch * benchPayload))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: benchEntries(next, batch)}}); err != nil {
					b.Fatal(err)
				}
				next += uint64(batch)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkReadRange reads 64 entries at a random place in a log of 20000.
func BenchmarkReadRange(b *testing.B) {
	s := benchStore(b)
	const n, span = 20000, 64
	for lo := uint64(1); lo <= n; lo += 1000 {
		if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: benchEntries(lo, 1000)}}); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(span * benchPayload)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lo := 1 + r.Uint64N(n-span)
		ents, err := s.Entries(1, lo, lo+span, 0)
		if err != nil || len(ents) != span {
			b.Fatalf("read %d: %d, %v", lo, len(ents), err)
		}
	}
	b.ReportMetric(float64(b.N*span)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkCommitter has N appenders (N groups, one append in flight each,
// as N Raft groups on one node) go through one Committer: they share fsyncs.
func BenchmarkCommitter(b *testing.B) {
	for _, appenders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			s := benchStore(b)
			for g := 2; g <= appenders; g++ {
				if _, err := s.Append([]*messages.StorageAppend{{GroupId: uint64(g), HardState: &messages.HardState{Term: 1}}}); err != nil {
					b.Fatal(err)
				}
			}
			c := store.NewCommitter(s, store.CommitterOptions{})
			defer c.Close()
			before := c.Stats()
			b.SetBytes(benchPayload)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + appenders - 1) / appenders
			for g := 1; g <= appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					done := make(chan *messages.StorageAppendResult, 1)
					for i := 1; i <= per; i++ {
						c.Submit(&messages.StorageAppend{GroupId: uint64(g), Entries: benchEntries(uint64(i), 1)}, func(r *messages.StorageAppendResult) { done <- r })
						if r := <-done; r.Error != nil {
							b.Error(r.Error)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			st := c.Stats()
			appends, batches := st.Appends-before.Appends, st.Batches-before.Batches
			b.ReportMetric(float64(appends)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(appends)/float64(max(batches, 1)), "appends/fsync")
		})
	}
}

// BenchmarkMemStoreAppend is the in-memory store, for comparison.
func BenchmarkMemStoreAppend(b *testing.B) {
	s, _ := store.NewMemStore(storetest.Options)
	s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1}}})
	next := uint64(1)
	for b.Loop() {
		if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: benchEntries(next, 16)}}); err != nil {
			b.Fatal(err)
		}
		next += 16
	}
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkLogSpace measures the space amplification of a log in an LSM:
// 1 KiB entries appended in batches of 64, with a snapshot and a purge every
// 4096 entries that keeps the last 1024. It reports the database's disk
// usage over the bytes of the entries still in the log.
func BenchmarkLogSpace(b *testing.B) {
	s := benchStore(b)
	const size, batch, every, keep = 1024, 64, 4096, 1024
	data := make([]byte, size)
	next := uint64(1)
	for b.Loop() {
		ents := make([]*messages.Entry, batch)
		for i := range ents {
			ents[i] = &messages.Entry{Index: next + uint64(i), Term: 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: data}
		}
		if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, Entries: ents}}); err != nil {
			b.Fatal(err)
		}
		next += batch
		if last := next - 1; last%every == 0 {
			w, _ := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: last - keep, Term: 1})
			w.Write([]byte("state"))
			if _, err := w.Commit(); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Purge(1, last-keep); err != nil {
				b.Fatal(err)
			}
		}
	}
	first, _ := s.FirstIndex(1)
	live := float64((next - first) * size)
	disk := float64(s.DB().Metrics().DiskSpaceUsage())
	b.ReportMetric(disk/live, "disk/live")
	b.ReportMetric(disk/(1<<20), "disk-MiB")
	b.SetBytes(batch * size)
}
