package sim

import (
	"fmt"
	"hash/fnv"

	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// Violation is a broken safety property.
type Violation struct {
	Property string
	Detail   string
}

func (v *Violation) Error() string { return v.Property + ": " + v.Detail }

func violation(prop, format string, args ...any) *Violation {
	return &Violation{Property: prop, Detail: fmt.Sprintf(format, args...)}
}

// Property names, as reported.
const (
	PropElectionSafety     = "election safety"
	PropLeaderAppendOnly   = "leader append-only"
	PropLogMatching        = "log matching"
	PropLeaderCompleteness = "leader completeness"
	PropStateMachineSafety = "state machine safety"
	PropCommitMonotonic    = "commit never moves backwards"
	PropAppliedMonotonic   = "applied never moves backwards"
	PropCommitted          = "committed entries agree"
	PropCommitRule         = "leader commits by counting its own term only"
	PropAckedWriteLost     = "acknowledged write lost"
	PropTermMonotonic      = "term never moves backwards"
	PropLiveness           = "liveness"
	PropLinearizability    = "linearizability"
)

// NodeView is what the checker sees of one node after a step.
type NodeView struct {
	ID uint64
	// Incarnation changes on every restart; volatile state (commit,
	// applied, role) may restart from the disk then.
	Incarnation uint64
	Up          bool
	Term        uint64
	Role        messages.Role
	Commit      uint64
	// RuleCommit, when set, is the commit index the figure 8 rule is
	// checked on instead of Commit: the actor mode's Commit is the one the
	// node's store holds, which may catch up with an index the node had
	// before it led; RuleCommit is RaftCore's own.
	RuleCommit uint64
	Applied    uint64
	// Disk is the node's storage as the node reads it: its log.
	Disk LogView
}

// LogView is a node's storage as the checker reads it. *Disk is one; the
// actor mode reads the node's real store through storeLog.
type LogView interface {
	// State is what the node reads back; Durable what survives a crash.
	State() *DiskState
	Durable() *DiskState
	// TakeDirty returns and resets the lowest log index changed and the
	// lowest removed or replaced (0 for none) since the last call; dirty is
	// MaxUint64 for none.
	TakeDirty() (dirtyFrom, truncatedFrom uint64)
}

// entryKey identifies a log position in a term.
type entryKey struct{ index, term uint64 }

const unknownTerm = ^uint64(0)

type entryFact struct {
	sum      uint64
	prevTerm uint64
}

type nodeMemo struct {
	incarnation uint64
	term        uint64
	durableTerm uint64
	role        messages.Role
	commit      uint64
	ruleCommit  uint64
	applied     uint64
	// leaderTerm is the term in which this incarnation was last seen as
	// leader (0 if never).
	leaderTerm uint64
}

// Checker verifies Raft's safety properties over node views after every
// step. It remembers facts across steps (who led which term, what was
// committed where) so a violation spread over time is caught too.
type Checker struct {
	leaders map[uint64]uint64 // term -> leader
	// facts records, for each (index, term) ever seen in a log, the entry's
	// content and the term of the entry before it. Two logs that share an
	// (index, term) then share the whole prefix (log matching by
	// induction), which is checked one entry at a time as logs change.
	facts map[entryKey]entryFact
	// committed records what is known committed at each index.
	committed    map[uint64]entryKey
	committedSum map[uint64]uint64
	// committedBy is the lowest term of a node seen knowing the index
	// committed: at least the term of the leader that committed it.
	committedBy  map[uint64]uint64
	maxCommitted uint64
	// applied records what any node applied at each index.
	applied map[uint64]entryKey
	// acked are writes a client was told succeeded.
	acked []entryKey
	nodes map[uint64]*nodeMemo
	// sums caches entry content hashes.
	sums map[*messages.Entry]uint64
	// Checks counts observations, for reports.
	Checks uint64
	// OutcomesOnly turns off the check of a mechanism (the figure 8 commit
	// rule) and keeps the properties users see; the mutation test uses it to
	// measure how soon a bug shows in outcomes.
	OutcomesOnly bool
}

// NewChecker returns a checker with no history.
func NewChecker() *Checker {
	return &Checker{
		leaders:      map[uint64]uint64{},
		facts:        map[entryKey]entryFact{},
		committed:    map[uint64]entryKey{},
		committedSum: map[uint64]uint64{},
		committedBy:  map[uint64]uint64{},
		applied:      map[uint64]entryKey{},
		nodes:        map[uint64]*nodeMemo{},
		sums:         map[*messages.Entry]uint64{},
	}
}

// EntrySum identifies an entry's content (kind, payload, membership,
// request) independent of its position.
func EntrySum(e *messages.Entry) uint64 {
	h := fnv.New64a()
	c := proto.Clone(e).(*messages.Entry)
	c.Index, c.Term = 0, 0
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	h.Write(b)
	return h.Sum64()
}

func (c *Checker) sum(e *messages.Entry) uint64 {
	if s, ok := c.sums[e]; ok {
		return s
	}
	s := EntrySum(e)
	c.sums[e] = s
	return s
}

// Observe checks the views after a step. Views must come in a fixed order
// (by node ID) so that the first violation reported is a function of the
// seed.
func (c *Checker) Observe(views []NodeView) error {
	c.Checks++
	for i := range views {
		if err := c.observeNode(&views[i]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Checker) observeNode(v *NodeView) error {
	m := c.nodes[v.ID]
	if m == nil {
		m = &nodeMemo{incarnation: v.Incarnation}
		c.nodes[v.ID] = m
	}
	dirty, truncated := v.Disk.TakeDirty()
	st := v.Disk.State()
	restarted := m.incarnation != v.Incarnation
	wasLeaderIn := uint64(0) // the term this node led at the last look
	if !restarted && m.role == messages.Role_ROLE_LEADER {
		wasLeaderIn = m.term
	}
	if restarted {
		*m = nodeMemo{incarnation: v.Incarnation, durableTerm: m.durableTerm}
	}
	// The durable term never goes backwards, crash or not; the term in
	// memory may lose an unsynced raise in a crash, but never goes
	// backwards within an incarnation.
	if dt := v.Disk.Durable().HardState.GetTerm(); dt < m.durableTerm {
		return violation(PropTermMonotonic, "n%d's durable term went from %d to %d", v.ID, m.durableTerm, dt)
	} else {
		m.durableTerm = dt
	}

	// Leader append-only: a leader never removes or replaces entries of its
	// log while it leads in that term.
	if truncated != 0 && !restarted && m.leaderTerm != 0 && m.leaderTerm == v.Term && v.Role == messages.Role_ROLE_LEADER {
		return violation(PropLeaderAppendOnly, "n%d, leader of term %d, removed or replaced entries from index %d", v.ID, v.Term, truncated)
	}

	if v.Term < m.term && v.Up {
		return violation(PropTermMonotonic, "n%d went from term %d to %d", v.ID, m.term, v.Term)
	}

	// Log matching, one changed entry at a time.
	if dirty != ^uint64(0) {
		from := max(dirty, st.First)
		for idx := from; idx <= st.LastIndex(); idx++ {
			e := st.Entry(idx)
			if e.Index != idx {
				return violation(PropLogMatching, "n%d holds entry %d at position %d", v.ID, e.Index, idx)
			}
			prev, ok := st.Term(idx - 1)
			if !ok {
				if idx != st.First {
					return violation(PropLogMatching, "n%d has no term for index %d before entry %d", v.ID, idx-1, idx)
				}
				// The log was purged past the snapshot's trailing entries:
				// the previous term is no longer known here.
				prev = unknownTerm
			}
			if prev != unknownTerm && prev > e.Term {
				return violation(PropLogMatching, "n%d: entry %d has term %d after term %d", v.ID, idx, e.Term, prev)
			}
			k := entryKey{idx, e.Term}
			f := entryFact{sum: c.sum(e), prevTerm: prev}
			if old, ok := c.facts[k]; ok {
				if old.sum != f.sum {
					return violation(PropLogMatching, "n%d holds a different entry at index %d term %d than another node did", v.ID, idx, e.Term)
				}
				if old.prevTerm == unknownTerm {
					c.facts[k] = f
				} else if f.prevTerm != unknownTerm && old.prevTerm != f.prevTerm {
					return violation(PropLogMatching, "n%d: entry %d of term %d follows term %d here, term %d elsewhere", v.ID, idx, e.Term, prev, old.prevTerm)
				}
			} else {
				c.facts[k] = f
			}
		}
	}

	if !v.Up {
		return nil
	}
	if v.Term > m.term {
		m.term = v.Term
	}

	// Election safety: one leader per term, ever.
	if v.Role == messages.Role_ROLE_LEADER {
		if l, ok := c.leaders[v.Term]; ok && l != v.ID {
			return violation(PropElectionSafety, "n%d and n%d both led term %d", l, v.ID, v.Term)
		}
		if m.leaderTerm != v.Term {
			c.leaders[v.Term] = v.ID
			m.leaderTerm = v.Term
			// Leader completeness: a new leader holds every entry known
			// committed (and every acknowledged write).
			if err := c.checkComplete(v, st); err != nil {
				return err
			}
		}
	}

	// Commit: never backwards within an incarnation, never past the log,
	// and everything under it agrees with what other nodes committed.
	if v.Commit < m.commit {
		return violation(PropCommitMonotonic, "n%d commit went from %d to %d", v.ID, m.commit, v.Commit)
	}
	// The figure 8 rule: a leader advances its commit index only to an
	// entry of its own term; older entries commit with it.
	rc := v.Commit
	if v.RuleCommit != 0 {
		rc = v.RuleCommit
	}
	if !c.OutcomesOnly && rc > m.ruleCommit && v.Role == messages.Role_ROLE_LEADER && wasLeaderIn == v.Term {
		if t, ok := st.Term(rc); ok && t != v.Term {
			return violation(PropCommitRule, "n%d, leader of term %d, moved its commit index from %d to %d, an entry of term %d", v.ID, v.Term, m.ruleCommit, rc, t)
		}
	}
	m.ruleCommit = max(m.ruleCommit, rc)
	if v.Commit > st.LastIndex() {
		return violation(PropCommitted, "n%d commit %d is past its last index %d", v.ID, v.Commit, st.LastIndex())
	}
	for idx := max(m.commit+1, st.First); idx <= v.Commit; idx++ {
		e := st.Entry(idx)
		if err := c.recordCommitted(v.ID, idx, e.Term, c.sum(e), v.Term); err != nil {
			return err
		}
	}
	if v.Commit > 0 && st.Snapshot != nil && st.Snapshot.Index <= v.Commit {
		if k, ok := c.committed[st.Snapshot.Index]; ok && k.term != st.Snapshot.Term {
			return violation(PropCommitted, "n%d has a snapshot at %d in term %d, but term %d was committed there", v.ID, st.Snapshot.Index, st.Snapshot.Term, k.term)
		}
	}
	m.commit = v.Commit

	if v.Applied < m.applied {
		return violation(PropAppliedMonotonic, "n%d applied went from %d to %d", v.ID, m.applied, v.Applied)
	}
	m.applied = v.Applied
	m.role = v.Role
	return nil
}

// recordCommitted notes that node, in term seenIn, knows (idx, term) to be
// committed.
func (c *Checker) recordCommitted(node, idx, term, sum, seenIn uint64) error {
	if k, ok := c.committed[idx]; ok {
		if k.term != term || c.committedSum[idx] != sum {
			return violation(PropCommitted, "n%d committed index %d term %d, but index %d term %d was committed before", node, idx, term, idx, k.term)
		}
		c.committedBy[idx] = min(c.committedBy[idx], seenIn)
		return nil
	}
	c.committed[idx] = entryKey{idx, term}
	c.committedSum[idx] = sum
	c.committedBy[idx] = seenIn
	if idx > c.maxCommitted {
		c.maxCommitted = idx
	}
	return nil
}

func (c *Checker) checkComplete(v *NodeView, st *DiskState) error {
	for idx := uint64(1); idx <= c.maxCommitted; idx++ {
		k, ok := c.committed[idx]
		// Only leaders of later terms must hold an entry: a candidate of an
		// older term may still win with votes cast before the entry
		// committed. committedBy is an upper bound of the committing term,
		// so the check never blames a leader that Raft allows.
		if !ok || c.committedBy[idx] >= v.Term {
			continue
		}
		if idx < st.First {
			// Covered by the snapshot; its own index and term are checked.
			if st.Snapshot != nil && idx == st.Snapshot.Index && st.Snapshot.Term != k.term {
				return violation(PropLeaderCompleteness, "n%d leads term %d with a snapshot at %d of term %d, but term %d was committed there", v.ID, v.Term, idx, st.Snapshot.Term, k.term)
			}
			continue
		}
		e := st.Entry(idx)
		if e == nil || e.Term != k.term || c.sum(e) != c.committedSum[idx] {
			what := "missing"
			if e != nil {
				what = fmt.Sprintf("term %d", e.Term)
			}
			prop := PropLeaderCompleteness
			for _, a := range c.acked {
				if a.index == idx {
					prop = PropAckedWriteLost
				}
			}
			return violation(prop, "n%d leads term %d but its entry %d is %s; index %d term %d was committed", v.ID, v.Term, idx, what, idx, k.term)
		}
	}
	return nil
}

// Applied checks an entry the state machine of node, in term nodeTerm,
// applied.
func (c *Checker) Applied(node, nodeTerm uint64, e *messages.Entry) error {
	k := entryKey{e.Index, e.Term}
	if old, ok := c.applied[e.Index]; ok && old != k {
		return violation(PropStateMachineSafety, "n%d applied index %d term %d, another node applied term %d there", node, e.Index, e.Term, old.term)
	}
	c.applied[e.Index] = k
	if ck, ok := c.committed[e.Index]; ok && ck != k {
		return violation(PropStateMachineSafety, "n%d applied index %d term %d, but term %d is committed there", node, e.Index, e.Term, ck.term)
	}
	return c.recordCommitted(node, e.Index, e.Term, c.sum(e), nodeTerm)
}

// Acked records that node, in term nodeTerm, told a client that the write
// at (index, term) with entry content sum succeeded: from now on it must be
// in the log of every leader of a later term.
func (c *Checker) Acked(node, nodeTerm, index, term, sum uint64) error {
	c.acked = append(c.acked, entryKey{index, term})
	if err := c.recordCommitted(node, index, term, sum, nodeTerm); err != nil {
		return violation(PropAckedWriteLost, "%v", err)
	}
	return nil
}

// SumAt returns the content sum of the entry some node's log held at
// (index, term), if any log the checker saw held one.
func (c *Checker) SumAt(index, term uint64) (uint64, bool) {
	f, ok := c.facts[entryKey{index, term}]
	return f.sum, ok
}

// MaxCommitted is the highest index known committed.
func (c *Checker) MaxCommitted() uint64 { return c.maxCommitted }

// Leaders returns how many terms had a leader.
func (c *Checker) Leaders() int { return len(c.leaders) }
