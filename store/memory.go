package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// MemStore is a Store in memory with the same rules as the Pebble store. It
// has no goroutines and no clock, so a deterministic simulation can use it.
// It models a disk: durable is what a sync made durable, and live what the
// store serves, so that a test can crash it (Crash: what is lost is what a
// power loss loses, such as snapshots still being written) and fail its
// syncs (FailSyncs).
type MemStore struct {
	mu      sync.Mutex
	id      *messages.NodeIdentity
	live    map[uint64]*memGroup // what reads see
	durable map[uint64]*memGroup // what survives Crash
	failed  error
	fault   error // injected sync failure
	closed  bool
	syncs   uint64
	nextID  uint64
}

// memGroup is a group's state and records. Copies (live, staged, durable)
// share the records' chunks (see memLog).
type memGroup struct {
	st       *groupState
	recs     memLog
	body     []byte // body of st.snap
	verified bool   // records checked since the store was (re)opened
}

// memRec is a stored entry. The store keeps the entry it was given rather
// than its encoding (encoding every entry was an eighth of the CPU of a
// busy in-memory node): entries handed to a store are never modified
// (store.LogStore), so it returns them as they are. corrupt marks a record
// CorruptEntry damaged, which fails its checks as a bad checksum does.
type memRec struct {
	e       *messages.Entry
	corrupt bool
}

// check verifies r as checkRecord verifies an encoded record.
func (r memRec) check(op string, group, index uint64) error {
	switch {
	case r.corrupt:
		return errCorrupt(op, group, index, "log record fails its checksum (damaged by CorruptEntry)")
	case r.e.GetIndex() != index:
		return errCorrupt(op, group, index, "log record holds entry %d/%d", r.e.GetIndex(), r.e.GetTerm())
	}
	return nil
}

func (g *memGroup) copy() *memGroup {
	c := *g
	c.st = g.st.clone()
	return &c
}

func copyGroups(m map[uint64]*memGroup, verified bool) map[uint64]*memGroup {
	out := make(map[uint64]*memGroup, len(m))
	for id, g := range m {
		c := g.copy()
		c.verified = verified
		out[id] = c
	}
	return out
}

// NewMemStore returns an empty in-memory store.
func NewMemStore(o Options) (*MemStore, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	inc := o.Incarnation
	for inc == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		inc = binary.BigEndian.Uint64(b[:])
	}
	return &MemStore{
		id:      &messages.NodeIdentity{ClusterId: o.ClusterID, NodeId: o.NodeID, Incarnation: inc},
		live:    map[uint64]*memGroup{},
		durable: map[uint64]*memGroup{},
	}, nil
}

// Crash simulates a power loss: m stops (every later call fails with
// STOPPED) and the store returned holds exactly what m had synced.
func (m *MemStore) Crash() *MemStore {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return &MemStore{
		id:      proto.Clone(m.id).(*messages.NodeIdentity),
		live:    copyGroups(m.durable, false),
		durable: copyGroups(m.durable, false),
		nextID:  m.nextID,
	}
}

// Reopen closes m and opens a store over its synced data, as a restart does.
// It checks the identity as OpenPebble does.
func (m *MemStore) Reopen(o Options) (*MemStore, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := checkIdentity(m.id, o, "memory"); err != nil {
		return nil, err
	}
	return m.Crash(), nil
}

// FailSyncs makes every later sync fail with err, as a disk that stopped
// accepting writes does: the store fails, and the failed write is neither
// read nor kept by Crash.
func (m *MemStore) FailSyncs(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault = err
}

// CorruptEntry damages the stored record of group at index, as bit rot on a
// disk would; the damage is seen after Reopen or Crash, or by a read.
func (m *MemStore) CorruptEntry(group, index uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.durable[group]
	if !ok || !g.recs.has(index) {
		return errInvalid("corrupt", group, "no durable entry at %d", index)
	}
	d := g.recs.at(index)
	d.corrupt = true
	// The damage is on the disk, which the live copy reads too (it may
	// hold the record in a chunk of its own since a truncation).
	if l, ok := m.live[group]; ok && l.recs.has(index) {
		if r := l.recs.at(index); r.e == d.e {
			r.corrupt = true
		}
	}
	return nil
}

