package core

// Tests for pitfalls of PITFALLS.md (bugs that shipped in other Raft
// libraries) that the paper's tests do not pin down, each on one Core.

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// PITFALLS #4: a message of any kind that carries a higher term makes the
// node adopt the term (clearing its vote, persisted) and step down before
// it handles the message. A pre-vote request changes nothing.
func TestHigherTermInAnyMessageStepsDown(t *testing.T) {
	tests := []struct {
		name     string
		msg      proto.Message
		wantTerm uint64
		wantVote uint64
		stepDown bool
	}{
		{"vote request, granted", voteReq(3, 1, 5, 9, 9), 5, 3, true},
		{"vote request, refused", voteReq(3, 1, 5, 0, 0), 5, 0, true},
		{"vote response", &messages.VoteResponse{Header: hdr(2, 1, 5)}, 5, 0, true},
		{"append", appendReq(2, 1, 5, 0, 0, 0), 5, 0, true},
		{"heartbeat", &messages.AppendEntriesRequest{Header: hdr(2, 1, 5), Heartbeat: true}, 5, 0, true},
		{"install snapshot", &messages.InstallSnapshotRequest{Header: hdr(2, 1, 5), Meta: snapMeta("s", 1, 1), Data: []byte("x")}, 5, 0, true},
		{"append response", &messages.AppendEntriesResponse{Header: hdr(2, 1, 5)}, 5, 0, true},
		{"install snapshot response", &messages.InstallSnapshotResponse{Header: hdr(2, 1, 5)}, 5, 0, true},
		{"replication report", &messages.ReplicationReport{Term: 2, Peer: 2, HigherTerm: 5}, 5, 0, true},
		{"pre-vote request", &messages.VoteRequest{Header: hdr(3, 1, 5), LastLogIndex: 9, LastLogTerm: 9, PreVote: true}, 2, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three)
			c.elect(2)
			if st := c.Status(); st.Term != 2 || st.Vote != 1 {
				t.Fatalf("leader %+v, want term 2 with its own vote", st)
			}
			_ = c.step(tt.msg)
			rd := c.take()
			st := c.Status()
			if st.Term != tt.wantTerm || st.Vote != tt.wantVote {
				t.Fatalf("term %d vote %d, want term %d vote %d", st.Term, st.Vote, tt.wantTerm, tt.wantVote)
			}
			stopped := false
			for _, s := range replicateOf[*messages.ReplicationStop](rd) {
				stopped = stopped || (s.Term == 2 && s.Peer == 0)
			}
			if tt.stepDown != (st.Role != messages.Role_ROLE_LEADER) || tt.stepDown != stopped {
				t.Fatalf("role %v, replication of term 2 stopped %v; want a step-down: %v", st.Role, stopped, tt.stepDown)
			}
			if !tt.stepDown {
				return
			}
			persisted := false
			for _, ap := range rd.Persist {
				hs := ap.GetHardState()
				persisted = persisted || (hs.GetTerm() == tt.wantTerm && hs.GetVote() == tt.wantVote)
			}
			if !persisted {
				t.Fatalf("term %d and vote %d never persisted: %v", tt.wantTerm, tt.wantVote, rd.Persist)
			}
		})
	}
}

