package core

// Tests of the properties of the Raft paper (Ongaro and Ousterhout, "In
// Search of an Understandable Consensus Algorithm"), section by section,
// each driving one Core by hand.

import (
	"math/rand/v2"
	"testing"

	"github.com/raftor/raftor/messages"
)

var three = []uint64{1, 2, 3}

// §5.1: a server that sees a higher term adopts it and becomes a follower,
// whatever its role, and clears its vote.
func TestUpdateTermFromMessage(t *testing.T) {
	for _, role := range []messages.Role{messages.Role_ROLE_FOLLOWER, messages.Role_ROLE_CANDIDATE, messages.Role_ROLE_LEADER} {
		t.Run(role.String(), func(t *testing.T) {
			c := newTestCore(t, 1, three)
			switch role {
			case messages.Role_ROLE_CANDIDATE:
				c.Campaign()
				c.flush()
			case messages.Role_ROLE_LEADER:
				c.elect(2)
			}
			c.mustStep(appendReq(2, 1, 9, 0, 0, 0))
			st := c.Status()
			if st.Term != 9 || st.Role != messages.Role_ROLE_FOLLOWER || st.Leader != 2 || st.Vote != 0 {
				t.Fatalf("after a term-9 append: %+v", st)
			}
		})
	}
}

// §5.1: a request with a stale term is refused, and the answer carries the
// newer term so that the sender steps down.
func TestRejectStaleTerm(t *testing.T) {
	c := newTestCore(t, 1, three, withHardState(5, 0, 0))
	err := c.step(appendReq(2, 1, 4, 1, 1, 0))
	if !isCode(err, messages.ErrorCode_ERROR_CODE_STALE_TERM) {
		t.Fatalf("stale append: err = %v", err)
	}
	rs := sentOf[*messages.AppendEntriesResponse](c.take())
	if len(rs) != 1 || rs[0].Success || rs[0].Header.Term != 5 {
		t.Fatalf("stale append answered %v", rs)
	}
	if st := c.Status(); st.Term != 5 || st.Leader != 0 {
		t.Fatalf("stale append changed state: %+v", st)
	}
}

// §5.2: servers start as followers (or learners when not voters).
func TestStartRole(t *testing.T) {
	tests := []struct {
		id   uint64
		want messages.Role
	}{
		{1, messages.Role_ROLE_FOLLOWER},
		{4, messages.Role_ROLE_LEARNER},
	}
	for _, tt := range tests {
		c := newTestCore(t, tt.id, three, withLearners(4))
		if r := c.Status().Role; r != tt.want {
			t.Errorf("node %d starts as %v, want %v", tt.id, r, tt.want)
		}
	}
}

// §5.2: a leader sends a heartbeat round every HeartbeatTicks, numbered for
// read index.
func TestLeaderHeartbeatRounds(t *testing.T) {
	c := newTestCore(t, 1, three, withConfig(func(c *Config) { c.HeartbeatTicks = 2 }))
	c.elect(2)
	var seqs []uint64
	for range 6 {
		c.tick(1)
		for _, n := range replicateOf[*messages.ReplicationNotify](c.take()) {
			if n.Heartbeat {
				seqs = append(seqs, n.ReadSeq)
			}
		}
	}
	if len(seqs) != 3 || seqs[0] >= seqs[1] || seqs[1] >= seqs[2] {
		t.Fatalf("heartbeat rounds over 6 ticks with HeartbeatTicks 2: %v", seqs)
	}
}