// Syncs is the number of synced writes since the store was created.
func (m *MemStore) Syncs() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

func (m *MemStore) usableLocked(op string) error {
	if m.closed {
		return errClosed(op)
	}
	return m.failed
}

// groupLocked returns the live group id, checking its records the first
// time after an open.
func (m *MemStore) groupLocked(op string, id uint64) (*memGroup, error) {
	if m.closed {
		return nil, errClosed(op)
	}
	if id == 0 {
		return nil, errInvalid(op, 0, "group id is 0")
	}
	g, ok := m.live[id]
	if !ok {
		g = &memGroup{st: newGroupState(), recs: memLog{off: 1}, verified: true}
		m.live[id] = g
		return g, nil
	}
	if !g.verified {
		for i := g.recs.off; i < g.recs.end(); i++ {
			if err := g.recs.at(i).check("load", id, i); err != nil {
				return nil, err
			}
		}
		g.verified = true
	}
	return g, nil
}

// memWriter applies planned writes to staged copies of groups.
type memWriter struct {
	staged map[uint64]*memGroup
	wrote  bool
	err    error
}

func (w *memWriter) deleteEntries(group, lo, hi uint64) {
	if lo >= hi {
		return
	}
	w.wrote = true
	g := w.staged[group]
	start, end := g.recs.off, g.recs.end()
	lo, hi = max(lo, start), min(hi, end)
	if lo >= hi {
		return
	}
	switch {
	case lo == start:
		g.recs.dropBefore(hi)
	case hi == end:
		g.recs.truncate(lo)
	default:
		// Planned writes cut a prefix or a suffix, never a middle.
		w.err = errCorrupt("delete entries", group, lo, "memory log cannot delete %d..%d from the middle of %d..%d", lo, hi-1, start, end-1)
	}
}

func (w *memWriter) putEntry(group uint64, e *messages.Entry, _ []byte) {
	w.wrote = true
	g := w.staged[group]
	g.recs.append(e.GetIndex(), memRec{e: e})
}

func (w *memWriter) keepsEntries() bool { return true }

func (w *memWriter) putHardState(group uint64, _ *messages.HardState) { w.wrote = true }
func (w *memWriter) putSnapshot(group uint64, _ *messages.SnapshotMeta) {
	w.wrote = true
}

type mtx struct {
	m *MemStore
	w *memWriter
}

func (tx *mtx) group(op string, id uint64) (*memGroup, error) {
	if g, ok := tx.w.staged[id]; ok {
		return g, nil
	}
	g, err := tx.m.groupLocked(op, id)
	if err != nil {
		return nil, err
	}
	c := g.copy()
	tx.w.staged[id] = c
	return c, nil
}

