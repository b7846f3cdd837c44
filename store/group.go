package store

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordHeaderLen is crc32c(4) + term(8) + kind(1).
const recordHeaderLen = 13

// encodeRecord encodes e as a log record: a CRC-32C over everything after
// it, the term and kind (so that the log's index can be rebuilt without
// decoding entries), and the proto-encoded entry.
func encodeRecord(e *messages.Entry) ([]byte, error) {
	// One allocation: the entry is encoded straight after the header.
	mo := proto.MarshalOptions{Deterministic: true}
	b := make([]byte, recordHeaderLen, recordHeaderLen+mo.Size(e))
	binary.BigEndian.PutUint64(b[4:12], e.GetTerm())
	b[12] = byte(e.GetKind())
	b, err := mo.MarshalAppend(b, e)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[0:4], crc32.Checksum(b[4:], castagnoli))
	return b, nil
}

// checkRecord verifies the checksum of a record and returns its term and kind.
func checkRecord(op string, group, index uint64, b []byte) (uint64, messages.EntryKind, error) {
	if len(b) < recordHeaderLen {
		return 0, 0, errCorrupt(op, group, index, "log record is %d bytes, shorter than its header", len(b))
	}
	if got, want := crc32.Checksum(b[4:], castagnoli), binary.BigEndian.Uint32(b[0:4]); got != want {
		return 0, 0, errCorrupt(op, group, index, "log record fails its checksum (crc32c %08x, stored %08x)", got, want)
	}
	return binary.BigEndian.Uint64(b[4:12]), messages.EntryKind(b[12]), nil
}

// decodeRecord verifies and decodes the record stored at index.
func decodeRecord(op string, group, index uint64, b []byte) (*messages.Entry, error) {
	term, _, err := checkRecord(op, group, index, b)
	if err != nil {
		return nil, err
	}
	e := &messages.Entry{}
	if err := proto.Unmarshal(b[recordHeaderLen:], e); err != nil {
		return nil, errCorrupt(op, group, index, "log record does not decode: %v", err)
	}
	if e.GetIndex() != index || e.GetTerm() != term {
		return nil, errCorrupt(op, group, index, "log record holds entry %d/%d", e.GetIndex(), e.GetTerm())
	}
	return e, nil
}

// checkEncodes reports whether e would fail to encode, as encodeRecord
// would, without encoding it. Only a string field that is not valid UTF-8
// fails proto3 encoding, and an entry holds strings only inside a typed
// command (its type URL) or a membership (addresses): an entry with
// neither always encodes.
func checkEncodes(e *messages.Entry) error {
	if e.GetCommand() == nil && e.GetMembership() == nil {
		return nil
	}
	_, err := proto.Marshal(e)
	return err
}

// recordSize is what a record counts against a read's byte budget: the size
// of the encoded entry.
func recordSize(b []byte) uint64 { return uint64(len(b) - recordHeaderLen) }

// groupState is what a store keeps in memory about one group: everything
// Load returns except the entries themselves. Both implementations share it,
// and with it every rule about what a write may do.
type groupState struct {
	hard hardState
	snap *messages.SnapshotMeta // latest durable snapshot, nil for none
	// first..last are the stored entries; last < first when there are none,
	// and then first is the snapshot index + 1.
	first, last uint64
	runs        []*messages.TermRun         // terms of first..last
	members     []*messages.MembershipEntry // membership entries in first..last
}

// hardState is a plain copy of messages.HardState.
type hardState struct{ Term, Vote, Commit uint64 }

func (h hardState) proto() *messages.HardState {
	return &messages.HardState{Term: h.Term, Vote: h.Vote, Commit: h.Commit}
}

func newGroupState() *groupState { return &groupState{first: 1, last: 0} }

func (g *groupState) clone() *groupState {
	c := *g
	c.runs = slices.Clone(g.runs)
	c.members = slices.Clone(g.members)
	return &c
}

func (g *groupState) snapIndex() uint64 { return g.snap.GetIndex() }

