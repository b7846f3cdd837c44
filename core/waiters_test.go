package core

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

// PITFALLS #16: a write is never reported failed while it may commit. A
// deposed leader keeps its waiters; each is handed to the apply actor when
// its index is applied (which answers ABORTED if another entry took the
// index), and waiters of a later term are not held up behind older ones.
func TestWaitersAcrossTerms(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.elect(2)
	c.report(2, 2)
	for h := Handle(1); h <= 4; h++ { // indexes 3..6, term 2
		c.Propose(h, &messages.ClientWriteRequest{Data: []byte("old")})
	}
	rd := c.take()
	if len(rd.Responses) != 0 {
		t.Fatalf("answered %v", rd.Responses)
	}
	// Node 2 leads term 3 and replaces index 3 onwards; index 3 commits.
	c.mustStep(appendReq(2, 1, 3, 2, 2, 3, ent(3, 3)))
	rd = c.take()
	if len(rd.Responses) != 0 {
		t.Fatalf("deposed leader answered %v; the writes' outcome is not known yet", rd.Responses)
	}
	var waiters []*messages.ApplyWaiter
	for _, a := range rd.Apply {
		waiters = append(waiters, a.(*messages.ApplyCommitted).Waiters...)
	}
	if len(waiters) != 1 || waiters[0].Handle != 1 || waiters[0].Term != 2 {
		t.Fatalf("waiters handed over %v, want handle 1 (index 3, term 2) for the apply actor to answer ABORTED", waiters)
	}
	// Node 1 leads again in term 4: blank at 4, a new write at 5.
	c.Campaign()
	c.flush()
	c.mustStep(&messages.VoteResponse{Header: hdr(3, 1, 4), Granted: true})
	c.Propose(9, &messages.ClientWriteRequest{Data: []byte("new")})
	c.take()
	c.report(3, 5)
	waiters = nil
	for _, a := range c.take().Apply {
		waiters = append(waiters, a.(*messages.ApplyCommitted).Waiters...)
	}
	got := map[uint64]bool{}
	for _, w := range waiters {
		got[w.Handle] = true
	}
	if !got[9] || !got[2] || !got[3] || got[4] {
		t.Fatalf("waiters handed over at commit 5: %v; want 2, 3 and 9, not 4 (index 6)", waiters)
	}
}