// mutate plans a write, makes it live and then "syncs" it to the durable
// copy, unless a sync failure was injected, which fails the store.
func (m *MemStore) mutate(op string, fn func(tx *mtx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usableLocked(op); err != nil {
		return err
	}
	tx := &mtx{m: m, w: &memWriter{staged: map[uint64]*memGroup{}}}
	err := fn(tx)
	if err == nil {
		err = tx.w.err
	}
	if err != nil || !tx.w.wrote {
		return err
	}
	if m.fault != nil {
		// As with Pebble, a write whose sync failed is never seen: not by
		// reads now, and not after Crash.
		m.failed = errFailed(op, m.fault)
		return m.failed
	}
	for id, g := range tx.w.staged {
		m.live[id] = g
		m.durable[id] = g.copy()
	}
	m.syncs++
	return nil
}

// Load implements LogStore.
func (m *MemStore) Load(group uint64) (*messages.InitialState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, err := m.groupLocked("load", group)
	if err != nil {
		return nil, err
	}
	return g.st.initialState(m.id, group), nil
}

// Append implements LogStore.
func (m *MemStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	results := make([]*messages.StorageAppendResult, len(reqs))
	err := m.mutate("append", func(tx *mtx) error {
		for i, r := range reqs {
			res := &messages.StorageAppendResult{GroupId: r.GetGroupId(), Seq: r.GetSeq()}
			results[i] = res
			g, err := tx.group("append", r.GetGroupId())
			if err == nil {
				err = planAppend(g.st, r, tx.w)
			}
			if err != nil {
				res.Error = ToProto(err)
			}
			if g != nil {
				res.LastIndex = g.st.last
			}
		}
		return nil
	})
	return finishAppend(reqs, results, err)
}

// Entries implements LogStore.
func (m *MemStore) Entries(group, lo, hi, maxBytes uint64) ([]*messages.Entry, error) {
	const op = "read entries"
	m.mu.Lock()
	defer m.mu.Unlock()
	g, err := m.groupLocked(op, group)
	if err != nil {
		return nil, err
	}
	if err := checkRange(g.st, group, lo, hi); err != nil || lo == hi {
		return nil, err
	}
	ents := make([]*messages.Entry, 0, min(hi-lo, 1024))
	var size uint64
	for i := lo; i < hi; i++ {
		if !g.recs.has(i) {
			return nil, errCorrupt(op, group, i, "log entry missing")
		}
		rec := g.recs.at(i)
		if maxBytes > 0 {
			size += uint64(messages.EntrySize(rec.e))
			if size > maxBytes && len(ents) > 0 {
				break
			}
		}
		if err := rec.check(op, group, i); err != nil {
			return nil, err
		}
		ents = append(ents, rec.e)
	}
	return ents, nil
}

func (m *MemStore) state(op string, group uint64) (*groupState, error) {
	g, err := m.groupLocked(op, group)
	if err != nil {
		return nil, err
	}
	return g.st, nil
}

// Term implements LogStore.
func (m *MemStore) Term(group, index uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.state("term", group)
	if err != nil {
		return 0, err
	}
	return st.termOrErr("term", group, index)
}

// FirstIndex implements LogStore.
func (m *MemStore) FirstIndex(group uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.state("first index", group)
	if err != nil {
		return 0, err
	}
	return st.first, nil
}

// LastIndex implements LogStore.
func (m *MemStore) LastIndex(group uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.state("last index", group)
	if err != nil {
		return 0, err
	}
	return st.last, nil
}

// Purge implements LogStore.
func (m *MemStore) Purge(group, index uint64) (uint64, error) {
	var first uint64
	err := m.mutate("purge", func(tx *mtx) error {
		g, err := tx.group("purge", group)
		if err != nil {
			return err
		}
		if err := planPurge(g.st, group, index, tx.w); err != nil {
			return err
		}
		first = g.st.first
		return nil
	})
	if err != nil {
		return 0, err
	}
	return first, nil
}

// Identity implements Store.
func (m *MemStore) Identity() *messages.NodeIdentity {
	return proto.Clone(m.id).(*messages.NodeIdentity)
}

// Err implements Store.
func (m *MemStore) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

// Close implements Store.
func (m *MemStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// CreateSnapshot implements SnapshotStore.
func (m *MemStore) CreateSnapshot(group uint64, meta *messages.SnapshotMeta) (SnapshotWriter, error) {
	const op = "create snapshot"
	if group == 0 {
		return nil, errInvalid(op, 0, "group id is 0")
	}
	if meta == nil {
		return nil, errInvalid(op, group, "snapshot meta is nil")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usableLocked(op); err != nil {
		return nil, err
	}
	m.nextID++
	mm := proto.Clone(meta).(*messages.SnapshotMeta)
	mm.Id = fmt.Sprintf("%020d-%020d-%08x", mm.Index, mm.Term, m.nextID)
	return &memSnapshotWriter{m: m, group: group, meta: mm, wantSize: meta.Size, wantSum: meta.Checksum}, nil
}

type memSnapshotWriter struct {
	m        *MemStore
	group    uint64
	meta     *messages.SnapshotMeta
	wantSize uint64
	wantSum  uint32
	buf      bytes.Buffer
	done     bool
}

func (w *memSnapshotWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errInvalid("write snapshot", w.group, "snapshot writer already finished")
	}
	return w.buf.Write(p)
}

func (w *memSnapshotWriter) Abort() error { w.done = true; return nil }
func (w *memSnapshotWriter) Commit() (*messages.SnapshotMeta, error) {
	return w.finish(false)
}
func (w *memSnapshotWriter) Install() (*messages.SnapshotMeta, error) {
	return w.finish(true)
}

func (w *memSnapshotWriter) finish(install bool) (*messages.SnapshotMeta, error) {
	op := "commit snapshot"
	if install {
		op = "install snapshot"
	}
	if w.done {
		return nil, errInvalid(op, w.group, "snapshot writer already finished")
	}
	w.done = true
	body := w.buf.Bytes()
	w.meta.Size, w.meta.Checksum = uint64(len(body)), crc32.Checksum(body, castagnoli)
	if (w.wantSize != 0 || w.wantSum != 0) && (w.wantSize != w.meta.Size || w.wantSum != w.meta.Checksum) {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: w.group, Index: w.meta.Index,
			Msg: fmt.Sprintf("snapshot body is %d bytes with crc32c %08x, its meta says %d bytes with crc32c %08x",
				w.meta.Size, w.meta.Checksum, w.wantSize, w.wantSum)}
	}
	err := w.m.mutate(op, func(tx *mtx) error {
		g, err := tx.group(op, w.group)
		if err != nil {
			return err
		}
		if err := planSnapshot(g.st, w.group, w.meta, install, tx.w); err != nil {
			return err
		}
		g.body = body
		return nil
	})
	if err != nil {
		return nil, err
	}
	return proto.Clone(w.meta).(*messages.SnapshotMeta), nil
}

// Snapshot implements SnapshotStore.
func (m *MemStore) Snapshot(group uint64) (*messages.SnapshotMeta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.state("snapshot", group)
	if err != nil || st.snap == nil {
		return nil, err
	}
	return proto.Clone(st.snap).(*messages.SnapshotMeta), nil
}

func (m *MemStore) body(op string, group uint64, id string) (*messages.SnapshotMeta, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, err := m.groupLocked(op, group)
	if err != nil {
		return nil, nil, err
	}
	if g.st.snap == nil || g.st.snap.Id != id {
		latest := "none"
		if g.st.snap != nil {
			latest = g.st.snap.Id
		}
		return nil, nil, errInvalid(op, group, "snapshot %q not found (latest is %s)", id, latest)
	}
	return proto.Clone(g.st.snap).(*messages.SnapshotMeta), g.body, nil
}

// OpenSnapshot implements SnapshotStore.
func (m *MemStore) OpenSnapshot(group uint64, id string) (SnapshotReader, error) {
	const op = "open snapshot"
	meta, body, err := m.body(op, group, id)
	if err != nil {
		return nil, err
	}
	if err := verifyBody(bytes.NewReader(body), meta, op, group, "memory"); err != nil {
		return nil, err
	}
	r := bytes.NewReader(body)
	return &memSnapshotReader{Reader: r, meta: meta}, nil
}

type memSnapshotReader struct {
	*bytes.Reader
	meta *messages.SnapshotMeta
}

func (r *memSnapshotReader) Meta() *messages.SnapshotMeta {
	return proto.Clone(r.meta).(*messages.SnapshotMeta)
}
func (r *memSnapshotReader) Close() error { return nil }

// ReadSnapshotChunk implements SnapshotStore.
func (m *MemStore) ReadSnapshotChunk(group uint64, id string, offset, maxBytes uint64) (*messages.SnapshotMeta, []byte, bool, error) {
	const op = "read snapshot"
	meta, body, err := m.body(op, group, id)
	if err != nil {
		return nil, nil, false, err
	}
	return readChunk(op, group, meta, "memory", bytes.NewReader(body), offset, maxBytes)
}

// CorruptSnapshot damages the stored body of group's latest snapshot.
func (m *MemStore) CorruptSnapshot(group uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.live[group]
	if !ok || len(g.body) == 0 {
		return errInvalid("corrupt", group, "no snapshot body")
	}
	b := append([]byte(nil), g.body...)
	b[len(b)/2] ^= 0x01
	g.body = b
	if d, ok := m.durable[group]; ok {
		d.body = b
	}
	return nil
}

var (
	_ Store = (*MemStore)(nil)
	_ Store = (*PebbleStore)(nil)
)
