package store

import (
	"io"

	"github.com/raftor/raftor/messages"
)

// LogStore is the replicated log and the hard state of any number of Raft
// groups. Every method is safe for concurrent use. Reads never return data
// that is not durable.
//
// Entries are immutable once made: nobody modifies an entry after handing
// it to Append, or one that Entries returned. A store may therefore keep
// the entries it is given and return them as they are (MemStore does),
// and Raftor's actors share them between the log, the replication streams'
// cache and the state machine.
type LogStore interface {
	// Load returns what a (re)starting RaftCore needs for group: identity,
	// hard state, the latest snapshot's meta, the log's bounds and terms,
	// and the membership entries after the snapshot. A group never written
	// to loads as an empty log (first 1, last 0).
	Load(group uint64) (*messages.InitialState, error)

	// Append makes every request in reqs durable with one write and one
	// sync, and returns one result per request. A request that breaks a
	// rule gets an INVALID result and changes nothing; the others proceed.
	// The rules, each a Raft bug caught at the last moment:
	//   - the hard state's term never goes backwards, and within a term
	//     the vote, once cast, never changes (two votes, two leaders);
	//   - entries are contiguous, their terms never decrease, and none has
	//     a term newer than the node's term (term is persisted first);
	//   - the first entry is at most last+1 (no gap) and above the
	//     snapshot index;
	//   - an entry at or below the stored commit index is never replaced
	//     by one of another term (an acknowledged write taken back);
	//     rewriting it with the same term is harmless and allowed.
	// The stored commit index is the highest ever written. Requests are applied
	// in order, so several requests for one group may be in one call. The
	// error is set only when the write or the sync failed: then no result is
	// durable, and the store is failed for good.
	Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error)

	// Entries returns entries lo..hi-1, stopping once their encoded size
	// would exceed maxBytes (0 means no limit) but always returning at least
	// one entry when lo < hi. lo below the first index is COMPACTED; hi past
	// last+1 is INVALID; an entry that fails its checksum is CORRUPT.
	Entries(group, lo, hi, maxBytes uint64) ([]*messages.Entry, error)

	// Term returns the term of the entry at index, the snapshot's term at
	// the snapshot's index, and 0 at index 0.
	Term(group, index uint64) (uint64, error)

	// FirstIndex and LastIndex are the bounds of the log; an empty log after
	// a snapshot at i has first i+1 and last i.
	FirstIndex(group uint64) (uint64, error)
	LastIndex(group uint64) (uint64, error)

	// Purge removes the entries up to and including index, which the
	// group's durable snapshot must cover, and returns the new first index.
	Purge(group, index uint64) (uint64, error)
}

// SnapshotStore keeps the snapshot bodies of each group. Only the latest
// snapshot of a group is kept; a reader that opened an older one may finish.
type SnapshotStore interface {
	// CreateSnapshot starts writing a snapshot whose body covers the log up
	// to meta.Index. meta.Id is assigned by the store. When meta.Size or
	// meta.Checksum are set (a snapshot received from a leader), the body
	// written must match them or Commit/Install fail with CORRUPT.
	CreateSnapshot(group uint64, meta *messages.SnapshotMeta) (SnapshotWriter, error)

	// Snapshot returns the meta of the group's latest durable snapshot, nil
	// when it has none.
	Snapshot(group uint64) (*messages.SnapshotMeta, error)

	// OpenSnapshot opens the body of snapshot id after verifying its size
	// and checksum against its meta.
	OpenSnapshot(group uint64, id string) (SnapshotReader, error)

	// ReadSnapshotChunk reads up to maxBytes of snapshot id from offset;
	// done is set when the chunk ends the body.
	ReadSnapshotChunk(group uint64, id string, offset, maxBytes uint64) (meta *messages.SnapshotMeta, data []byte, done bool, err error)
}

// SnapshotWriter streams a snapshot body to storage. Exactly one of Commit,
// Install and Abort ends it.
type SnapshotWriter interface {
	io.Writer
	// Commit makes the body durable and records it as the group's latest
	// snapshot; the log is not touched (a snapshot of the local state
	// machine, whose index the local log holds). The meta returned has the
	// id, size and checksum.
	Commit() (*messages.SnapshotMeta, error)
	// Install makes the body durable and, in one synced batch, records it as
	// the latest snapshot and resets the log as a follower does on
	// InstallSnapshot: if the log holds an entry at meta.Index with
	// meta.Term, the entries after it are kept, otherwise the whole log is
	// discarded. The stored commit index is raised to meta.Index. A crash at
	// any point leaves either the old state or the new one.
	Install() (*messages.SnapshotMeta, error)
	// Abort discards the body.
	Abort() error
}

// SnapshotReader reads a stored snapshot body.
type SnapshotReader interface {
	io.Reader
	io.ReaderAt
	io.Closer
	Meta() *messages.SnapshotMeta
}

// Store is a LogStore and a SnapshotStore sharing one identity.
type Store interface {
	LogStore
	SnapshotStore
	// Identity is the node's identity, written when the store was created
	// (GroupId is 0: InitialState carries the group's own).
	Identity() *messages.NodeIdentity
	// Err returns the cause once the store has failed, nil before.
	Err() error
	// Close releases the store. Acknowledged data is durable whether or not
	// Close is called.
	Close() error
}

// Options configures a store.
type Options struct {
	// ClusterID and NodeID name the node. They are written when the store is
	// created, and a store created under another identity is refused.
	ClusterID string
	NodeID    uint64
	// Incarnation is the random value recorded at creation; 0 picks one at
	// random (tests set it for determinism).
	Incarnation uint64
}

func (o Options) validate() error {
	if o.ClusterID == "" {
		return errInvalid("open", 0, "cluster id is empty")
	}
	if o.NodeID == 0 {
		return errInvalid("open", 0, "node id is 0")
	}
	return nil
}

func checkIdentity(stored *messages.NodeIdentity, o Options, where string) error {
	if stored.GetClusterId() != o.ClusterID || stored.GetNodeId() != o.NodeID {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER, Op: "open", Path: where,
			Msg: "store belongs to cluster " + quote(stored.GetClusterId()) + " node " + u64(stored.GetNodeId()) +
				", opened as cluster " + quote(o.ClusterID) + " node " + u64(o.NodeID)}
	}
	return nil
}
