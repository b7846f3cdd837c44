package core

// Log replication (§5.3), safety (§5.4) and membership quorums, driven on
// one Core.

import (
	"slices"
	"testing"

	"github.com/raftor/raftor/messages"
)

func (tc *testCore) terms() []uint64 {
	var out []uint64
	for i := tc.ti.FirstIndex(); i <= tc.ti.LastIndex(); i++ {
		t, _ := tc.ti.Term(i)
		out = append(out, t)
	}
	return out
}

// §5.3: the follower's consistency check, conflict hints and truncation of
// an uncommitted suffix only when an entry really conflicts (PITFALLS #5).
func TestFollowerAppend(t *testing.T) {
	tests := []struct {
		name         string
		prev, prevT  uint64
		entries      []*messages.Entry
		wantOK       bool
		wantMatch    uint64
		wantConflict [2]uint64 // index, term
		wantLogTerms []uint64
	}{
		{"append at the end", 5, 3, ents(6, 3), true, 6, [2]uint64{}, []uint64{1, 1, 2, 2, 3, 3}},
		{"prev beyond the end", 6, 3, nil, false, 0, [2]uint64{6, 0}, []uint64{1, 1, 2, 2, 3}},
		{"prev term mismatch", 4, 3, ents(5, 3), false, 0, [2]uint64{3, 2}, []uint64{1, 1, 2, 2, 3}},
		{"stale duplicate keeps the suffix", 2, 1, ents(3, 2, 2), true, 4, [2]uint64{}, []uint64{1, 1, 2, 2, 3}},
		{"empty probe keeps the suffix", 3, 2, nil, true, 3, [2]uint64{}, []uint64{1, 1, 2, 2, 3}},
		{"conflict truncates", 3, 2, ents(4, 4), true, 4, [2]uint64{}, []uint64{1, 1, 2, 4}},
		{"conflict in the middle", 2, 1, ents(3, 4, 4), true, 4, [2]uint64{}, []uint64{1, 1, 4, 4}},
		{"whole log resent", 0, 0, ents(1, 1, 1, 2), true, 3, [2]uint64{}, []uint64{1, 1, 2, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three, withTerms(1, 1, 2, 2, 3), withHardState(3, 0, 2))
			c.mustStep(appendReq(2, 1, 4, tt.prev, tt.prevT, 0, tt.entries...))
			rs := sentOf[*messages.AppendEntriesResponse](c.take())
			if len(rs) != 1 {
				t.Fatalf("responses %v", rs)
			}
			r := rs[0]
			if r.Success != tt.wantOK || r.MatchIndex != tt.wantMatch || r.ConflictIndex != tt.wantConflict[0] || r.ConflictTerm != tt.wantConflict[1] {
				t.Fatalf("response success=%v match=%d conflict=(%d,%d), want %v %d %v", r.Success, r.MatchIndex, r.ConflictIndex, r.ConflictTerm, tt.wantOK, tt.wantMatch, tt.wantConflict)
			}
			if got := c.terms(); !slices.Equal(got, tt.wantLogTerms) {
				t.Fatalf("log terms %v, want %v", got, tt.wantLogTerms)
			}
		})
	}
}

// §5.3: commitIndex = min(leaderCommit, index of the last new entry), and it
// never moves backwards.
func TestFollowerCommit(t *testing.T) {
	tests := []struct {
		name         string
		startCommit  uint64
		prev         uint64
		entries      []*messages.Entry
		leaderCommit uint64
		want         uint64
	}{
		{"leader commit below last new entry", 1, 3, ents(4, 3, 3), 4, 4},
		{"capped at the last new entry", 1, 3, ents(4, 3), 9, 4},
		{"capped at what the append covers", 1, 2, nil, 9, 2},
		{"never backwards", 3, 3, ents(4, 3), 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three, withTerms(1, 1, 2, 2, 2), withHardState(3, 0, tt.startCommit))
			c.mustStep(appendReq(2, 1, 3, tt.prev, 2-boolU(tt.prev < 3), tt.leaderCommit, tt.entries...))
			if got := c.Status().Commit; got != tt.want {
				t.Fatalf("commit %d, want %d", got, tt.want)
			}
		})
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// A heartbeat never matches or truncates the log (its entries-free append
// must not take back acknowledged entries), and it advances commit only up
// to the local log.
func TestHeartbeatNeverTruncates(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 1, 2, 2, 3), withHardState(3, 0, 1))
	c.mustStep(&messages.AppendEntriesRequest{Header: hdr(2, 1, 4), Heartbeat: true, LeaderCommit: 3, ReadSeq: 7})
	rs := sentOf[*messages.AppendEntriesResponse](c.take())
	if len(rs) != 1 || !rs[0].Success || !rs[0].Heartbeat || rs[0].ReadSeq != 7 {
		t.Fatalf("heartbeat answer %v", rs)
	}
	if got := c.terms(); !slices.Equal(got, []uint64{1, 1, 2, 2, 3}) {
		t.Fatalf("heartbeat changed the log: %v", got)
	}
	if c.Status().Commit != 3 {
		t.Fatalf("commit %d, want 3", c.Status().Commit)
	}
}

