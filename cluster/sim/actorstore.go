package sim

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// simStore is the store an actor-mode node runs on: a store.MemStore (every
// write synced when the call returns, so a crash loses exactly the writes
// still queued in the storage actor's mailbox) that tells its node after
// each write, so that the checker's view of the log (storeLog) follows the
// store by reading it back.
type simStore struct {
	store.Store
	n *actorNode
}

// Append implements store.LogStore.
func (s *simStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	res, err := s.Store.Append(reqs)
	from := ^uint64(0)
	for _, r := range reqs {
		if es := r.GetEntries(); len(es) > 0 {
			from = min(from, es[0].GetIndex())
		}
		if sn := r.GetSnapshot(); sn != nil {
			from = min(from, sn.GetIndex()+1)
		}
	}
	s.n.wrote(from)
	return res, err
}

// Purge implements store.LogStore.
func (s *simStore) Purge(group, index uint64) (uint64, error) {
	first, err := s.Store.Purge(group, index)
	s.n.wrote(^uint64(0))
	return first, err
}

// CreateSnapshot implements store.SnapshotStore.
func (s *simStore) CreateSnapshot(group uint64, meta *messages.SnapshotMeta) (store.SnapshotWriter, error) {
	w, err := s.Store.CreateSnapshot(group, meta)
	if err != nil {
		return nil, err
	}
	return &simSnapshotWriter{SnapshotWriter: w, s: s}, nil
}

type simSnapshotWriter struct {
	store.SnapshotWriter
	s *simStore
}

func (w *simSnapshotWriter) Commit() (*messages.SnapshotMeta, error) {
	meta, err := w.SnapshotWriter.Commit()
	w.s.n.wrote(^uint64(0))
	if err == nil {
		w.s.n.s.stats.Snapshots++
	}
	return meta, err
}

func (w *simSnapshotWriter) Install() (*messages.SnapshotMeta, error) {
	meta, err := w.SnapshotWriter.Install()
	from := ^uint64(0)
	if meta != nil {
		from = meta.GetIndex() + 1
	}
	w.s.n.wrote(from)
	if err == nil {
		w.s.n.s.stats.SnapshotInstalls++
	}
	return meta, err
}

// storeLog is the checker's view of a node's store: the hard state, the
// latest snapshot's meta and the log, as read back from the store after
// every write. Writes are durable when they return, so State and Durable
// are one.
type storeLog struct {
	st DiskState
	// dirtyFrom and truncatedFrom are as Disk's (see TakeDirty).
	dirtyFrom, truncatedFrom uint64
}

func newStoreLog(id *messages.NodeIdentity) *storeLog {
	return &storeLog{st: DiskState{Identity: id, HardState: &messages.HardState{}, First: 1}, dirtyFrom: 1}
}

// State implements LogView.
func (l *storeLog) State() *DiskState { return &l.st }

// Durable implements LogView.
func (l *storeLog) Durable() *DiskState { return &l.st }

// TakeDirty implements LogView.
func (l *storeLog) TakeDirty() (dirtyFrom, truncatedFrom uint64) {
	dirtyFrom, truncatedFrom = l.dirtyFrom, l.truncatedFrom
	l.dirtyFrom, l.truncatedFrom = ^uint64(0), 0
	return
}

