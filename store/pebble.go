package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// FormatVersion is the version of the key schema this build writes and reads.
const FormatVersion = 1

const (
	spaceGlobal byte = 0x00
	spaceGroup  byte = 0x01

	kindHardState byte = 0x01
	kindSnapshot  byte = 0x02
	kindEntry     byte = 0x10
)

var (
	keyFormat   = []byte{spaceGlobal, 'v'}
	keyIdentity = []byte{spaceGlobal, 'i'}
)

func groupKey(group uint64, kind byte) []byte {
	k := make([]byte, 10)
	k[0] = spaceGroup
	binary.BigEndian.PutUint64(k[1:9], group)
	k[9] = kind
	return k
}

// EntryKey is the Pebble key of the log entry of group at index. It is
// exported for tools that inspect or repair a store.
func EntryKey(group, index uint64) []byte {
	k := make([]byte, 18)
	k[0] = spaceGroup
	binary.BigEndian.PutUint64(k[1:9], group)
	k[9] = kindEntry
	binary.BigEndian.PutUint64(k[10:18], index)
	return k
}

// FormatVersionKey is the Pebble key holding the schema version.
func FormatVersionKey() []byte { return append([]byte(nil), keyFormat...) }

// PebbleOptions configures OpenPebble.
type PebbleOptions struct {
	Options
	// FS is the file system, vfs.Default when nil. Tests pass
	// vfs.NewCrashableMem() to simulate losing unsynced writes.
	FS vfs.FS
	// MemTableSize is Pebble's memtable size (default 8 MiB). A log's
	// entries are read back soon after they are written or not at all, so
	// the memtable only has to hold what a flush writes out at once: a
	// larger one flushes less often but longer, and each flush competes
	// with the WAL's syncs for the disk. With one group in a steady term
	// nothing is compacted (RaftCore writes the hard state only when term
	// or vote change), and 8 MiB gave a three-node benchmark under 256
	// clients a p999 of 21-32 ms against 39-69 ms with 32 MiB, with as many
	// writes/s or more (examples/bench, docs/benchmarks.md). When every
	// append carried a hard state, tables overlapped and were compacted,
	// and 32 MiB was the better size then (4 MiB: p999 180-215 ms).
	MemTableSize uint64
	// Logger receives Pebble's messages at debug level and failures at
	// error level; nil uses slog.Default().
	Logger *slog.Logger
}

// PebbleStore is a Store on a Pebble database in dir/log, with snapshot
// bodies in dir/snapshots. One PebbleStore holds any number of groups.
type PebbleStore struct {
	dir    string
	fs     vfs.FS
	db     *pebble.DB
	logger *slog.Logger
	events *diskEvents
	id     *messages.NodeIdentity
	snaps  *fileSnapshots

	// writeMu serializes writes, so that a write planned against the
	// published state is still valid when it is published.
	writeMu sync.Mutex

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when a read view is released
	groups map[uint64]*pgroup
	// view is what readers read: a Pebble snapshot taken when the last
	// write was published. Pebble makes a batch visible before its WAL sync
	// returns; reading through the view, readers see exactly the data of
	// the published states, all of it durable.
	view    *readView
	readers int // reads in progress, over all views
	failed  error
	closed  bool
	syncs   uint64
}

// pgroup is a loaded group and its published state.
type pgroup struct {
	st *groupState
}

// readView is a Pebble snapshot with the number of readers using it.
type readView struct {
	snap *pebble.Snapshot
	refs int
}

// acquireView returns the current view for a read; s.mu must be held.
func (s *PebbleStore) acquireView() *readView {
	s.view.refs++
	s.readers++
	return s.view
}

// releaseView ends a read, closing the view if a newer one replaced it.
func (s *PebbleStore) releaseView(v *readView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v.refs--
	s.readers--
	if v.refs == 0 && v != s.view {
		_ = v.snap.Close()
	}
	s.cond.Broadcast()
}

// newViewLocked replaces the view after a write; s.mu must be held.
func (s *PebbleStore) newViewLocked() {
	old := s.view
	s.view = &readView{snap: s.db.NewSnapshot()}
	if old != nil && old.refs == 0 {
		_ = old.snap.Close()
	}
}

