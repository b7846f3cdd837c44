package clustertest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// digest identifies an entry's content.
type digest [sha256.Size]byte

func entryDigest(kind messages.EntryKind, data []byte, cmd []byte) digest {
	h := sha256.New()
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(kind))
	h.Write(k[:])
	binary.BigEndian.PutUint64(k[:], uint64(len(data)))
	h.Write(k[:])
	h.Write(data)
	h.Write(cmd)
	var d digest
	h.Sum(d[:0])
	return d
}

// appliedEntry is what the first node to apply an index applied there.
type appliedEntry struct {
	term   uint64
	sum    digest
	node   uint64
	kind   messages.EntryKind
	length int
}

// ackedWrite is a write a client saw acknowledged.
type ackedWrite struct {
	index, term uint64
	sum         digest
	what        string
}

// safety checks Raft's state machine safety while the cluster runs: every
// node that applies an index applies the same entry there, whichever node,
// incarnation or snapshot it came from; and every acknowledged write is the
// entry applied at its index.
type safety struct {
	mu         sync.Mutex
	applied    map[uint64]appliedEntry
	acked      []ackedWrite
	violations []string
}

func (s *safety) init() { s.applied = map[uint64]appliedEntry{} }

func (s *safety) noteApplied(node uint64, entries []*messages.Entry, results []store.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range entries {
		if i < len(results) && results[i].Skipped {
			continue
		}
		var cmd []byte
		if e.GetCommand() != nil {
			cmd = e.GetCommand().GetValue()
		}
		got := appliedEntry{term: e.GetTerm(), sum: entryDigest(e.GetKind(), e.GetData(), cmd), node: node,
			kind: e.GetKind(), length: len(e.GetData()) + len(cmd)}
		prev, seen := s.applied[e.GetIndex()]
		if !seen {
			s.applied[e.GetIndex()] = got
			continue
		}
		if prev.term != got.term || prev.sum != got.sum {
			s.violations = append(s.violations, fmt.Sprintf(
				"state machine safety: node %d applied a %s entry of term %d (%d bytes) at index %d, node %d applied a %s entry of term %d (%d bytes) there",
				node, got.kind, got.term, got.length, e.GetIndex(), prev.node, prev.kind, prev.term, prev.length))
		}
	}
}

func (s *safety) noteAcked(w ackedWrite) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acked = append(s.acked, w)
}

// verify returns every violation: those seen while the cluster ran, and
// acknowledged writes that are not the entry applied at their index.
func (s *safety) verify() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string(nil), s.violations...)
	for _, w := range s.acked {
		a, ok := s.applied[w.index]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("acknowledged write %s at index %d term %d: no node applied that index", w.what, w.index, w.term))
		case a.term != w.term || a.sum != w.sum:
			out = append(out, fmt.Sprintf("acknowledged write %s at index %d term %d is lost: node %d applied an entry of term %d there",
				w.what, w.index, w.term, a.node, a.term))
		}
	}
	return out
}

// recordingSM is the state machine a node runs: the user's, with every
// applied entry reported to the cluster's safety check.
type recordingSM struct {
	store.StateMachine
	c  *Cluster
	id uint64
}

// Apply implements store.StateMachine.
func (r *recordingSM) Apply(entries []*messages.Entry) ([]store.Result, error) {
	res, err := r.StateMachine.Apply(entries)
	if err == nil {
		r.c.safety.noteApplied(r.id, entries, res)
	}
	return res, err
}
