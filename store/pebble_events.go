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
			d.logger.Debug("pebble flush", "component", "pebble", "input_bytes", info.InputBytes,
				"took", info.TotalDuration, "err", info.Err)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			d.count(&d.stats.Compactions, &d.stats.CompactionTime, info.TotalDuration)
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