// term returns the term at index, or ok false when it is not known.
func (g *groupState) term(index uint64) (uint64, bool) {
	if index == 0 {
		return 0, true
	}
	if index >= g.first && index <= g.last {
		// The last run whose first index is at or below index.
		i, _ := slices.BinarySearchFunc(g.runs, index, func(r *messages.TermRun, t uint64) int {
			switch {
			case r.FirstIndex < t:
				return -1
			case r.FirstIndex > t:
				return 1
			}
			return 0
		})
		if i < len(g.runs) && g.runs[i].FirstIndex == index {
			return g.runs[i].Term, true
		}
		return g.runs[i-1].Term, true
	}
	if g.snap != nil && index == g.snap.Index {
		return g.snap.Term, true
	}
	return 0, false
}

func (g *groupState) termOrErr(op string, group, index uint64) (uint64, error) {
	if t, ok := g.term(index); ok {
		return t, nil
	}
	if index < g.first {
		return 0, errCompacted(op, group, index, g.first)
	}
	return 0, errUnavailable(op, group, index, g.last)
}

// truncate forgets the entries from index on.
func (g *groupState) truncate(index uint64) {
	if index > g.last {
		return
	}
	if index <= g.first {
		g.runs, g.members = g.runs[:0], g.members[:0]
		g.first = max(g.snapIndex(), index-1) + 1
		g.last = g.first - 1
		return
	}
	g.last = index - 1
	for len(g.runs) > 0 && g.runs[len(g.runs)-1].FirstIndex >= index {
		g.runs = g.runs[:len(g.runs)-1]
	}
	for len(g.members) > 0 && g.members[len(g.members)-1].Index >= index {
		g.members = g.members[:len(g.members)-1]
	}
}

// add records an entry appended at last+1.
func (g *groupState) add(e *messages.Entry) {
	if g.last < g.first {
		g.first = e.Index
	}
	g.last = e.Index
	if n := len(g.runs); n == 0 || g.runs[n-1].Term != e.Term {
		g.runs = append(g.runs, &messages.TermRun{FirstIndex: e.Index, Term: e.Term})
	}
	if e.Kind == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
		m := &messages.MembershipEntry{Index: e.Index, Term: e.Term}
		if e.Membership != nil {
			m.Membership = proto.Clone(e.Membership).(*messages.Membership)
		}
		g.members = append(g.members, m)
	}
}

// purge forgets the entries up to and including index.
func (g *groupState) purge(index uint64) {
	if index < g.first {
		return
	}
	if index >= g.last {
		g.runs, g.members = g.runs[:0], g.members[:0]
		g.first = max(index, g.snapIndex()) + 1
		g.last = g.first - 1
		return
	}
	g.first = index + 1
	// Keep the run covering the new first index, starting it there.
	i := 0
	for i+1 < len(g.runs) && g.runs[i+1].FirstIndex <= g.first {
		i++
	}
	g.runs = slices.Clone(g.runs[i:])
	g.runs[0] = &messages.TermRun{FirstIndex: g.first, Term: g.runs[0].Term}
	j := 0
	for j < len(g.members) && g.members[j].Index < g.first {
		j++
	}
	g.members = slices.Clone(g.members[j:])
}

// initialState builds what Load returns.
func (g *groupState) initialState(id *messages.NodeIdentity, group uint64) *messages.InitialState {
	s := &messages.InitialState{
		Identity:   &messages.NodeIdentity{ClusterId: id.GetClusterId(), GroupId: group, NodeId: id.GetNodeId(), Incarnation: id.GetIncarnation()},
		HardState:  g.hard.proto(),
		FirstIndex: g.first,
		LastIndex:  g.last,
	}
	if g.snap != nil {
		s.Snapshot = proto.Clone(g.snap).(*messages.SnapshotMeta)
	}
	for _, r := range g.runs {
		s.TermRuns = append(s.TermRuns, &messages.TermRun{FirstIndex: r.FirstIndex, Term: r.Term})
	}
	for _, m := range g.members {
		if m.Index > g.snapIndex() {
			s.Memberships = append(s.Memberships, proto.Clone(m).(*messages.MembershipEntry))
		}
	}
	return s
}