// §5.2: a follower that hears nothing for an election timeout starts an
// election: term+1, votes for itself, asks every other voter. The requests
// leave only once the new term and vote are durable.
func TestFollowerStartsElection(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withLearners(4))
	c.hold = true
	c.tick(20)
	rd := c.take()
	st := c.Status()
	if st.Role != messages.Role_ROLE_CANDIDATE || st.Term != 2 || st.Vote != 1 {
		t.Fatalf("after 2 election timeouts: %+v", st)
	}
	if n := len(sentOf[*messages.VoteRequest](rd)); n != 0 {
		t.Fatalf("%d vote requests sent before the vote was durable", n)
	}
	if len(rd.Persist) == 0 || rd.Persist[0].HardState.GetVote() != 1 || rd.Persist[0].HardState.GetTerm() != 2 {
		t.Fatalf("persist %v, want term 2 vote 1", rd.Persist)
	}
	c.hold = false
	c.ack(rd.Persist[0])
	reqs := sentOf[*messages.VoteRequest](c.take())
	var to []uint64
	for _, r := range reqs {
		to = append(to, r.Header.To)
		if r.Header.Term != 2 || r.LastLogIndex != 1 || r.LastLogTerm != 1 || r.PreVote {
			t.Errorf("vote request %v", r)
		}
	}
	if len(to) != 2 || to[0] != 2 || to[1] != 3 {
		t.Fatalf("vote requests to %v, want 2 and 3 (not the learner)", to)
	}
}

// §5.2: a candidate wins with a majority, loses with a majority against,
// and waits otherwise.
func TestElectionOutcome(t *testing.T) {
	tests := []struct {
		voters []uint64
		votes  map[uint64]bool
		want   messages.Role
	}{
		{[]uint64{1}, nil, messages.Role_ROLE_LEADER},
		{[]uint64{1, 2, 3}, map[uint64]bool{2: true}, messages.Role_ROLE_LEADER},
		{[]uint64{1, 2, 3}, map[uint64]bool{2: false}, messages.Role_ROLE_CANDIDATE},
		{[]uint64{1, 2, 3}, map[uint64]bool{2: false, 3: false}, messages.Role_ROLE_FOLLOWER},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]bool{2: true}, messages.Role_ROLE_CANDIDATE},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]bool{2: true, 3: true}, messages.Role_ROLE_LEADER},
		{[]uint64{1, 2, 3, 4, 5}, map[uint64]bool{2: false, 3: false, 4: false}, messages.Role_ROLE_FOLLOWER},
		{[]uint64{1, 2, 3, 4}, map[uint64]bool{2: true}, messages.Role_ROLE_CANDIDATE},
		{[]uint64{1, 2, 3, 4}, map[uint64]bool{2: true, 3: true}, messages.Role_ROLE_LEADER},
	}
	for i, tt := range tests {
		c := newTestCore(t, 1, tt.voters)
		c.Campaign()
		c.flush()
		for _, id := range tt.voters {
			if v, ok := tt.votes[id]; ok {
				c.step(&messages.VoteResponse{Header: hdr(id, 1, 2), Granted: v})
			}
		}
		if r := c.Status().Role; r != tt.want {
			t.Errorf("#%d: role %v, want %v", i, r, tt.want)
		}
	}
}

// §5.2 and §5.4.1: a voter grants one vote per term, only to a candidate
// whose log is at least as up to date: last term first, then last index
// (PITFALLS #6).
func TestVoteGranting(t *testing.T) {
	tests := []struct {
		name              string
		vote              uint64
		lastIndex, lastTr uint64
		wantGranted       bool
	}{
		{"no vote, same log", 0, 2, 2, true},
		{"no vote, longer log", 0, 3, 2, true},
		{"no vote, higher last term shorter log", 0, 1, 3, true},
		{"no vote, shorter log", 0, 1, 2, false},
		{"no vote, lower last term longer log", 0, 9, 1, false},
		{"voted for candidate", 2, 2, 2, true},
		{"voted for another", 3, 2, 2, false},
		{"voted for another, better log", 3, 9, 9, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three, withTerms(1, 2), withHardState(2, tt.vote, 0))
			c.mustStep(voteReq(2, 1, 2, tt.lastIndex, tt.lastTr))
			rs := sentOf[*messages.VoteResponse](c.take())
			if len(rs) != 1 || rs[0].Granted != tt.wantGranted {
				t.Fatalf("responses %v, want granted=%v", rs, tt.wantGranted)
			}
			if tt.wantGranted && c.Status().Vote != 2 {
				t.Fatalf("vote %d after granting", c.Status().Vote)
			}
		})
	}
}