// refresh reads the store back: the hard state, the snapshot and the log's
// bounds always, and the entries from index from on (the lowest index the
// write may have changed; MaxUint64 for none). An entry that was in the
// view and is now gone or of another term, above the new first index, was
// removed or replaced: the checker's leader append-only property watches
// for that.
func (l *storeLog) refresh(st store.Store, group, from uint64) error {
	is, err := st.Load(group)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	old := l.st
	nst := DiskState{Identity: old.Identity, HardState: is.GetHardState(), Snapshot: is.GetSnapshot(), First: is.GetFirstIndex()}
	if nst.HardState == nil {
		nst.HardState = &messages.HardState{}
	}
	if nst.First == 0 {
		nst.First = 1
	}
	last := is.GetLastIndex()
	if last+1 < nst.First {
		return fmt.Errorf("log bounds %d..%d", nst.First, last)
	}
	from = max(from, nst.First)
	// Entries below from are unchanged: keep the view's, where it has them.
	keepTo := min(from, last+1) // exclusive
	lo := nst.First
	for idx := nst.First; idx < keepTo; idx++ {
		e := old.Entry(idx)
		if e == nil {
			break
		}
		nst.Entries = append(nst.Entries, e)
		lo = idx + 1
	}
	if lo <= last {
		es, err := st.Entries(group, lo, last+1, 0)
		if err != nil {
			return fmt.Errorf("entries %d..%d: %w", lo, last, err)
		}
		if uint64(len(es)) != last+1-lo {
			return fmt.Errorf("entries %d..%d: got %d", lo, last, len(es))
		}
		nst.Entries = append(nst.Entries, es...)
		l.dirtyFrom = min(l.dirtyFrom, lo)
	}
	for idx := max(lo, nst.First, old.First); idx <= old.LastIndex(); idx++ {
		oe := old.Entry(idx)
		ne := nst.Entry(idx)
		if ne == nil || ne.GetTerm() != oe.GetTerm() {
			l.truncatedFrom = minNonZero(l.truncatedFrom, idx)
			break
		}
	}
	l.st = nst
	return nil
}

// kvSnapshot is the body of a simKV snapshot: applied index and term, then
// the map as kvSM.encode writes it.
type kvSnapshot struct {
	index, term uint64
	body        []byte
}

func (s *kvSnapshot) Index() uint64 { return s.index }
func (s *kvSnapshot) Term() uint64  { return s.term }
func (s *kvSnapshot) Close() error  { return nil }