// PITFALLS #4: replies are dropped unless they belong to the term they were
// sent in: granted votes of an earlier election elect nobody, and a
// replication report of an earlier term commits nothing.
func TestRepliesOfAnotherTermAreDropped(t *testing.T) {
	t.Run("votes of an earlier election", func(t *testing.T) {
		c := newTestCore(t, 1, []uint64{1, 2, 3, 4, 5})
		c.Campaign() // term 2
		c.flush()
		c.Campaign() // term 3: the first election failed
		c.flush()
		for _, from := range []uint64{2, 3} {
			if err := c.step(&messages.VoteResponse{Header: hdr(from, 1, 2), Granted: true}); !isCode(err, messages.ErrorCode_ERROR_CODE_STALE_TERM) {
				t.Fatalf("term-2 vote in term 3: err %v, want STALE_TERM", err)
			}
		}
		if st := c.Status(); st.Role != messages.Role_ROLE_CANDIDATE || st.Term != 3 {
			t.Fatalf("after two votes of term 2: %v in term %d, want a candidate of term 3", st.Role, st.Term)
		}
		for _, from := range []uint64{2, 3} {
			c.mustStep(&messages.VoteResponse{Header: hdr(from, 1, 3), Granted: true})
		}
		if r := c.Status().Role; r != messages.Role_ROLE_LEADER {
			t.Fatalf("after two votes of term 3: %v, want leader", r)
		}
	})
	t.Run("replication report of an earlier term", func(t *testing.T) {
		c := newTestCore(t, 1, three, withTerms(1, 1), withHardState(1, 0, 1))
		c.elect(2) // term 2, blank entry 3
		err := c.step(&messages.ReplicationReport{Term: 1, Peer: 2, MatchIndex: 3, Heard: true, Reachable: true})
		if !isCode(err, messages.ErrorCode_ERROR_CODE_STALE_TERM) || c.Status().Commit != 1 {
			t.Fatalf("term-1 report: err %v, commit %d; want STALE_TERM and commit 1", err, c.Status().Commit)
		}
		c.report(2, 3)
		if got := c.Status().Commit; got != 3 {
			t.Fatalf("commit %d after the term-2 report, want 3", got)
		}
	})
}

// PITFALLS #8: the election timer restarts only on an append from the
// current leader, on starting an election and on granting a vote. A vote
// it refuses, a pre-vote, or an append from a stale leader leave it
// running, so that a stream of hopeless candidates or a deposed leader
// cannot hold off an election forever.
func TestElectionTimerResetOnlyByLeaderVoteOrCampaign(t *testing.T) {
	following := func(t *testing.T) *testCore {
		c := newTestCore(t, 1, three, withHardState(2, 0, 0))
		c.mustStep(appendReq(2, 1, 2, 1, 1, 0)) // node 2 leads term 2
		return c
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) *testCore
		do    func(c *testCore)
		reset bool
	}{
		{"append from the leader", following, func(c *testCore) { c.step(appendReq(2, 1, 2, 1, 1, 0)) }, true},
		{"heartbeat from the leader", following, func(c *testCore) {
			c.step(&messages.AppendEntriesRequest{Header: hdr(2, 1, 2), Heartbeat: true})
		}, true},
		{"append from a stale leader", following, func(c *testCore) { c.step(appendReq(3, 1, 1, 1, 1, 0)) }, false},
		{"heartbeat from a stale leader", following, func(c *testCore) {
			c.step(&messages.AppendEntriesRequest{Header: hdr(3, 1, 1), Heartbeat: true})
		}, false},
		{"vote refused: candidate's log behind", following, func(c *testCore) { c.step(voteReq(3, 1, 3, 0, 0)) }, false},
		{"vote refused: following a leader", following, func(c *testCore) { c.step(voteReq(3, 1, 2, 9, 9)) }, false},
		{"vote refused: stale term", following, func(c *testCore) { c.step(voteReq(3, 1, 1, 9, 9)) }, false},
		{"vote refused: voted for another", func(t *testing.T) *testCore {
			return newTestCore(t, 1, three, withHardState(2, 3, 0))
		}, func(c *testCore) { c.step(voteReq(2, 1, 2, 9, 9)) }, false},
		{"pre-vote granted", following, func(c *testCore) {
			c.step(&messages.VoteRequest{Header: hdr(3, 1, 3), LastLogIndex: 9, LastLogTerm: 9, PreVote: true})
		}, false},
		{"vote granted", following, func(c *testCore) { c.step(voteReq(3, 1, 3, 9, 9)) }, true},
		{"starting an election", following, func(c *testCore) { c.Campaign(); c.flush() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.setup(t)
			c.tick(5)
			if c.electionElapsed != 5 || c.Status().Role != messages.Role_ROLE_FOLLOWER {
				t.Fatalf("setup: elapsed %d, role %v", c.electionElapsed, c.Status().Role)
			}
			c.take()
			tt.do(c)
			granted := false
			for _, r := range sentOf[*messages.VoteResponse](c.take()) {
				granted = granted || r.Granted
			}
			want := 5
			if tt.reset {
				want = 0
			}
			if c.electionElapsed != want {
				t.Fatalf("election timer at %d ticks, want %d (vote granted: %v)", c.electionElapsed, want, granted)
			}
		})
	}
}

