// Package replication holds the decisions of a leader's per-peer actors as
// plain, deterministic code, like package core:
//
//   - Peer is the brain of a ReplicationState actor: the peer's progress
//     (match and next index), its mode (probe while the match point is
//     unknown, pipeline once it is, snapshot when the peer needs purged
//     entries), the in-flight window bounded in requests and bytes, and
//     backoff after failures. It tells its stream what to send
//     (StreamSend, StreamSendSnapshot) and reports what it learned to the
//     core (ReplicationReport).
//   - Stream is the brain of a ReplicationStream actor: it turns those
//     commands into wire requests, taking entries from a cache of recent
//     entries or from storage reads and cutting batches by bytes, numbers
//     them with seq, times them out, and sends snapshots in chunks.
//
// Both take ticks for time and keep no goroutines, clocks or I/O.
package replication

import (
	"errors"
	"fmt"
)

// Config bounds what one peer's replication keeps in flight.
type Config struct {
	// MaxAppendEntries and MaxAppendBytes bound one AppendEntriesRequest.
	// A single entry larger than MaxAppendBytes is still sent alone.
	// Defaults 512 and 1 MiB.
	MaxAppendEntries int
	MaxAppendBytes   uint64
	// MaxInflight and MaxInflightBytes bound the requests (and their entry
	// bytes) sent in pipeline mode and not yet answered. Defaults 64 and
	// 16 MiB.
	MaxInflight      int
	MaxInflightBytes uint64
	// RetryTicks is the first backoff after a failed send; it doubles on
	// each consecutive failure up to MaxRetryTicks. Defaults 1 and 16.
	RetryTicks    int
	MaxRetryTicks int
	// RequestTimeoutTicks is how long a stream waits for an answer before
	// it reports the request failed. Default 10.
	RequestTimeoutTicks int
	// SnapshotChunkBytes is the size of one snapshot chunk. Default 1 MiB.
	SnapshotChunkBytes uint64
	// CacheBytes bounds a stream's cache of recent entries. Entries are
	// evicted only once durable on the leader. Default 16 MiB.
	CacheBytes uint64
}

func (c Config) withDefaults() Config {
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 512
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = 1 << 20
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 64
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = 16 << 20
	}
	if c.RetryTicks == 0 {
		c.RetryTicks = 1
	}
	if c.MaxRetryTicks == 0 {
		c.MaxRetryTicks = 16
	}
	if c.RequestTimeoutTicks == 0 {
		c.RequestTimeoutTicks = 10
	}
	if c.SnapshotChunkBytes == 0 {
		c.SnapshotChunkBytes = 1 << 20
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 16 << 20
	}
	return c
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	d := c.withDefaults()
	switch {
	case d.MaxAppendEntries < 0 || d.MaxInflight < 0 || d.RetryTicks < 0 || d.MaxRetryTicks < 0 || d.RequestTimeoutTicks < 0:
		return errors.New("replication: config: limits must not be negative")
	case d.RetryTicks > d.MaxRetryTicks:
		return fmt.Errorf("replication: config: RetryTicks %d above MaxRetryTicks %d", d.RetryTicks, d.MaxRetryTicks)
	}
	return nil
}
