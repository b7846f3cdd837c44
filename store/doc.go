// Package store holds Raftor's storage: the interfaces RaftCore's storage
// actor serves (the log, the hard state, memberships, snapshots), the
// interface of the user's state machine, a Pebble implementation, an
// in-memory implementation with the same behaviour, and the group committer
// that turns many concurrent appends into one batch and one fsync.
//
// # Durability contract
//
// Nothing is reported durable before it is: Store.Append returns only once
// its batch is synced, and the Committer calls an append's completion only
// after the batch holding it returned. Once a write or a sync fails the store
// is failed for good (a failed fsync may have dropped dirty pages, so
// retrying it could report data durable that is not): every later write gets
// STORAGE_FAILED with the original cause. Pebble reports a failed WAL write
// through its logger's Fatalf and would then carry on; the store's logger
// turns that into a panic that the commit recovers as the failure.
//
// Readers never wait for a sync and never see a write before it is durable:
// they read through a Pebble snapshot taken when the last write was
// published, together with the in-memory index (bounds, term runs,
// memberships) of that same write.
//
// # Group commit
//
// A Committer sits in front of a LogStore: any number of goroutines submit
// appends for any groups, and one writer takes everything waiting, writes it
// as one batch with one sync, and answers each. The more appends are in
// flight, the more share an fsync; CommitStats reports how many.
//
// # Pebble key schema
//
// One Pebble database holds any number of Raft groups. Every key starts with
// a one-byte space tag:
//
//	0x00 'v'                               format version (uint32, big-endian)
//	0x00 'i'                               node identity (NodeIdentity, group 0)
//	0x01 group(8) 0x01                     hard state (HardState)
//	0x01 group(8) 0x02                     snapshot base (SnapshotMeta)
//	0x01 group(8) 0x10 index(8)            log entry (record, see below)
//
// Integers are big-endian, so that the entries of a group are contiguous and
// sorted by index: a range read is one scan and a purge or a suffix
// truncation is one range delete. A log record is
//
//	crc32c(4) term(8) kind(1) proto-encoded Entry
//
// where the CRC-32C (Castagnoli) covers everything after it. A record that
// fails its checksum is reported as CORRUPT with its group and index; it is
// never skipped.
//
// # Snapshots
//
// Snapshot bodies live in files, dir/snapshots/<group>/<id>, written to a
// temporary name, fsynced, renamed and the directory fsynced before their
// meta is recorded (synced) in Pebble as the group's snapshot base. The base
// is what makes installing a snapshot crash-safe: the log's first and last
// index derive from it when the log is empty, and the base index never goes
// backwards.
package store