// OpenPebble opens (creating if needed) the store in dir.
func OpenPebble(dir string, o PebbleOptions) (*PebbleStore, error) {
	if err := o.Options.validate(); err != nil {
		return nil, err
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 8 << 20
	}
	logDir := o.FS.PathJoin(dir, "log")
	if err := mkdirDurable(o.FS, logDir); err != nil {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "open", Path: dir, Err: err}
	}
	events := &diskEvents{logger: o.Logger}
	popts := &pebble.Options{
		FS:                 o.FS,
		MemTableSize:       o.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             pebbleLogger{o.Logger},
		EventListener:      events.listener(),
	}
	db, err := openPebble(logDir, popts)
	if err != nil {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: logDir,
			Msg: "cannot open the Pebble database", Err: err}
	}
	s := &PebbleStore{dir: dir, fs: o.FS, db: db, logger: o.Logger, events: events, groups: map[uint64]*pgroup{}}
	s.cond = sync.NewCond(&s.mu)
	if err := s.checkFormat(o.Options, logDir); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.newViewLocked()
	s.snaps = &fileSnapshots{s: s, root: o.FS.PathJoin(dir, "snapshots")}
	if err := s.snaps.open(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// mkdirDurable creates dir and its missing parents and syncs every directory
// from dir's parent down, so that a crash cannot take away a directory
// entry (a new store whose directory vanished would come back empty).
func mkdirDurable(fs vfs.FS, dir string) error {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for p := dir; ; {
		if err := syncDir(fs, p); err != nil {
			return err
		}
		parent := fs.PathDir(p)
		if parent == p || parent == "" || parent == "." {
			return nil
		}
		p = parent
	}
}

// openPebble opens the database, turning a panic from a damaged directory
// into an error.
func openPebble(dir string, opts *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return pebble.Open(dir, opts)
}

// checkFormat writes the format version and identity into a new database,
// or checks them in an existing one.
func (s *PebbleStore) checkFormat(o Options, where string) error {
	v, err := s.get(keyFormat)
	if err != nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: where, Err: err}
	}
	if v == nil {
		it, err := s.db.NewIter(nil)
		if err != nil {
			return errFailed("open", err)
		}
		empty := !it.First()
		_ = it.Close()
		if !empty {
			return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: where,
				Msg: "database holds data but no format version key: not a Raftor store"}
		}
		inc := o.Incarnation
		for inc == 0 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			inc = binary.BigEndian.Uint64(b[:])
		}
		s.id = &messages.NodeIdentity{ClusterId: o.ClusterID, NodeId: o.NodeID, Incarnation: inc}
		idb, _ := proto.Marshal(s.id)
		var vb [4]byte
		binary.BigEndian.PutUint32(vb[:], FormatVersion)
		b := s.db.NewBatch()
		_ = b.Set(keyFormat, vb[:], nil)
		_ = b.Set(keyIdentity, idb, nil)
		if err := s.commit(b); err != nil {
			return errFailed("open", err)
		}
		return nil
	}
	if len(v) != 4 {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: where, Msg: fmt.Sprintf("format version key holds %d bytes", len(v))}
	}
	if ver := binary.BigEndian.Uint32(v); ver != FormatVersion {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Op: "open", Path: where,
			Msg: fmt.Sprintf("unsupported format version %d (this build reads version %d)", ver, FormatVersion)}
	}
	idb, err := s.get(keyIdentity)
	if err != nil || idb == nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: where, Msg: "node identity missing", Err: err}
	}
	id := &messages.NodeIdentity{}
	if err := proto.Unmarshal(idb, id); err != nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open", Path: where, Msg: "node identity does not decode", Err: err}
	}
	if err := checkIdentity(id, o, where); err != nil {
		return err
	}
	s.id = id
	return nil
}

// get returns a copy of the value at key, nil when absent.
func (s *PebbleStore) get(key []byte) ([]byte, error) { return get(s.db, key) }

func get(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, v...)
	_ = closer.Close()
	return out, nil
}