// PITFALLS #10: a new leader appends no configuration change before an
// entry of its own term (its blank entry) committed, even when the latest
// configuration is committed; and there is one change at a time: a
// request that arrives before the change in progress (both of its joint
// consensus steps) committed is refused and appends nothing.
func TestConfigChangeWaitsForTheTermsBlankAndGoesOneAtATime(t *testing.T) {
	c := newTestCore(t, 1, three, withLearners(4), withHardState(1, 0, 1))
	c.elect(2) // term 2; the configuration (entry 1) is committed, the blank (2) is not
	refused := func(what string, req proto.Message) {
		t.Helper()
		before := c.Status().LastIndex
		if err := c.Request(7, req); err != nil {
			t.Fatal(err)
		}
		r, _ := responseOf[*messages.MembershipChangeResponse](c.take(), 7)
		if r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS || c.Status().LastIndex != before {
			t.Fatalf("%s: answered %v, log %d -> %d; want CHANGE_IN_PROGRESS and nothing appended", what, r, before, c.Status().LastIndex)
		}
	}
	for _, req := range []proto.Message{
		&messages.AddLearnerRequest{NodeId: 5, Address: "a5"},
		&messages.RemoveLearnerRequest{NodeId: 4},
		&messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 4}},
	} {
		refused("before the blank entry committed", req)
	}
	c.report(2, 2)
	if got := c.Status().Commit; got != 2 {
		t.Fatalf("commit %d, want the blank entry 2", got)
	}
	c.ChangeMembership(8, &messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 4}})
	c.take()
	if st := c.Status(); st.LastIndex != 3 || len(st.Membership.GetVotersOutgoing()) == 0 {
		t.Fatalf("change not appended as C_old,new at 3: %+v", st)
	}
	refused("while C_old,new is uncommitted", &messages.AddLearnerRequest{NodeId: 5, Address: "a5"})
	c.report(2, 3) // C_old,new commits; the leader appends C_new at 4
	if st := c.Status(); st.LastIndex != 4 || len(st.Membership.GetVotersOutgoing()) != 0 {
		t.Fatalf("C_new not appended at 4: %+v", st)
	}
	refused("while C_new is uncommitted", &messages.RemoveLearnerRequest{NodeId: 4})
	c.report(2, 4)
	if r, ok := responseOf[*messages.MembershipChangeResponse](c.take(), 8); !ok || r.GetError() != nil {
		t.Fatalf("change answered %v", r)
	}
	c.AddLearner(9, &messages.AddLearnerRequest{NodeId: 5, Address: "a5"})
	c.take()
	if st := c.Status(); st.LastIndex != 5 {
		t.Fatalf("the next change was not appended once the first finished: last index %d", st.LastIndex)
	}
}

