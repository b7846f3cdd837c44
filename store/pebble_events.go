package store

import (
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// DiskStats counts what the Pebble database under a PebbleStore reported
// about its work on the disk since the store opened. A synced log write
// waits for the disk; when it waits long (the clients' p999 of a busy
// node), these say whether Pebble stopped writes or the disk was slow.
type DiskStats struct {
	// WriteStalls counts the times Pebble stopped taking writes because
	// its memtables were full and not yet flushed, or level 0 held too
	// many files; WriteStallTime is how long those stops lasted in all.
	WriteStalls    int64
	WriteStallTime time.Duration
	// Flushes and Compactions count the memtable flushes and compactions
	// that finished; FlushTime and CompactionTime are their wall time.
	Flushes        int64
	FlushTime      time.Duration
	Compactions    int64
	CompactionTime time.Duration
	// FlushedBytes is what flushes wrote into tables; RewrittenBytes what
	// compactions wrote, leaving out those that only moved a table to
	// another level or deleted tables (Pebble's "move" and "delete-only").
	// A log whose flushed tables hold disjoint index ranges is not
	// rewritten; RewrittenBytes near FlushedBytes or above says the log is
	// being written twice.
	FlushedBytes   int64
	RewrittenBytes int64
	// Moves counts the compactions that moved a table without rewriting it.
	Moves int64
	// SlowDiskOps counts disk operations that took longer than Pebble's
	// disk-health threshold (5 s); each is logged at warn level.
	SlowDiskOps int64
}

// diskEvents is the Pebble event listener of a PebbleStore: it counts into
// DiskStats and logs what an operator must hear of (stopped writes, a slow
// disk, a failed background job) at warn or error level, and flushes and
// compactions at debug.
type diskEvents struct {
	logger *slog.Logger

	mu         sync.Mutex
	stats      DiskStats
	stallStart time.Time
}

func (d *diskEvents) listener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			d.logger.Error("pebble background job failed", "component", "pebble", "err", err)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			d.mu.Lock()
			d.stallStart = time.Now()
			d.stats.WriteStalls++
			d.mu.Unlock()
			d.logger.Warn("pebble stopped writes", "component", "pebble", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			d.mu.Lock()
			var took time.Duration
			if !d.stallStart.IsZero() {
				took = time.Since(d.stallStart)
				d.stats.WriteStallTime += took
				d.stallStart = time.Time{}
			}
			d.mu.Unlock()
			d.logger.Warn("pebble resumed writes", "component", "pebble", "stopped_for", took)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			d.count(&d.stats.Flushes, &d.stats.FlushTime, info.TotalDuration)
			d.addBytes(&d.stats.FlushedBytes, info.Output)
			d.logger.Debug("pebble flush", "component", "pebble", "input_bytes", info.InputBytes,
				"took", info.TotalDuration, "err", info.Err)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			d.count(&d.stats.Compactions, &d.stats.CompactionTime, info.TotalDuration)
			switch {
			case info.Err != nil:
			case info.Reason == "move":
				d.mu.Lock()
				d.stats.Moves++
				d.mu.Unlock()
			case info.Reason != "delete-only":
				d.addBytes(&d.stats.RewrittenBytes, info.Output.Tables)
			}
			d.logger.Debug("pebble compaction", "component", "pebble", "reason", info.Reason,
				"took", info.TotalDuration, "err", info.Err)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			d.mu.Lock()
			d.stats.SlowDiskOps++
			d.mu.Unlock()
			d.logger.Warn("slow disk operation", "component", "pebble", "path", info.Path,
				"op", info.OpType.String(), "took", info.Duration)
		},
	}
}

// count adds one job that took took to a count and a total, under d.mu.
func (d *diskEvents) count(n *int64, total *time.Duration, took time.Duration) {
	d.mu.Lock()
	*n++
	*total += took
	d.mu.Unlock()
}

// addBytes adds the sizes of tables to n, under d.mu.
func (d *diskEvents) addBytes(n *int64, tables []pebble.TableInfo) {
	var sum int64
	for _, t := range tables {
		sum += int64(t.Size)
	}
	d.mu.Lock()
	*n += sum
	d.mu.Unlock()
}

func (d *diskEvents) snapshot() DiskStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	if !d.stallStart.IsZero() {
		// A stop still going on counts for the time it has lasted.
		s.WriteStallTime += time.Since(d.stallStart)
	}
	return s
}

// DiskStats returns what Pebble reported about its disk since the store
// opened.
func (s *PebbleStore) DiskStats() DiskStats { return s.events.snapshot() }