// pebbleFatal is what Pebble's Fatalf panics with. Pebble calls Fatalf when
// a commit could not be written or synced and then carries on as if it had
// succeeded; the store must never acknowledge such a write, so it recovers
// this panic in commit and fails the store.
type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return f.msg }

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble")
	panic(pebbleFatal{msg})
}

// commit writes b with a sync and closes it.
func (s *PebbleStore) commit(b *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			err = f
		}
	}()
	err = b.Commit(pebble.Sync)
	if err == nil {
		_ = b.Close()
	}
	return err
}

// pebbleWriter turns planned writes into a batch.
type pebbleWriter struct{ b *pebble.Batch }

func (w pebbleWriter) deleteEntries(group, lo, hi uint64) {
	if lo < hi {
		_ = w.b.DeleteRange(EntryKey(group, lo), EntryKey(group, hi), nil)
	}
}
func (w pebbleWriter) putEntry(group uint64, e *messages.Entry, rec []byte) {
	_ = w.b.Set(EntryKey(group, e.GetIndex()), rec, nil)
}
func (pebbleWriter) keepsEntries() bool { return false }
func (w pebbleWriter) putHardState(group uint64, hs *messages.HardState) {
	v, _ := proto.Marshal(hs)
	_ = w.b.Set(groupKey(group, kindHardState), v, nil)
}
func (w pebbleWriter) putSnapshot(group uint64, m *messages.SnapshotMeta) {
	v, _ := proto.Marshal(m)
	_ = w.b.Set(groupKey(group, kindSnapshot), v, nil)
}

// ptx is one write being planned: the staged states of the groups it
// touches and the batch.
type ptx struct {
	s      *PebbleStore
	staged map[uint64]*groupState
	w      pebbleWriter
}

func (tx *ptx) group(op string, id uint64) (*groupState, error) {
	if g, ok := tx.staged[id]; ok {
		return g, nil
	}
	pg, err := tx.s.groupLocked(op, id)
	if err != nil {
		return nil, err
	}
	g := pg.st.clone()
	tx.staged[id] = g
	return g, nil
}