// §5.1 and PITFALLS #2: term and vote are durable before the vote reply
// leaves. Removing the wait (the vote_persist mutation) fails this test.
func TestVotePersistedBeforeReply(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.hold = true
	c.mustStep(voteReq(2, 1, 3, 1, 1))
	rd := c.take()
	if rs := sentOf[*messages.VoteResponse](rd); len(rs) != 0 {
		t.Fatalf("vote reply %v sent before term and vote were durable", rs)
	}
	if len(rd.Persist) != 1 || rd.Persist[0].HardState.GetTerm() != 3 || rd.Persist[0].HardState.GetVote() != 2 {
		t.Fatalf("persist %v, want term 3 vote 2", rd.Persist)
	}
	c.ack(rd.Persist[0])
	rs := sentOf[*messages.VoteResponse](c.take())
	if len(rs) != 1 || !rs[0].Granted || rs[0].Header.Term != 3 {
		t.Fatalf("after persisting: %v", rs)
	}
}

// PITFALLS #2: stepping down within a term keeps the vote, so a node never
// votes twice in one term.
func TestSameTermStepDownKeepsVote(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.Campaign() // term 2, votes for itself
	c.flush()
	c.mustStep(appendReq(2, 1, 2, 1, 1, 0)) // node 2 won term 2
	if st := c.Status(); st.Role != messages.Role_ROLE_FOLLOWER || st.Vote != 1 || st.Term != 2 {
		t.Fatalf("after stepping down: %+v", st)
	}
	c.take()
	c.mustStep(voteReq(3, 1, 2, 5, 2))
	if rs := sentOf[*messages.VoteResponse](c.take()); len(rs) != 1 || rs[0].Granted {
		t.Fatalf("second vote in term 2: %v", rs)
	}
}

// §5.2: a candidate that hears from a leader of its term or newer steps down.
func TestCandidateFallsBack(t *testing.T) {
	for _, term := range []uint64{2, 3} {
		c := newTestCore(t, 1, three)
		c.Campaign()
		c.flush()
		c.mustStep(appendReq(2, 1, term, 1, 1, 0))
		if st := c.Status(); st.Role != messages.Role_ROLE_FOLLOWER || st.Term != term || st.Leader != 2 {
			t.Errorf("append of term %d: %+v", term, st)
		}
	}
}

// §5.2: election timeouts are spread over [E, 2E).
func TestElectionTimeoutRandomized(t *testing.T) {
	seen := map[int]bool{}
	for seed := range uint64(200) {
		c := newTestCore(t, 1, three, withConfig(func(c *Config) { c.Rand = rand.New(rand.NewPCG(seed, 7)) }))
		c.resetElection()
		to := c.randomizedElectionTimeout
		if to < 10 || to >= 20 {
			t.Fatalf("timeout %d outside [10, 20)", to)
		}
		seen[to] = true
	}
	if len(seen) < 5 {
		t.Fatalf("only %d distinct timeouts over 200 seeds", len(seen))
	}
}

// §5.4.2 and §8: a new leader appends a blank entry of its term at once, so
// that it can commit (and serve reads) without waiting for a client write.
func TestLeaderAppendsBlank(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 1, 2), withHardState(2, 0, 1))
	c.Campaign()
	c.flush()
	c.mustStep(&messages.VoteResponse{Header: hdr(2, 1, 3), Granted: true})
	rd := c.take()
	var blank *messages.Entry
	for _, ap := range rd.Persist {
		for _, e := range ap.Entries {
			blank = e
		}
	}
	if blank == nil || blank.Kind != messages.EntryKind_ENTRY_KIND_BLANK || blank.Index != 4 || blank.Term != 3 {
		t.Fatalf("new leader persisted %v, want a blank entry 4 of term 3", blank)
	}
	handed := false
	for _, n := range replicateOf[*messages.ReplicationNotify](rd) {
		handed = handed || (len(n.Entries) == 1 && n.Entries[0] == blank)
	}
	if !handed {
		t.Fatalf("blank entry not handed to replication: %v", rd.Replicate)
	}
	if starts := replicateOf[*messages.ReplicationStart](rd); len(starts) != 2 {
		t.Fatalf("replication started for %d peers, want 2", len(starts))
	}
}