// logWriter receives the writes that planned operations make. The Pebble
// store turns them into a batch; the in-memory store applies them.
type logWriter interface {
	deleteEntries(group, lo, hi uint64) // lo..hi-1
	// putEntry stores e at its index. rec is e encoded as a log record, or
	// nil for a writer that keeps entries as they are (keepsEntries).
	putEntry(group uint64, e *messages.Entry, rec []byte)
	// keepsEntries says the writer keeps the entries themselves, not their
	// records, so planAppend need not encode them.
	keepsEntries() bool
	putHardState(group uint64, hs *messages.HardState)
	putSnapshot(group uint64, meta *messages.SnapshotMeta)
}

// planAppend checks req against g, sends its writes to w and updates g. On
// error nothing was written and g is unchanged.
func planAppend(g *groupState, req *messages.StorageAppend, w logWriter) error {
	const op = "append"
	group := req.GetGroupId()
	if group == 0 {
		return errInvalid(op, 0, "group id is 0")
	}
	hs := req.GetHardState()
	if hs != nil {
		switch {
		case hs.Term < g.hard.Term:
			return errInvalid(op, group, "hard state term %d is older than the stored term %d", hs.Term, g.hard.Term)
		case hs.Term == g.hard.Term && g.hard.Vote != 0 && hs.Vote != g.hard.Vote:
			// A second, different vote in one term is how two leaders get
			// elected in one term.
			return errInvalid(op, group, "hard state changes the vote of term %d from %d to %d", hs.Term, g.hard.Vote, hs.Vote)
		}
	}
	ents := req.GetEntries()
	var recs [][]byte // nil for a writer that keeps entries
	if !w.keepsEntries() {
		recs = make([][]byte, len(ents))
	}
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		for i, e := range ents {
			switch {
			case e == nil:
				return errInvalid(op, group, "entry %d is nil", i)
			case e.Index != first+uint64(i):
				return errInvalid(op, group, "entries are not contiguous: entry %d has index %d, want %d", i, e.Index, first+uint64(i))
			case e.Term == 0:
				return errInvalid(op, group, "entry %d has term 0", e.Index)
			case i > 0 && e.Term < ents[i-1].Term:
				return errInvalid(op, group, "entry %d has term %d, lower than the term %d before it", e.Index, e.Term, ents[i-1].Term)
			case e.Term > termAfter(g, hs):
				// Entries of a term newer than the node's own term mean the
				// hard state was not persisted first.
				return errInvalid(op, group, "entry %d has term %d, newer than the node's term", e.Index, e.Term)
			}
		}
		base := g.snapIndex()
		switch {
		case first == 0:
			return errInvalid(op, group, "entry index 0")
		case first <= base:
			return errInvalid(op, group, "entry %d is covered by the snapshot at %d", first, base)
		case first > g.last+1:
			return errInvalid(op, group, "entry %d leaves a gap after the last index %d", first, g.last)
		}
		if prev, ok := g.term(first - 1); ok && first-1 > 0 && ents[0].Term < prev {
			return errInvalid(op, group, "entry %d has term %d, lower than the term %d before it", first, ents[0].Term, prev)
		}
		// Replacing entries is how a follower resolves a conflict, but only
		// uncommitted ones may go: an entry at or below the commit index
		// must be rewritten with the same term or not at all.
		commit := g.hard.Commit
		for _, e := range ents {
			if e.Index > commit || e.Index > g.last {
				break
			}
			if t, _ := g.term(e.Index); t != e.Term {
				return errInvalid(op, group, "entry %d of term %d would replace the committed entry of term %d", e.Index, e.Term, t)
			}
		}
		keep := w.keepsEntries()
		for i, e := range ents {
			if keep {
				// The same refusal as the encoding store's, without the
				// encoding.
				if err := checkEncodes(e); err != nil {
					return errInvalid(op, group, "entry %d does not encode: %v", e.Index, err)
				}
				continue
			}
			rec, err := encodeRecord(e)
			if err != nil {
				return errInvalid(op, group, "entry %d does not encode: %v", e.Index, err)
			}
			recs[i] = rec
		}
	}

	// Checked: now write.
	if hs != nil {
		g.hard = hardState{Term: hs.Term, Vote: hs.Vote, Commit: max(hs.Commit, g.hard.Commit)}
		w.putHardState(group, g.hard.proto())
	}
	if len(ents) > 0 {
		if first := ents[0].Index; first <= g.last {
			w.deleteEntries(group, first, g.last+1)
			g.truncate(first)
		}
		for i, e := range ents {
			var rec []byte
			if recs != nil {
				rec = recs[i]
			}
			w.putEntry(group, e, rec)
			g.add(e)
		}
	}
	return nil
}