// Figure 8 (§5.4.2): a leader commits by counting replicas only of an entry
// of its own term; older entries commit with it. Counting old entries (the
// figure8 mutation) fails this test.
func TestLeaderCommitsOnlyEntriesOfItsTerm(t *testing.T) {
	// Node 1's log: 1 (term 1), 2 (term 2). It wins term 3 and appends its
	// blank entry 3.
	tests := []struct {
		name    string
		matches map[uint64]uint64
		want    uint64
	}{
		{"majority holds only the old-term entry", map[uint64]uint64{2: 2, 3: 2}, 0},
		{"majority holds the current-term entry", map[uint64]uint64{2: 3, 3: 3}, 3},
		{"minority holds the current-term entry", map[uint64]uint64{2: 2, 3: 2, 4: 3}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, []uint64{1, 2, 3, 4, 5}, withTerms(1, 2), withHardState(2, 0, 1))
			c.elect(2, 3)
			if st := c.Status(); st.Term != 3 || st.LastIndex != 3 {
				t.Fatalf("leader %+v", st)
			}
			for _, id := range []uint64{2, 3, 4, 5} {
				if m, ok := tt.matches[id]; ok {
					c.report(id, m)
				}
			}
			want := tt.want
			if want == 0 {
				want = 1
			}
			if got := c.Status().Commit; got != want {
				t.Fatalf("commit %d, want %d", got, want)
			}
		})
	}
}

// PITFALLS #3: the leader counts itself toward a quorum only up to its
// durable index, even though it replicates before its own fsync.
func TestLeaderCountsItselfOnlyWhenDurable(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.elect(2)
	c.hold = true
	c.Propose(1, &messages.ClientWriteRequest{Data: []byte("x")})
	rd := c.take()
	if ns := replicateOf[*messages.ReplicationNotify](rd); len(ns) != 1 || len(ns[0].Entries) != 1 {
		t.Fatalf("the write was not handed to replication before the fsync: %v", rd.Replicate)
	}
	c.report(2, 2) // the blank entry of term 2
	c.report(3, 3) // and the write, on node 3
	if got := c.Status().Commit; got != 2 {
		t.Fatalf("commit %d before the leader's fsync, want 2 (only nodes 1..3 hold 2; node 3 alone holds 3)", got)
	}
	c.ack(rd.Persist[0])
	c.flush()
	if got := c.Status().Commit; got != 3 {
		t.Fatalf("commit %d after the leader's fsync, want 3", got)
	}
}

// A single node commits nothing before its own write is durable.
func TestSingleNodeCommitsAfterFsync(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1})
	c.hold = true
	c.Campaign()
	c.flush()
	if c.Status().Role != messages.Role_ROLE_LEADER {
		t.Fatal("single voter did not become leader")
	}
	c.Propose(7, &messages.ClientWriteRequest{Data: []byte("x")})
	rd := c.take()
	if c.Status().Commit >= 3 || len(rd.Apply) != 0 {
		t.Fatalf("commit %d, applies %v before the fsync", c.Status().Commit, rd.Apply)
	}
	for _, ap := range rd.Persist {
		c.ack(ap)
	}
	rd = c.take()
	if c.Status().Commit != 3 {
		t.Fatalf("commit %d after the fsync, want 3", c.Status().Commit)
	}
	ac := rd.Apply[len(rd.Apply)-1].(*messages.ApplyCommitted)
	if ac.CommitIndex != 3 || len(ac.Waiters) != 1 || ac.Waiters[0].Handle != 7 || ac.Waiters[0].Index != 3 {
		t.Fatalf("apply %v", ac)
	}
}

// Committed entries are applied only once durable, and handed to the apply
// actor exactly once.
func TestApplyOnceAfterDurable(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.hold = true
	c.mustStep(appendReq(2, 1, 2, 1, 1, 3, ents(2, 2, 2)...))
	rd := c.take()
	for _, a := range rd.Apply {
		if a.(*messages.ApplyCommitted).CommitIndex > 1 {
			t.Fatalf("applied before the fsync: %v", a)
		}
	}
	if len(sentOf[*messages.AppendEntriesResponse](rd)) != 0 {
		t.Fatalf("acknowledged before the fsync: %v", rd.Send)
	}
	c.ack(rd.Persist[0])
	rd = c.take()
	if len(rd.Apply) != 1 || rd.Apply[0].(*messages.ApplyCommitted).CommitIndex != 3 || len(rd.Apply[0].(*messages.ApplyCommitted).Entries) != 2 {
		// Entries 2 and 3 passed through the core, so they ride along.
		t.Fatalf("apply %v", rd.Apply)
	}
	if rs := sentOf[*messages.AppendEntriesResponse](rd); len(rs) != 1 || rs[0].MatchIndex != 3 {
		t.Fatalf("ack %v", rs)
	}
	c.hold = false
	c.mustStep(appendReq(2, 1, 2, 1, 1, 3, ents(2, 2, 2)...))
	if rd := c.take(); len(rd.Apply) != 0 {
		t.Fatalf("entries applied twice: %v", rd.Apply)
	}
}