// PITFALLS #10 (disruptive servers): with check-quorum, a voter that heard
// from a leader within the minimum election timeout ignores vote requests
// (it neither grants them nor raises its term), except the one a leader
// transfer asked for. Once the leader has been silent for an election
// timeout it votes again.
func TestVoteRequestsIgnoredWhileALeaderIsHeard(t *testing.T) {
	transfer := voteReq(3, 1, 5, 9, 9)
	transfer.LeadershipTransfer = true
	tests := []struct {
		name       string
		silent     int // ticks without the leader before the request
		req        *messages.VoteRequest
		granted    bool
		wantTerm   uint64
		wantLeader uint64
	}{
		{"vote request", 0, voteReq(3, 1, 5, 9, 9), false, 2, 2},
		{"vote request just before the timeout", 9, voteReq(3, 1, 5, 9, 9), false, 2, 2},
		{"pre-vote request", 0, &messages.VoteRequest{Header: hdr(3, 1, 3), LastLogIndex: 9, LastLogTerm: 9, PreVote: true}, false, 2, 2},
		{"a transfer's vote request", 0, transfer, true, 5, 0},
		{"vote request after an election timeout of silence", 10, voteReq(3, 1, 5, 9, 9), true, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three, withHardState(2, 0, 0), withConfig(func(c *Config) { c.CheckQuorum = true }))
			c.mustStep(appendReq(2, 1, 2, 1, 1, 0))
			c.tick(tt.silent)
			c.take()
			c.mustStep(tt.req)
			rs := sentOf[*messages.VoteResponse](c.take())
			if len(rs) != 1 || rs[0].Granted != tt.granted {
				t.Fatalf("answered %v, want granted=%v", rs, tt.granted)
			}
			if st := c.Status(); st.Term != tt.wantTerm || st.Leader != tt.wantLeader {
				t.Fatalf("term %d leader %d, want term %d leader %d", st.Term, st.Leader, tt.wantTerm, tt.wantLeader)
			}
		})
	}
}

// PITFALLS #11: a learner whose own log does not yet hold the configuration
// that made it a voter still votes when a candidate asks (the candidate
// counts it), and a node the configuration made a voter is a follower that
// campaigns. A learner's vote never counts for a candidate whose
// configuration has it as a learner (TestLearnersNeverCount).
func TestPromotedLearnerVotes(t *testing.T) {
	c := newTestCore(t, 4, three, withLearners(4))
	if r := c.Status().Role; r != messages.Role_ROLE_LEARNER {
		t.Fatalf("node 4 is %v, want a learner", r)
	}
	c.mustStep(voteReq(2, 4, 2, 9, 9))
	if rs := sentOf[*messages.VoteResponse](c.take()); len(rs) != 1 || !rs[0].Granted || c.Status().Vote != 2 {
		t.Fatalf("node 4 answered %v (vote %d); want its vote for node 2", rs, c.Status().Vote)
	}
	// The candidate's side: with node 4 a voter of its configuration, node
	// 4's vote and its own elect it.
	cnew := &messages.Membership{Voters: []uint64{1, 2, 4}, Learners: []uint64{3}, Addresses: map[uint64]string{1: "a", 2: "b", 3: "c", 4: "d"}}
	cand := newTestCore(t, 2, three, withLearners(4), withTerms(1, 1), withHardState(1, 0, 2), withMembership(cnew, 2))
	cand.Campaign()
	cand.flush()
	cand.mustStep(&messages.VoteResponse{Header: hdr(4, 2, 2), Granted: true})
	if r := cand.Status().Role; r != messages.Role_ROLE_LEADER {
		t.Fatalf("candidate with node 4's vote is %v, want leader", r)
	}
	// The promoted node's side: once its log holds C_new it is a follower
	// and campaigns when the leader goes silent.
	p := newTestCore(t, 4, three, withLearners(4), withTerms(1, 1), withHardState(1, 0, 2), withMembership(cnew, 2))
	if r := p.Status().Role; r != messages.Role_ROLE_FOLLOWER {
		t.Fatalf("promoted node is %v, want a follower", r)
	}
	p.tick(20)
	if r := p.Status().Role; r != messages.Role_ROLE_CANDIDATE {
		t.Fatalf("promoted node is %v after two election timeouts, want a candidate", r)
	}
}

