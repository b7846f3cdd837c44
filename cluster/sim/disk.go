package sim

import (
	"errors"
	"fmt"

	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// DiskState is what a node's storage holds: the hard state, the latest
// snapshot and the log after it. Entries are immutable once stored.
type DiskState struct {
	Identity     *messages.NodeIdentity
	HardState    *messages.HardState
	Snapshot     *messages.SnapshotMeta // nil before the first snapshot
	SnapshotData []byte
	// First is the index of Entries[0]: 1 before any purge, at most
	// Snapshot.Index+1 after one.
	First   uint64
	Entries []*messages.Entry
}

// LastIndex is the index of the last entry, or the snapshot's index when the
// log is empty.
func (s *DiskState) LastIndex() uint64 { return s.First + uint64(len(s.Entries)) - 1 }

// Term returns the term of the entry at index, from the log or the
// snapshot; ok is false when index is neither.
func (s *DiskState) Term(index uint64) (uint64, bool) {
	if index >= s.First && index <= s.LastIndex() {
		return s.Entries[index-s.First].Term, true
	}
	if s.Snapshot != nil && index == s.Snapshot.Index {
		return s.Snapshot.Term, true
	}
	if index == 0 {
		return 0, true
	}
	return 0, false
}

// Entry returns the entry at index, or nil.
func (s *DiskState) Entry(index uint64) *messages.Entry {
	if index < s.First || index > s.LastIndex() {
		return nil
	}
	return s.Entries[index-s.First]
}

// clone copies the state with fresh backing arrays, so that appends to one
// copy can never be seen through the other.
func (s *DiskState) clone() DiskState {
	c := *s
	c.Entries = append([]*messages.Entry(nil), s.Entries...)
	return c
}

// InitialState is what a restarting node loads, in the protocol's form.
func (s *DiskState) InitialState() *messages.InitialState {
	is := &messages.InitialState{
		Identity:   s.Identity,
		HardState:  proto.Clone(s.HardState).(*messages.HardState),
		FirstIndex: s.First,
		LastIndex:  s.LastIndex(),
	}
	if s.Snapshot != nil {
		is.Snapshot = s.Snapshot
	}
	var run *messages.TermRun
	for _, e := range s.Entries {
		if run == nil || run.Term != e.Term {
			run = &messages.TermRun{FirstIndex: e.Index, Term: e.Term}
			is.TermRuns = append(is.TermRuns, run)
		}
		if e.Kind == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			is.Memberships = append(is.Memberships, &messages.MembershipEntry{
				Index: e.Index, Term: e.Term, Membership: e.Membership,
			})
		}
	}
	return is
}

type diskOpKind int

const (
	opAppend diskOpKind = iota
	opSnapshot
	opPurge
)

type diskOp struct {
	kind    diskOpKind
	install bool
	hs      *messages.HardState
	entries []*messages.Entry
	meta    *messages.SnapshotMeta
	data    []byte
	index   uint64
}

// DiskStats counts what a disk did.
type DiskStats struct {
	Writes, Syncs, Crashes, LostWrites uint64
}

// Disk is a node's simulated storage with the semantics of Raftor's storage
// interface, and the failure model of a real disk: a write is visible to the
// node at once but survives a crash only once synced. A crash keeps a
// seed-chosen prefix of the unsynced writes (a write-ahead log that got
// part of the way to the platter) and loses the rest.
type Disk struct {
	written DiskState
	durable DiskState
	pending []diskOp
	// dirtyFrom is the lowest log index changed in the written state since
	// the checker last looked; truncatedFrom the lowest index that was
	// removed or replaced (0 for none).
	dirtyFrom     uint64
	truncatedFrom uint64
	Stats         DiskStats
}

// NewDisk returns an empty disk for identity.
func NewDisk(id *messages.NodeIdentity) *Disk {
	st := DiskState{Identity: id, HardState: &messages.HardState{}, First: 1}
	return &Disk{written: st, durable: st.clone(), dirtyFrom: 1}
}

// State is the written state: what the node reads back.
func (d *Disk) State() *DiskState { return &d.written }

// Durable is what would survive a crash now.
func (d *Disk) Durable() *DiskState { return &d.durable }

// Unsynced is the number of writes not yet synced.
func (d *Disk) Unsynced() int { return len(d.pending) }

// ErrBadWrite is returned for a write the storage contract forbids.
var ErrBadWrite = errors.New("sim disk: invalid write")

// Append writes hs (if non-nil) and entries. If entries start at or below
// the last index, the stored suffix from there is replaced.
func (d *Disk) Append(hs *messages.HardState, entries []*messages.Entry) error {
	op := diskOp{kind: opAppend, hs: hs, entries: entries}
	if err := d.validate(op); err != nil {
		return err
	}
	d.markDirty(op)
	apply(&d.written, op)
	d.pending = append(d.pending, op)
	d.Stats.Writes++
	return nil
}

// SaveSnapshot records a snapshot of the local state machine as the latest
// one; the log is not touched (Purge trims it later).
func (d *Disk) SaveSnapshot(meta *messages.SnapshotMeta, data []byte) error {
	return d.snapshot(meta, data, false)
}

// InstallSnapshot records a snapshot received from a leader and resets the
// log as a follower does: if the log holds the snapshot's last entry with
// the same term, the suffix after it is kept, otherwise the whole log is
// discarded (it conflicts or is behind). The stored commit index is raised
// to the snapshot's index. Both happen in one write.
func (d *Disk) InstallSnapshot(meta *messages.SnapshotMeta, data []byte) error {
	return d.snapshot(meta, data, true)
}

