package core

import (
	"fmt"
	"sort"

	"github.com/raftor/raftor/messages"
)

// TermIndex records the term of every entry of a log without the entries:
// runs of (first index, term) over first..last, plus the term of the entry
// just before first when it is known (the snapshot's). Raft needs nothing
// more to match logs, count commits and answer conflict hints, so the core
// and the replication brains keep a TermIndex instead of payloads.
//
// The zero value is an empty log starting at index 1.
type TermIndex struct {
	// base is the index before the first entry; baseTerm its term when
	// baseKnown (always for base 0, whose term is 0).
	base      uint64
	baseTerm  uint64
	baseKnown bool
	runs      []run // ascending first, ascending term, all within base+1..last
	last      uint64
}

type run struct{ first, term uint64 }

// NewTermIndex builds a TermIndex for the log first..last whose terms are
// described by runs. baseTerm is the term of first-1 when known (ok).
func NewTermIndex(first, last uint64, runs []*messages.TermRun, baseTerm uint64, baseKnown bool) (*TermIndex, error) {
	if first == 0 {
		return nil, fmt.Errorf("core: term index: first index 0")
	}
	if last+1 < first {
		return nil, fmt.Errorf("core: term index: last index %d before first %d", last, first)
	}
	t := &TermIndex{base: first - 1, baseTerm: baseTerm, baseKnown: baseKnown || first == 1, last: last}
	if first == 1 {
		t.baseTerm = 0
	}
	if last < first {
		if len(runs) != 0 {
			return nil, fmt.Errorf("core: term index: %d term runs for an empty log", len(runs))
		}
		return t, nil
	}
	if len(runs) == 0 || runs[0].GetFirstIndex() != first {
		return nil, fmt.Errorf("core: term index: runs do not start at first index %d", first)
	}
	for i, r := range runs {
		if r.GetFirstIndex() > last {
			return nil, fmt.Errorf("core: term index: run at %d beyond last index %d", r.GetFirstIndex(), last)
		}
		if i > 0 && (r.GetFirstIndex() <= runs[i-1].GetFirstIndex() || r.GetTerm() <= runs[i-1].GetTerm()) {
			return nil, fmt.Errorf("core: term index: runs not strictly increasing at %d", r.GetFirstIndex())
		}
		if t.baseKnown && r.GetTerm() < t.baseTerm {
			return nil, fmt.Errorf("core: term index: term %d below base term %d", r.GetTerm(), t.baseTerm)
		}
		t.runs = append(t.runs, run{r.GetFirstIndex(), r.GetTerm()})
	}
	return t, nil
}

// Clone returns an independent copy.
func (t *TermIndex) Clone() *TermIndex {
	c := *t
	c.runs = append([]run(nil), t.runs...)
	return &c
}

// FirstIndex is the first index of the log (base + 1).
func (t *TermIndex) FirstIndex() uint64 { return t.base + 1 }

// LastIndex is the last index of the log (base when empty).
func (t *TermIndex) LastIndex() uint64 { return t.last }

// LastTerm is the term of the last entry (the base's when empty).
func (t *TermIndex) LastTerm() uint64 {
	if len(t.runs) == 0 {
		return t.baseTerm
	}
	return t.runs[len(t.runs)-1].term
}

// Term returns the term of the entry at i; ok is false when i is beyond the
// log or was compacted away.
func (t *TermIndex) Term(i uint64) (term uint64, ok bool) {
	switch {
	case i == 0:
		return 0, true
	case i == t.base:
		return t.baseTerm, t.baseKnown
	case i < t.base || i > t.last:
		return 0, false
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > i }) - 1
	return t.runs[k].term, true
}

// FirstInTerm returns the first index of the log that has the same term as
// the entry at i (i must be in first..last). Followers send it as the
// conflict hint so that the leader skips the whole term at once.
func (t *TermIndex) FirstInTerm(i uint64) uint64 {
	if i <= t.base || i > t.last {
		return i
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > i }) - 1
	return t.runs[k].first
}

// LastInTerm returns the last index whose term is term, if the log holds any.
func (t *TermIndex) LastInTerm(term uint64) (uint64, bool) {
	for k := len(t.runs) - 1; k >= 0; k-- {
		if t.runs[k].term == term {
			if k+1 < len(t.runs) {
				return t.runs[k+1].first - 1, true
			}
			return t.last, true
		}
		if t.runs[k].term < term {
			break
		}
	}
	if t.baseKnown && t.baseTerm == term && t.base > 0 {
		return t.base, true
	}
	return 0, false
}

// Append records an entry of term at index, which must be LastIndex()+1,
// with a term not below LastTerm().
func (t *TermIndex) Append(index, term uint64) error {
	if index != t.last+1 {
		return fmt.Errorf("core: term index: append at %d, last index is %d", index, t.last)
	}
	if term < t.LastTerm() {
		return fmt.Errorf("core: term index: append term %d below last term %d", term, t.LastTerm())
	}
	if len(t.runs) == 0 || t.runs[len(t.runs)-1].term != term {
		t.runs = append(t.runs, run{index, term})
	}
	t.last = index
	return nil
}

// TruncateAfter drops every entry after i (i >= base).
func (t *TermIndex) TruncateAfter(i uint64) {
	if i >= t.last {
		return
	}
	if i < t.base {
		i = t.base
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > i })
	t.runs = t.runs[:k]
	t.last = i
}

// CompactTo drops the entries up to and including i, which becomes the base
// (its term known). Indexes beyond the log reset it to an empty log after i.
func (t *TermIndex) CompactTo(i, term uint64) {
	if i <= t.base {
		return
	}
	if i >= t.last {
		t.base, t.baseTerm, t.baseKnown, t.runs, t.last = i, term, true, nil, i
		return
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > i })
	var rest []run
	if k < len(t.runs) && t.runs[k].first == i+1 {
		// i ends a run: the log now starts with the next one.
		rest = append(rest, t.runs[k:]...)
	} else {
		// runs[k-1] covers i and i+1; it now starts at i+1.
		rest = append(rest, t.runs[k-1:]...)
		rest[0].first = i + 1
	}
	t.runs = rest
	t.base, t.baseTerm, t.baseKnown = i, term, true
}

// Runs returns the runs as messages (for InitialState and ReplicationStart).
func (t *TermIndex) Runs() []*messages.TermRun {
	out := make([]*messages.TermRun, len(t.runs))
	for k, r := range t.runs {
		out[k] = &messages.TermRun{FirstIndex: r.first, Term: r.term}
	}
	return out
}

// BaseTerm returns the term of the entry before the first one, if known.
func (t *TermIndex) BaseTerm() (uint64, bool) { return t.baseTerm, t.baseKnown }

// Validate checks the internal consistency of t.
func (t *TermIndex) Validate() error {
	bt, bk := t.BaseTerm()
	_, err := NewTermIndex(t.FirstIndex(), t.LastIndex(), t.Runs(), bt, bk)
	return err
}