// PITFALLS #13: lease reads require check-quorum (TestConfigValidate), and
// a leader stops answering from its lease once it starts a leader
// transfer: the target's election ignores the lease of the voters, so a
// read waits for a quorum heartbeat round instead.
func TestLeaseEndsWhenATransferStarts(t *testing.T) {
	c := newTestCore(t, 1, three, withConfig(func(c *Config) { c.CheckQuorum, c.LeaseRead = true, true }))
	c.elect(2)
	c.report(2, 2)
	acked := func() {
		t.Helper()
		rs := c.readSeq
		c.mustStep(&messages.ReplicationReport{Term: 2, Peer: 2, MatchIndex: 2, Heard: true, Reachable: true, ReadSeq: rs})
	}
	c.tick(1) // a heartbeat round
	acked()
	c.take()
	c.ReadIndex(1, &messages.ReadIndexRequest{})
	if r, ok := responseOf[*messages.ReadIndexResponse](c.take(), 1); !ok || r.GetError() != nil || r.GetReadIndex() != 2 {
		t.Fatalf("read under a valid lease answered %v, want index 2 at once", r)
	}
	c.TransferLeader(2, &messages.TransferLeaderRequest{Target: 3}) // node 3 lags: the transfer waits for it
	c.take()
	c.ReadIndex(3, &messages.ReadIndexRequest{})
	rd := c.take()
	if r, ok := responseOf[*messages.ReadIndexResponse](rd, 3); ok {
		t.Fatalf("read answered %v from the lease while a transfer is in progress", r)
	}
	round := false
	for _, n := range replicateOf[*messages.ReplicationNotify](rd) {
		round = round || n.Heartbeat
	}
	if !round {
		t.Fatalf("the read started no heartbeat round: %v", rd.Replicate)
	}
	acked()
	if r, ok := responseOf[*messages.ReadIndexResponse](c.take(), 3); !ok || r.GetError() != nil || r.GetReadIndex() != 2 {
		t.Fatalf("read answered %v after a quorum confirmed the round, want index 2", r)
	}
}

// PITFALLS #15 (hashicorp #248): the index of the latest snapshot never
// goes back: not for an older install arriving late, not for an older
// install's storage result, not for a local snapshot built before the
// install.
func TestSnapshotIndexNeverGoesBack(t *testing.T) {
	c := newTestCore(t, 1, three, withHardState(2, 0, 1))
	c.install(snapMeta("s8", 8, 2))
	rs := restores(c.take())
	if len(rs) != 1 {
		t.Fatalf("restores %v", rs)
	}
	c.mustStep(&messages.SnapshotRestored{Seq: rs[0].Seq, Meta: rs[0].Meta})
	c.TriggerSnapshot(5, &messages.TriggerSnapshotRequest{})
	var build *messages.BuildSnapshot
	for _, a := range c.take().Apply {
		if b, ok := a.(*messages.BuildSnapshot); ok {
			build = b
		}
	}
	if build == nil {
		t.Fatal("no snapshot build asked for")
	}
	check := func(what string) {
		t.Helper()
		rd := c.take()
		if st := c.Status(); st.SnapshotIndex != 8 || st.FirstIndex != 9 || st.Applied != 8 || len(restores(rd)) != 0 {
			t.Fatalf("after %s: snapshot %d first %d applied %d restores %v; want 8, 9, 8 and none",
				what, st.SnapshotIndex, st.FirstIndex, st.Applied, restores(rd))
		}
	}
	check("the install of s8")
	_ = c.step(&messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: 5, Meta: snapMeta("s5", 5, 2), NextOffset: 1, Done: true})
	check("a late storage result of an older install")
	c.mustStep(&messages.InstallSnapshotRequest{Header: hdr(2, 1, 2), Meta: snapMeta("s5", 5, 2), Data: []byte("x"), Done: true, Seq: 9})
	check("an older snapshot sent again")
	_ = c.step(&messages.SnapshotBuilt{Seq: build.Seq, Meta: snapMeta("local-4", 4, 2)})
	check("a local snapshot of an older index")
}