func (d *Disk) snapshot(meta *messages.SnapshotMeta, data []byte, install bool) error {
	if meta == nil || (d.written.Snapshot != nil && meta.Index <= d.written.Snapshot.Index) {
		return fmt.Errorf("%w: snapshot does not advance", ErrBadWrite)
	}
	if !install && meta.Index > d.written.LastIndex() {
		return fmt.Errorf("%w: local snapshot at %d is past the log's last index %d", ErrBadWrite, meta.Index, d.written.LastIndex())
	}
	op := diskOp{kind: opSnapshot, meta: meta, data: data, install: install}
	d.markDirty(op)
	apply(&d.written, op)
	d.pending = append(d.pending, op)
	d.Stats.Writes++
	return nil
}

// Purge drops log entries up to and including index, which the stored
// snapshot must cover.
func (d *Disk) Purge(index uint64) error {
	if d.written.Snapshot == nil || index > d.written.Snapshot.Index {
		return fmt.Errorf("%w: purge to %d beyond the snapshot", ErrBadWrite, index)
	}
	if index < d.written.First {
		return nil
	}
	op := diskOp{kind: opPurge, index: index}
	apply(&d.written, op)
	d.pending = append(d.pending, op)
	d.Stats.Writes++
	return nil
}

// Sync makes every write so far durable.
func (d *Disk) Sync() {
	if len(d.pending) == 0 {
		return
	}
	for _, op := range d.pending {
		apply(&d.durable, op)
	}
	d.pending = d.pending[:0]
	d.Stats.Syncs++
}

// Crash loses the unsynced writes but the first keep of them (clamped).
func (d *Disk) Crash(keep int) {
	keep = min(max(keep, 0), len(d.pending))
	for _, op := range d.pending[:keep] {
		apply(&d.durable, op)
	}
	d.Stats.Crashes++
	d.Stats.LostWrites += uint64(len(d.pending) - keep)
	d.pending = nil
	// What the node will read after restart is exactly what survived; the
	// checker looks at the whole log again.
	d.written = d.durable.clone()
	d.dirtyFrom = 1
}

func (d *Disk) validate(op diskOp) error {
	if len(op.entries) == 0 {
		return nil
	}
	first := op.entries[0].Index
	if first < d.written.First || first > d.written.LastIndex()+1 {
		return fmt.Errorf("%w: entries start at %d, log holds %d..%d", ErrBadWrite, first, d.written.First, d.written.LastIndex())
	}
	for i, e := range op.entries {
		if e.Index != first+uint64(i) {
			return fmt.Errorf("%w: entries not contiguous at %d", ErrBadWrite, e.Index)
		}
	}
	return nil
}

func (d *Disk) markDirty(op diskOp) {
	switch op.kind {
	case opAppend:
		if len(op.entries) == 0 {
			return
		}
		first := op.entries[0].Index
		d.dirtyFrom = min(d.dirtyFrom, first)
		if first <= d.written.LastIndex() {
			d.truncatedFrom = minNonZero(d.truncatedFrom, first)
		}
	case opSnapshot:
		if !op.install {
			return
		}
		if t, ok := d.written.Term(op.meta.Index); !ok || t != op.meta.Term {
			// The log is discarded: anything it held past the snapshot is
			// taken back.
			if d.written.LastIndex() > op.meta.Index {
				d.truncatedFrom = minNonZero(d.truncatedFrom, op.meta.Index+1)
			}
		}
		d.dirtyFrom = min(d.dirtyFrom, op.meta.Index+1)
	}
}

// TakeDirty returns and resets the lowest changed and lowest truncated log
// index since the last call (0 for none; dirty is MaxUint64 for none).
func (d *Disk) TakeDirty() (dirtyFrom, truncatedFrom uint64) {
	dirtyFrom, truncatedFrom = d.dirtyFrom, d.truncatedFrom
	d.dirtyFrom, d.truncatedFrom = ^uint64(0), 0
	return
}

func minNonZero(a, b uint64) uint64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}

// apply performs op on st. Any write that replaces an existing position goes
// to a fresh array, so two states that share a backing array (the written
// and durable views) never see each other's replaced entries.
func apply(st *DiskState, op diskOp) {
	switch op.kind {
	case opAppend:
		if op.hs != nil {
			st.HardState = op.hs
		}
		if len(op.entries) == 0 {
			return
		}
		cut := op.entries[0].Index - st.First
		if cut < uint64(len(st.Entries)) {
			st.Entries = append(st.Entries[:cut:cut], op.entries...)
		} else {
			st.Entries = append(st.Entries, op.entries...)
		}
	case opSnapshot:
		meta := op.meta
		if op.install {
			if meta.Index >= st.First && meta.Index <= st.LastIndex() && st.Entries[meta.Index-st.First].Term == meta.Term {
				st.Entries = append([]*messages.Entry(nil), st.Entries[meta.Index+1-st.First:]...)
			} else {
				st.Entries = nil
			}
			st.First = meta.Index + 1
			hs := proto.Clone(st.HardState).(*messages.HardState)
			hs.Commit = max(hs.Commit, meta.Index)
			st.HardState = hs
		}
		st.Snapshot = meta
		st.SnapshotData = op.data
	case opPurge:
		if op.index < st.First {
			return
		}
		drop := min(op.index+1-st.First, uint64(len(st.Entries)))
		st.Entries = append([]*messages.Entry(nil), st.Entries[drop:]...)
		st.First += drop
	}
}