func (s *kvSnapshot) WriteTo(w io.Writer) (int64, error) {
	var hdr [16]byte
	putUint64(hdr[:8], s.index)
	putUint64(hdr[8:], s.term)
	n1, err := w.Write(hdr[:])
	if err != nil {
		return int64(n1), err
	}
	n2, err := w.Write(s.body)
	return int64(n1 + n2), err
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func getUint64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// simKV is an actor-mode node's state machine: the core mode's kvSM behind
// store.StateMachine, with client sessions as store/kvsm keeps them. Its
// state is durable as soon as Apply returns (like store/kvsm with syncs
// on), so it survives the node's crashes. Every entry it applies is shown
// to the checker (state machine safety).
//
// Sessions make a write that reaches the log twice (a forwarded request
// the network duplicated, a retry after an answer that said it had not
// happened) take effect once: a command whose RequestID was applied before
// is answered with the first application's result.
type simKV struct {
	n        *actorNode
	kv       *kvSM
	sessions map[uint64]kvSession
}

// kvSession is the last request a client had applied and its result.
type kvSession struct {
	seq    uint64
	result []byte
}

var _ store.StateMachine = (*simKV)(nil)

func (m *simKV) Apply(entries []*messages.Entry) ([]store.Result, error) {
	out := make([]store.Result, len(entries))
	for i, e := range entries {
		if e.GetIndex() <= m.kv.appliedIndex {
			out[i].Skipped = true
			continue
		}
		if e.GetIndex() != m.kv.appliedIndex+1 {
			m.n.s.fail(violation(PropAppliedMonotonic, "n%d applied %d then was given %d", m.n.id, m.kv.appliedIndex, e.GetIndex()))
			return nil, fmt.Errorf("entry %d after %d", e.GetIndex(), m.kv.appliedIndex)
		}
		term := max(m.n.metrics().GetTerm(), e.GetTerm())
		if err := m.n.s.checker.Applied(m.n.id, term, e); err != nil {
			m.n.s.fail(err)
		}
		out[i].Data = m.applyOne(e)
	}
	m.n.s.trace.Add(m.n.s.q.Now(), m.n.id, "applied up to %d", m.kv.appliedIndex)
	return out, nil
}

// applyOne applies a committed entry, once per RequestID, and returns the
// encoded result.
func (m *simKV) applyOne(e *messages.Entry) []byte {
	rid := e.GetRequest()
	if e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL && rid.GetClientId() != 0 {
		if last, ok := m.sessions[rid.GetClientId()]; ok && rid.GetSequence() <= last.seq {
			m.kv.appliedIndex, m.kv.appliedTerm = e.GetIndex(), e.GetTerm()
			res := &messages.KVResult{}
			if rid.GetSequence() == last.seq {
				_ = proto.Unmarshal(last.result, res)
			} else {
				res.Error = fmt.Sprintf("request %d of client %d is older than its last applied request %d", rid.GetSequence(), rid.GetClientId(), last.seq)
			}
			res.Duplicate = true
			m.n.s.trace.Add(m.n.s.q.Now(), m.n.id, "request %d of client %d at %d was applied before: answered with its first result", rid.GetSequence(), rid.GetClientId(), e.GetIndex())
			b, _ := protoMarshal(res)
			return b
		}
	}
	res := m.kv.apply(e)
	if res == nil {
		return nil
	}
	b, _ := protoMarshal(res)
	if e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL && rid.GetClientId() != 0 {
		m.sessions[rid.GetClientId()] = kvSession{seq: rid.GetSequence(), result: b}
	}
	return b
}

func (m *simKV) Snapshot() (store.StateSnapshot, error) {
	// The body: the sessions in client order, then the map.
	ids := slices.Sorted(maps.Keys(m.sessions))
	b := binary.AppendUvarint(nil, uint64(len(ids)))
	for _, id := range ids {
		ss := m.sessions[id]
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, ss.seq)
		b = binary.AppendUvarint(b, uint64(len(ss.result)))
		b = append(b, ss.result...)
	}
	return &kvSnapshot{index: m.kv.appliedIndex, term: m.kv.appliedTerm, body: append(b, m.kv.encode()...)}, nil
}

// decodeSessions reads the sessions at the start of a snapshot body and
// returns the rest.
func decodeSessions(b []byte) (map[uint64]kvSession, []byte, error) {
	next := func() (uint64, error) {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, errBadSnapshot
		}
		b = b[k:]
		return v, nil
	}
	n, err := next()
	if err != nil {
		return nil, nil, err
	}
	out := make(map[uint64]kvSession, n)
	for i := uint64(0); i < n; i++ {
		id, err := next()
		if err != nil {
			return nil, nil, err
		}
		seq, err := next()
		if err != nil {
			return nil, nil, err
		}
		l, err := next()
		if err != nil || uint64(len(b)) < l {
			return nil, nil, errBadSnapshot
		}
		out[id] = kvSession{seq: seq, result: slices.Clone(b[:l])}
		b = b[l:]
	}
	return out, b, nil
}

func (m *simKV) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) < 16 {
		return errBadSnapshot
	}
	sessions, rest, err := decodeSessions(b[16:])
	if err != nil {
		return err
	}
	data, err := decodeKV(rest)
	if err != nil {
		return err
	}
	idx, term := getUint64(b[:8]), getUint64(b[8:16])
	if idx < m.kv.appliedIndex {
		m.n.s.fail(violation(PropAppliedMonotonic, "n%d asked to restore a snapshot at %d after applying %d", m.n.id, idx, m.kv.appliedIndex))
	}
	m.kv.data, m.kv.appliedIndex, m.kv.appliedTerm = data, idx, term
	m.sessions = sessions
	m.n.s.trace.Add(m.n.s.q.Now(), m.n.id, "state machine restored at %d term %d", idx, term)
	return nil
}

func (m *simKV) LastApplied() (index, term uint64) { return m.kv.appliedIndex, m.kv.appliedTerm }
