package store

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

// memLogHolds fails t unless l holds exactly the entries lo..hi-1, each the
// entry of its index and of term want(index).
func memLogHolds(t *testing.T, name string, l *memLog, lo, hi uint64, want func(uint64) uint64) {
	t.Helper()
	if l.off != lo || l.end() != hi || l.len() != int(hi-lo) {
		t.Fatalf("%s: holds %d..%d (%d records), want %d..%d", name, l.off, l.end(), l.len(), lo, hi)
	}
	for i := lo; i < hi; i++ {
		e := l.at(i).e
		if e.GetIndex() != i || e.GetTerm() != want(i) {
			t.Fatalf("%s: record of %d holds %d/%d, want %d/%d", name, i, e.GetIndex(), e.GetTerm(), i, want(i))
		}
	}
}

func appendTerm(l *memLog, lo, hi, term uint64) {
	for i := lo; i < hi; i++ {
		l.append(i, memRec{e: &messages.Entry{Index: i, Term: term}})
	}
}

// TestMemLogCopiesStayApart checks what MemStore relies on: copies share
// chunks, yet a copy's appends, truncations and prefix drops never change
// what another copy holds, across chunk boundaries.
func TestMemLogCopiesStayApart(t *testing.T) {
	const n = 3*memChunk + 17
	one := func(uint64) uint64 { return 1 }
	var durable memLog
	appendTerm(&durable, 5, 5+n, 1)
	memLogHolds(t, "durable", &durable, 5, 5+n, one)

	// A copy grows past the end: the original does not see it.
	live := durable
	appendTerm(&live, 5+n, 5+n+memChunk, 1)
	memLogHolds(t, "durable after the live copy grew", &durable, 5, 5+n, one)
	memLogHolds(t, "live", &live, 5, 5+n+memChunk, one)

	// A copy is truncated in the middle of a chunk and rewritten with a
	// new term: the copies that still hold the old records keep them.
	staged := live
	cut := uint64(5 + 2*memChunk + 3)
	staged.truncate(cut)
	appendTerm(&staged, cut, cut+memChunk, 2)
	newTerm := func(i uint64) uint64 {
		if i >= cut {
			return 2
		}
		return 1
	}
	memLogHolds(t, "staged after truncate and rewrite", &staged, 5, cut+memChunk, newTerm)
	memLogHolds(t, "live after staged rewrote its tail", &live, 5, 5+n+memChunk, one)
	memLogHolds(t, "durable after staged rewrote its tail", &durable, 5, 5+n, one)

	// A prefix dropped over whole chunks, then appends: the others keep
	// their prefix.
	compacted := staged
	drop := uint64(5 + memChunk + 100)
	compacted.dropBefore(drop)
	appendTerm(&compacted, cut+memChunk, cut+2*memChunk, 2)
	memLogHolds(t, "compacted", &compacted, drop, cut+2*memChunk, newTerm)
	memLogHolds(t, "staged after compacted dropped its prefix", &staged, 5, cut+memChunk, newTerm)

	// Truncated at its start and dropped to its end, a log is empty and
	// starts again where it is told.
	empty := compacted
	empty.truncate(drop)
	memLogHolds(t, "truncated to nothing", &empty, drop, drop, one)
	appendTerm(&empty, 900, 903, 3)
	memLogHolds(t, "restarted", &empty, 900, 903, func(uint64) uint64 { return 3 })
	gone := compacted
	gone.dropBefore(gone.end())
	memLogHolds(t, "dropped to its end", &gone, cut+2*memChunk, cut+2*memChunk, one)
	memLogHolds(t, "compacted after its copies emptied", &compacted, drop, cut+2*memChunk, newTerm)
}