// mutate plans a write with fn under the state lock, commits it with one
// sync, and publishes the staged states. A failed commit fails the store.
func (s *PebbleStore) mutate(op string, fn func(tx *ptx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if err := s.usableLocked(op); err != nil {
		s.mu.Unlock()
		return err
	}
	tx := &ptx{s: s, staged: map[uint64]*groupState{}, w: pebbleWriter{s.db.NewBatch()}}
	err := fn(tx)
	if err != nil || tx.w.b.Empty() {
		s.mu.Unlock()
		_ = tx.w.b.Close()
		return err
	}
	s.mu.Unlock()

	// Readers go on during the commit: they read the previous view, which
	// matches the states not yet replaced.
	cerr := s.commit(tx.w.b)

	s.mu.Lock()
	defer s.mu.Unlock()
	if cerr == nil {
		for id, st := range tx.staged {
			s.groups[id].st = st
		}
		s.newViewLocked()
	}
	if cerr != nil {
		s.failed = errFailed(op, cerr)
		s.logger.Error("storage failed; refusing further writes", "dir", s.dir, "err", cerr)
		return s.failed
	}
	s.syncs++
	return nil
}

func (s *PebbleStore) usableLocked(op string) error {
	if s.closed {
		return errClosed(op)
	}
	if s.failed != nil {
		return s.failed
	}
	return nil
}

// groupLocked returns the loaded group id, loading it on first use.
func (s *PebbleStore) groupLocked(op string, id uint64) (*pgroup, error) {
	if id == 0 {
		return nil, errInvalid(op, 0, "group id is 0")
	}
	if pg, ok := s.groups[id]; ok {
		return pg, nil
	}
	st, err := s.loadGroup(s.view.snap, id)
	if err != nil {
		return nil, err
	}
	pg := &pgroup{st: st}
	s.groups[id] = pg
	return pg, nil
}

// loadGroup rebuilds a group's state from Pebble, verifying the checksum of
// every entry and that the log has no gap.
func (s *PebbleStore) loadGroup(r pebble.Reader, group uint64) (*groupState, error) {
	const op = "load"
	g := newGroupState()
	if v, err := get(r, groupKey(group, kindHardState)); err != nil {
		return nil, errFailed(op, err)
	} else if v != nil {
		hs := &messages.HardState{}
		if err := proto.Unmarshal(v, hs); err != nil {
			return nil, errCorrupt(op, group, 0, "hard state does not decode: %v", err)
		}
		g.hard = hardState{Term: hs.Term, Vote: hs.Vote, Commit: hs.Commit}
	}
	if v, err := get(r, groupKey(group, kindSnapshot)); err != nil {
		return nil, errFailed(op, err)
	} else if v != nil {
		m := &messages.SnapshotMeta{}
		if err := proto.Unmarshal(v, m); err != nil {
			return nil, errCorrupt(op, group, 0, "snapshot meta does not decode: %v", err)
		}
		g.snap = m
		g.first, g.last = m.Index+1, m.Index
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: EntryKey(group, 0), UpperBound: groupKey(group, kindEntry+1)})
	if err != nil {
		return nil, errFailed(op, err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 18 {
			return nil, errCorrupt(op, group, 0, "log key %x has the wrong length", k)
		}
		index := binary.BigEndian.Uint64(k[10:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, errCorrupt(op, group, index, "log record unreadable: %v", err)
		}
		if n > 0 && index != g.last+1 {
			return nil, errCorrupt(op, group, g.last+1, "log entry missing (next stored index is %d)", index)
		}
		term, kind, err := checkRecord(op, group, index, v)
		if err != nil {
			return nil, err
		}
		e := &messages.Entry{Index: index, Term: term, Kind: kind}
		if kind == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			if e, err = decodeRecord(op, group, index, v); err != nil {
				return nil, err
			}
		}
		if n == 0 {
			g.first, g.last = index, index-1
		}
		g.add(e)
		n++
	}
	if err := it.Error(); err != nil {
		return nil, errCorrupt(op, group, 0, "log scan failed: %v", err)
	}
	return g, nil
}

// Load implements LogStore.
func (s *PebbleStore) Load(group uint64) (*messages.InitialState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed("load")
	}
	pg, err := s.groupLocked("load", group)
	if err != nil {
		return nil, err
	}
	return pg.st.initialState(s.id, group), nil
}

// Append implements LogStore.
func (s *PebbleStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	results := make([]*messages.StorageAppendResult, len(reqs))
	err := s.mutate("append", func(tx *ptx) error {
		for i, r := range reqs {
			res := &messages.StorageAppendResult{GroupId: r.GetGroupId(), Seq: r.GetSeq()}
			results[i] = res
			g, err := tx.group("append", r.GetGroupId())
			if err == nil {
				err = planAppend(g, r, tx.w)
			}
			if err != nil {
				res.Error = ToProto(err)
			}
			if g != nil {
				res.LastIndex = g.last
			}
		}
		return nil
	})
	return finishAppend(reqs, results, err)
}

// finishAppend fills the results of a batch whose write failed.
func finishAppend(reqs []*messages.StorageAppend, results []*messages.StorageAppendResult, err error) ([]*messages.StorageAppendResult, error) {
	if err == nil {
		return results, nil
	}
	perr := ToProto(err)
	for i, r := range reqs {
		if results[i] == nil {
			results[i] = &messages.StorageAppendResult{GroupId: r.GetGroupId(), Seq: r.GetSeq()}
		}
		if results[i].Error == nil || perr.Code == messages.ErrorCode_ERROR_CODE_STORAGE_FAILED || perr.Code == messages.ErrorCode_ERROR_CODE_STOPPED {
			results[i].Error = perr
			results[i].LastIndex = 0
		}
	}
	return results, err
}

// readState returns a group's published state; s.mu must be held.
func (s *PebbleStore) readState(op string, group uint64) (*groupState, error) {
	if s.closed {
		return nil, errClosed(op)
	}
	pg, err := s.groupLocked(op, group)
	if err != nil {
		return nil, err
	}
	return pg.st, nil
}