func jointCore(t *testing.T, id uint64, incoming, outgoing []uint64) *testCore {
	m := &messages.Membership{Voters: incoming, VotersOutgoing: outgoing, Addresses: map[uint64]string{}}
	for _, v := range append(slices.Clone(incoming), outgoing...) {
		m.Addresses[v] = "addr"
	}
	return newTestCore(t, id, incoming, func(_ *Config, st *messages.InitialState) {
		st.Memberships[0].Membership = m
	})
}

// Joint consensus: while C_old,new is in force every commit needs a
// majority of both halves. Counting one half only fails this test.
func TestJointQuorumCommit(t *testing.T) {
	tests := []struct {
		name    string
		matches map[uint64]uint64
		want    uint64
	}{
		{"majority of new only", map[uint64]uint64{2: 2, 3: 2}, 0},
		{"majority of old only", map[uint64]uint64{4: 2, 5: 2}, 0},
		{"majority of both", map[uint64]uint64{2: 2, 4: 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := jointCore(t, 1, []uint64{1, 2, 3}, []uint64{1, 4, 5})
			c.elect(2, 3, 4, 5)
			for _, id := range []uint64{2, 3, 4, 5} {
				if m, ok := tt.matches[id]; ok {
					c.report(id, m)
				}
			}
			if got := c.Status().Commit; got != tt.want {
				t.Fatalf("commit %d, want %d", got, tt.want)
			}
		})
	}
}

// Joint consensus: an election during the joint phase needs a majority of
// both halves.
func TestJointQuorumElection(t *testing.T) {
	tests := []struct {
		granted []uint64
		want    messages.Role
	}{
		{[]uint64{2, 3}, messages.Role_ROLE_CANDIDATE},
		{[]uint64{4, 5}, messages.Role_ROLE_CANDIDATE},
		{[]uint64{2, 4}, messages.Role_ROLE_LEADER},
	}
	for _, tt := range tests {
		c := jointCore(t, 1, []uint64{1, 2, 3}, []uint64{1, 4, 5})
		c.Campaign()
		c.flush()
		for _, id := range tt.granted {
			c.mustStep(&messages.VoteResponse{Header: hdr(id, 1, 2), Granted: true})
		}
		if r := c.Status().Role; r != tt.want {
			t.Errorf("votes from %v: role %v, want %v", tt.granted, r, tt.want)
		}
	}
}

// Learners receive the log but never count toward a commit or an election.
func TestLearnersNeverCount(t *testing.T) {
	c := newTestCore(t, 1, three, withLearners(4, 5))
	c.Campaign()
	c.flush()
	c.step(&messages.VoteResponse{Header: hdr(4, 1, 2), Granted: true})
	c.step(&messages.VoteResponse{Header: hdr(5, 1, 2), Granted: true})
	if r := c.Status().Role; r != messages.Role_ROLE_CANDIDATE {
		t.Fatalf("learner votes elected a leader: %v", r)
	}
	c.mustStep(&messages.VoteResponse{Header: hdr(2, 1, 2), Granted: true})
	c.take()
	c.report(4, 2)
	c.report(5, 2)
	if got := c.Status().Commit; got != 0 {
		t.Fatalf("learners committed index %d", got)
	}
	c.report(2, 2)
	if got := c.Status().Commit; got != 2 {
		t.Fatalf("commit %d, want 2", got)
	}
}

// PITFALLS #18: a heartbeat is answered at once even while an append is
// being fsynced, so heartbeats and read index never wait for a slow disk;
// the append itself is acknowledged only once durable.
func TestHeartbeatAnsweredDuringFsync(t *testing.T) {
	c := newTestCore(t, 1, three, withHardState(2, 0, 1))
	c.hold = true
	c.mustStep(appendReq(2, 1, 2, 1, 1, 1, ents(2, 2)...))
	c.mustStep(&messages.AppendEntriesRequest{Header: hdr(2, 1, 2), Heartbeat: true, LeaderCommit: 1, ReadSeq: 3})
	rs := sentOf[*messages.AppendEntriesResponse](c.take())
	if len(rs) != 1 || !rs[0].Heartbeat || rs[0].ReadSeq != 3 {
		t.Fatalf("sent %v, want only the heartbeat answer", rs)
	}
}
