package core

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

// hardStates returns the hard states that the appends of rd carry.
func hardStates(rd Ready) []*messages.HardState {
	var out []*messages.HardState
	for _, ap := range rd.Persist {
		if hs := ap.GetHardState(); hs != nil {
			out = append(out, hs)
		}
	}
	return out
}

// The hard state goes to storage when the term or the vote changes, with
// the commit index of that moment, and not when only the commit index
// moved: appends in a steady term carry entries alone. On a Pebble log
// that keeps flushed tables apart (each holds a range of entry indexes and
// no key shared with the others), and Pebble does not rewrite them in
// compactions (store's TestSteadyLogIsNotRewrittenByCompactions). The
// commit index is Raft's volatile state: a restarted node applies what its
// stored commit covers and learns the rest from a leader.
func TestHardStateIsWrittenWhenTermOrVoteChange(t *testing.T) {
	t.Run("leader", func(t *testing.T) {
		c := newTestCore(t, 1, three)
		c.elect(2)
		term := c.Status().Term
		for i := range 5 {
			c.Propose(Handle(i+1), &messages.ClientWriteRequest{Data: []byte("w")})
			rd := c.take()
			if len(rd.Persist) == 0 || len(rd.Persist[0].GetEntries()) == 0 {
				t.Fatalf("write %d: no append of its entry: %v", i, rd.Persist)
			}
			if hs := hardStates(rd); len(hs) != 0 {
				t.Fatalf("write %d (commit %d): append carries hard state %v in a steady term", i, c.Status().Commit, hs)
			}
			before := c.Status().Commit
			c.report(2, c.Status().LastIndex)
			if c.Status().Commit <= before {
				t.Fatalf("write %d: commit stayed at %d after a quorum matched %d", i, before, c.Status().LastIndex)
			}
			if hs := hardStates(c.take()); len(hs) != 0 {
				t.Fatalf("write %d: the commit alone wrote hard state %v", i, hs)
			}
		}
		commit := c.Status().Commit
		// A vote for another candidate in a higher term: term, vote and the
		// commit of the moment go to storage together.
		c.mustStep(voteReq(3, 1, term+3, c.Status().LastIndex, term))
		hs := hardStates(c.take())
		if len(hs) == 0 {
			t.Fatal("a new term and vote were not persisted")
		}
		last := hs[len(hs)-1]
		if last.GetTerm() != term+3 || last.GetVote() != 3 || last.GetCommit() != commit {
			t.Fatalf("hard state %v, want term %d vote 3 commit %d", last, term+3, commit)
		}
	})
	t.Run("follower", func(t *testing.T) {
		c := newTestCore(t, 1, three)
		// The first append of leader 2's term 2 moves the term: persisted.
		c.mustStep(appendReq(2, 1, 2, 1, 1, 1, ent(2, 2)))
		if hs := hardStates(c.take()); len(hs) != 1 || hs[0].GetTerm() != 2 {
			t.Fatalf("hard states %v, want one of term 2", hs)
		}
		// Later appends of the term move only the commit index.
		for i := uint64(3); i < 8; i++ {
			c.mustStep(appendReq(2, 1, 2, i-1, 2, i-1, ent(i, 2)))
			rd := c.take()
			if c.Status().Commit != i-1 {
				t.Fatalf("commit %d, want %d", c.Status().Commit, i-1)
			}
			if hs := hardStates(rd); len(hs) != 0 {
				t.Fatalf("append of entry %d carries hard state %v in a steady term", i, hs)
			}
		}
	})
}

// A node restarted from a stored commit index older than its log applies
// up to that index at once, and the rest once a leader's commit reaches it.
func TestRestartAppliesUpToTheStoredCommit(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 2, 2, 2, 2), withHardState(2, 2, 3))
	var applied uint64
	for _, a := range c.take().Apply {
		if ac, ok := a.(*messages.ApplyCommitted); ok {
			applied = max(applied, ac.GetCommitIndex())
		}
	}
	if applied != 3 {
		t.Fatalf("applied through %d at restart, want the stored commit 3", applied)
	}
	c.mustStep(appendReq(2, 1, 2, 5, 2, 5))
	for _, a := range c.take().Apply {
		if ac, ok := a.(*messages.ApplyCommitted); ok {
			applied = max(applied, ac.GetCommitIndex())
		}
	}
	if applied != 5 {
		t.Fatalf("applied through %d after the leader's commit 5, want 5", applied)
	}
}