// Entries implements LogStore.
func (s *PebbleStore) Entries(group, lo, hi, maxBytes uint64) ([]*messages.Entry, error) {
	const op = "read entries"
	s.mu.Lock()
	st, err := s.readState(op, group)
	if err == nil {
		err = checkRange(st, group, lo, hi)
	}
	if err != nil || lo == hi {
		s.mu.Unlock()
		return nil, err
	}
	v := s.acquireView()
	s.mu.Unlock()
	defer s.releaseView(v)
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: EntryKey(group, lo), UpperBound: EntryKey(group, hi)})
	if err != nil {
		return nil, errFailed(op, err)
	}
	ents, missing, err := readEntries(it, group, lo, hi, maxBytes)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = errCorrupt(op, group, 0, "log read failed: %v", cerr)
	}
	if err == nil && missing != 0 {
		err = errCorrupt(op, group, missing, "log entry missing")
	}
	return ents, err
}

// readEntries reads lo..hi-1 from it; missing is the first index that was
// expected but not found (0 for none).
func readEntries(it *pebble.Iterator, group, lo, hi, maxBytes uint64) ([]*messages.Entry, uint64, error) {
	const op = "read entries"
	var ents []*messages.Entry
	var size uint64
	next := lo
	for ok := it.First(); ok; ok = it.Next() {
		index := binary.BigEndian.Uint64(it.Key()[10:])
		if index != next {
			return nil, next, nil
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, errCorrupt(op, group, index, "log record unreadable: %v", err)
		}
		size += recordSize(v)
		if maxBytes > 0 && size > maxBytes && len(ents) > 0 {
			return ents, 0, nil
		}
		e, err := decodeRecord(op, group, index, v)
		if err != nil {
			return nil, 0, err
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, 0, errCorrupt(op, group, 0, "log read failed: %v", err)
	}
	if next != hi {
		return nil, next, nil
	}
	return ents, 0, nil
}

// Term implements LogStore.
func (s *PebbleStore) Term(group, index uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.readState("term", group)
	if err != nil {
		return 0, err
	}
	return st.termOrErr("term", group, index)
}

// FirstIndex implements LogStore.
func (s *PebbleStore) FirstIndex(group uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.readState("first index", group)
	if err != nil {
		return 0, err
	}
	return st.first, nil
}

// LastIndex implements LogStore.
func (s *PebbleStore) LastIndex(group uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.readState("last index", group)
	if err != nil {
		return 0, err
	}
	return st.last, nil
}

// Purge implements LogStore. The range delete makes the entries invisible at
// once; Pebble's compactions reclaim the space later.
func (s *PebbleStore) Purge(group, index uint64) (uint64, error) {
	var first uint64
	err := s.mutate("purge", func(tx *ptx) error {
		g, err := tx.group("purge", group)
		if err != nil {
			return err
		}
		if err := planPurge(g, group, index, tx.w); err != nil {
			return err
		}
		first = g.first
		return nil
	})
	if err != nil {
		return 0, err
	}
	return first, nil
}

// Identity implements Store.
func (s *PebbleStore) Identity() *messages.NodeIdentity {
	return proto.Clone(s.id).(*messages.NodeIdentity)
}

// Err implements Store.
func (s *PebbleStore) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Syncs is the number of synced batches written since the store opened.
func (s *PebbleStore) Syncs() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncs
}

// DB exposes the Pebble database for metrics and inspection. Writing to it
// bypasses every rule of the store.
func (s *PebbleStore) DB() *pebble.DB { return s.db }

// Close implements Store.
func (s *PebbleStore) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	failed := s.failed
	// Wait for reads in progress, then release the view.
	for s.readers > 0 {
		s.cond.Wait()
	}
	_ = s.view.snap.Close()
	s.mu.Unlock()
	if err := closePebble(s.db); err != nil && failed == nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "close", Path: s.dir, Err: err}
	}
	return nil
}

// closePebble closes db, turning a Fatalf from a database whose commit
// pipeline failed into an error.
func closePebble(db *pebble.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			err = f
		}
	}()
	return db.Close()
}