// termAfter is the node's term once hs (possibly nil) is written.
func termAfter(g *groupState, hs *messages.HardState) uint64 {
	if hs != nil {
		return hs.Term
	}
	return g.hard.Term
}

// planPurge checks a purge up to index and sends its writes to w.
func planPurge(g *groupState, group, index uint64, w logWriter) error {
	if group == 0 {
		return errInvalid("purge", 0, "group id is 0")
	}
	if index > g.snapIndex() {
		return errInvalid("purge", group, "index %d is past the durable snapshot at %d", index, g.snapIndex())
	}
	if index < g.first {
		return nil
	}
	w.deleteEntries(group, g.first, min(index, g.last)+1)
	g.purge(index)
	return nil
}

// planSnapshot records meta as the group's latest snapshot. With install it
// also resets the log as a follower does on InstallSnapshot.
func planSnapshot(g *groupState, group uint64, meta *messages.SnapshotMeta, install bool, w logWriter) error {
	op := "commit snapshot"
	if install {
		op = "install snapshot"
	}
	if meta.GetIndex() < g.snapIndex() {
		// lastSnapshotIndex never goes backwards.
		return errInvalid(op, group, "snapshot index %d is older than the stored snapshot at %d", meta.GetIndex(), g.snapIndex())
	}
	if !install {
		if t, ok := g.term(meta.GetIndex()); !ok || t != meta.GetTerm() {
			return errInvalid(op, group, "snapshot %d/%d is not in the local log (first %d, last %d)", meta.GetIndex(), meta.GetTerm(), g.first, g.last)
		}
		g.snap = proto.Clone(meta).(*messages.SnapshotMeta)
		w.putSnapshot(group, g.snap)
		return nil
	}
	if meta.GetTerm() == 0 || meta.GetIndex() == 0 {
		return errInvalid(op, group, "snapshot %d/%d has no index or term", meta.GetIndex(), meta.GetTerm())
	}
	keep := false
	if t, ok := g.term(meta.Index); ok && meta.Index >= g.first && meta.Index <= g.last {
		if t == meta.Term {
			keep = true
		} else if meta.Index <= g.hard.Commit {
			// Discarding the log would take back committed entries: the
			// snapshot contradicts what this node knows is committed.
			return errInvalid(op, group, "snapshot %d/%d conflicts with the committed entry of term %d", meta.Index, meta.Term, t)
		}
	}
	if g.last >= g.first {
		hi := g.last + 1
		if keep {
			hi = meta.Index + 1
		}
		w.deleteEntries(group, g.first, hi)
	}
	g.snap = proto.Clone(meta).(*messages.SnapshotMeta)
	w.putSnapshot(group, g.snap)
	if keep {
		g.purge(meta.Index)
	} else {
		g.runs, g.members = g.runs[:0], g.members[:0]
		g.first, g.last = meta.Index+1, meta.Index
	}
	if g.hard.Commit < meta.Index {
		g.hard.Commit = meta.Index
		w.putHardState(group, g.hard.proto())
	}
	return nil
}

// checkRange validates a read of lo..hi-1 against g.
func checkRange(g *groupState, group, lo, hi uint64) error {
	const op = "read entries"
	switch {
	case lo > hi:
		return errInvalid(op, group, "range %d..%d is reversed", lo, hi)
	case lo < g.first:
		return errCompacted(op, group, lo, g.first)
	case hi > g.last+1:
		return errUnavailable(op, group, hi-1, g.last)
	}
	return nil
}

func quote(s string) string { return strconv.Quote(s) }
func u64(v uint64) string   { return strconv.FormatUint(v, 10) }
