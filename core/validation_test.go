package core

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Every wire message is validated before Raft sees it: a bad one gets an
// error (and a WireReject where the sender should learn why), never a panic
// and never a change of state.
func TestStepValidation(t *testing.T) {
	wrongCluster := hdr(2, 1, 5)
	wrongCluster.ClusterId = "other"
	wrongGroup := hdr(2, 1, 5)
	wrongGroup.GroupId = 9
	tests := []struct {
		name       string
		msg        proto.Message
		code       messages.ErrorCode
		wantReject bool
	}{
		{"wrong cluster", &messages.VoteRequest{Header: wrongCluster}, messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER, true},
		{"wrong group", appendReq(2, 1, 5, 0, 0, 0), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"addressed to another node", voteReq(2, 7, 5, 9, 9), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"from node 0", voteReq(0, 1, 5, 9, 9), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"from itself", voteReq(1, 1, 5, 9, 9), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"term 0", voteReq(2, 1, 0, 9, 9), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"no header", &messages.AppendEntriesRequest{}, messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"vote from a stranger", voteReq(9, 1, 5, 9, 9), messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, true},
		{"timeout-now from a stranger", &messages.TimeoutNowRequest{Header: hdr(9, 1, 5)}, messages.ErrorCode_ERROR_CODE_UNKNOWN_SENDER, true},
		{"entries not contiguous", appendReq(2, 1, 5, 1, 1, 0, ent(2, 5), ent(4, 5)), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"entry at index 0", appendReq(2, 1, 5, 0, 0, 0, ent(0, 5)), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"prev index out of range", appendReq(2, 1, 5, math.MaxUint64-1, 1, 0, ent(math.MaxUint64, 5)), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"entry term above the leader's", appendReq(2, 1, 5, 1, 1, 0, ent(2, 6)), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"entry terms going down", appendReq(2, 1, 5, 1, 1, 0, ent(2, 4), ent(3, 3)), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"heartbeat with entries", &messages.AppendEntriesRequest{Header: hdr(2, 1, 5), Heartbeat: true, Entries: ents(2, 5)}, messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"prev term at index 0", appendReq(2, 1, 5, 0, 3, 0), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"membership entry without voters", appendReq(2, 1, 5, 1, 1, 0, &messages.Entry{Index: 2, Term: 5, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP}), messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"snapshot without meta", &messages.InstallSnapshotRequest{Header: hdr(2, 1, 5)}, messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"nil message", nil, messages.ErrorCode_ERROR_CODE_INVALID, false},
		{"client request on the Raft path", &messages.ClientWriteRequest{}, messages.ErrorCode_ERROR_CODE_INVALID, false},
	}
	tests[1].msg.(*messages.AppendEntriesRequest).Header = wrongGroup
	tests[1].code = messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER
	tests[1].wantReject = true
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, three)
			before := c.Status()
			err := c.step(tt.msg)
			if !isCode(err, tt.code) {
				t.Fatalf("err = %v, want code %v", err, tt.code)
			}
			rd := c.take()
			rejects := sentOf[*messages.WireReject](rd)
			if tt.wantReject != (len(rejects) == 1) || len(rd.Send) != len(rejects) {
				t.Fatalf("sent %v, want a WireReject: %v", rd.Send, tt.wantReject)
			}
			if tt.wantReject && rejects[0].Error.Code != tt.code {
				t.Fatalf("reject code %v", rejects[0].Error.Code)
			}
			after := c.Status()
			if after.Term != before.Term || after.LastIndex != before.LastIndex || after.Leader != before.Leader || after.Vote != before.Vote {
				t.Fatalf("refused message changed state: %+v -> %+v", before, after)
			}
		})
	}
}

// A new leader this node never heard of (it joined after this node's last
// configuration entry) may still replicate to it.
func TestAppendFromUnknownLeaderAccepted(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.mustStep(appendReq(9, 1, 5, 1, 1, 0, ent(2, 5)))
	if st := c.Status(); st.Leader != 9 || st.LastIndex != 2 {
		t.Fatalf("append from unknown leader: %+v", st)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{ID: 1}, true},
		{"no id", Config{}, false},
		{"heartbeat not below election", Config{ID: 1, ElectionTicks: 5, HeartbeatTicks: 5}, false},
		{"negative ticks", Config{ID: 1, ElectionTicks: -1}, false},
		{"lease without check-quorum", Config{ID: 1, LeaseRead: true}, false},
		{"lease with check-quorum", Config{ID: 1, LeaseRead: true, CheckQuorum: true}, true},
		{"negative limit", Config{ID: 1, MaxEntryBytes: -1}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
		if _, nerr := New(tt.cfg, nil); (nerr == nil) != tt.ok {
			t.Errorf("%s: New err = %v", tt.name, nerr)
		}
	}
}

func TestNewRejectsInconsistentState(t *testing.T) {
	tests := []struct {
		name string
		st   *messages.InitialState
	}{
		{"other node's storage", &messages.InitialState{Identity: &messages.NodeIdentity{NodeId: 2}}},
		{"other cluster's storage", &messages.InitialState{Identity: &messages.NodeIdentity{NodeId: 1, ClusterId: "x"}}},
		{"runs not covering the log", &messages.InitialState{HardState: &messages.HardState{Term: 3}, FirstIndex: 1, LastIndex: 3,
			TermRuns: []*messages.TermRun{{FirstIndex: 2, Term: 1}}}},
		{"log term above hard state term", &messages.InitialState{HardState: &messages.HardState{Term: 1}, FirstIndex: 1, LastIndex: 1,
			TermRuns: []*messages.TermRun{{FirstIndex: 1, Term: 2}}}},
		{"gap after snapshot", &messages.InitialState{HardState: &messages.HardState{Term: 2}, Snapshot: &messages.SnapshotMeta{Index: 5, Term: 2},
			FirstIndex: 8, LastIndex: 9, TermRuns: []*messages.TermRun{{FirstIndex: 8, Term: 2}}}},
	}
	for _, tt := range tests {
		if _, err := New(Config{ClusterID: "c", ID: 1}, tt.st); err == nil {
			t.Errorf("%s: New accepted it", tt.name)
		}
	}
}

// Client requests get typed errors a caller can act on.
func TestClientErrors(t *testing.T) {
	follower := func(t *testing.T) *testCore {
		c := newTestCore(t, 1, three)
		c.mustStep(appendReq(2, 1, 2, 1, 1, 1))
		c.take()
		return c
	}
	leader := func(t *testing.T, f func(*Config)) *testCore {
		c := newTestCore(t, 1, three, withConfig(f))
		c.elect(2)
		c.report(2, 2)
		c.take()
		return c
	}
	tests := []struct {
		name string
		do   func(t *testing.T) (Ready, Handle)
		want messages.ErrorCode
	}{
		{"write on a follower", func(t *testing.T) (Ready, Handle) {
			c := follower(t)
			c.Propose(5, &messages.ClientWriteRequest{Data: []byte("x")})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_NOT_LEADER},
		{"read on a follower", func(t *testing.T) (Ready, Handle) {
			c := follower(t)
			c.ReadIndex(5, &messages.ReadIndexRequest{})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_NOT_LEADER},
		{"too large", func(t *testing.T) (Ready, Handle) {
			c := leader(t, func(c *Config) { c.MaxEntryBytes = 100 })
			c.Propose(5, &messages.ClientWriteRequest{Data: make([]byte, 200)})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_TOO_LARGE},
		{"overloaded", func(t *testing.T) (Ready, Handle) {
			c := leader(t, func(c *Config) { c.MaxUncommittedWrites = 2 })
			c.Propose(4, &messages.ClientWriteRequest{})
			c.Propose(5, &messages.ClientWriteRequest{})
			c.Propose(6, &messages.ClientWriteRequest{})
			return c.take(), 6
		}, messages.ErrorCode_ERROR_CODE_OVERLOADED},
		{"transfer in progress", func(t *testing.T) (Ready, Handle) {
			c := leader(t, func(*Config) {})
			c.TransferLeader(4, &messages.TransferLeaderRequest{Target: 3})
			c.Propose(5, &messages.ClientWriteRequest{})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS},
		{"initialize twice", func(t *testing.T) (Ready, Handle) {
			c := follower(t)
			c.Initialize(5, &messages.InitializeRequest{Membership: &messages.Membership{Voters: []uint64{1}}})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_ALREADY_INITIALIZED},
		{"change before the leader committed in its term", func(t *testing.T) (Ready, Handle) {
			c := newTestCore(t, 1, three, withLearners(4))
			c.elect(2)
			c.ChangeMembership(5, &messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 4}})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS},
		{"second change while one is in progress", func(t *testing.T) (Ready, Handle) {
			c := newTestCore(t, 1, three, withLearners(4))
			c.elect(2)
			c.report(2, 2)
			c.AddLearner(4, &messages.AddLearnerRequest{NodeId: 5, Address: "a5"})
			c.ChangeMembership(5, &messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 4}})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS},
		{"new voter that is not a learner", func(t *testing.T) (Ready, Handle) {
			c := leader(t, func(*Config) {})
			c.ChangeMembership(5, &messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 9}})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_INVALID},
		{"transfer to a non-voter", func(t *testing.T) (Ready, Handle) {
			c := leader(t, func(*Config) {})
			c.TransferLeader(5, &messages.TransferLeaderRequest{Target: 9})
			return c.take(), 5
		}, messages.ErrorCode_ERROR_CODE_INVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, h := tt.do(t)
			var got *messages.Error
			for _, r := range rd.Responses {
				if r.Handle == h {
					got = r.Msg.(interface{ GetError() *messages.Error }).GetError()
				}
			}
			if got.GetCode() != tt.want {
				t.Fatalf("error %v, want %v", got, tt.want)
			}
			if tt.want == messages.ErrorCode_ERROR_CODE_NOT_LEADER && (got.LeaderId != 2 || got.LeaderAddress != "addr") {
				t.Fatalf("NOT_LEADER without the leader: %v", got)
			}
		})
	}
}

// Initialize writes the membership as entry 1 of term 1 and answers once it
// is durable.
func TestInitialize(t *testing.T) {
	c, err := New(Config{ClusterID: "c", GroupID: 1, ID: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCore{t: t, Core: c, hold: true}
	tc.Initialize(5, &messages.InitializeRequest{Membership: &messages.Membership{Voters: []uint64{1, 2, 3}}})
	rd := tc.take()
	if len(rd.Responses) != 0 {
		t.Fatalf("answered before durable: %v", rd.Responses)
	}
	ap := rd.Persist[0]
	if ap.HardState.GetTerm() != 1 || len(ap.Entries) != 1 || ap.Entries[0].Kind != messages.EntryKind_ENTRY_KIND_MEMBERSHIP || ap.Entries[0].Term != 1 {
		t.Fatalf("persist %v", ap)
	}
	tc.ack(ap)
	if r, ok := responseOf[*messages.InitializeResponse](tc.take(), 5); !ok || r.Error != nil {
		t.Fatalf("initialize answer %v", r)
	}
	if st := tc.Status(); st.Role != messages.Role_ROLE_FOLLOWER || len(st.Membership.GetVoters()) != 3 {
		t.Fatalf("after initialize %+v", st)
	}
}

// Metrics describe the node and, on the leader, every peer's progress.
func TestMetrics(t *testing.T) {
	c := newTestCore(t, 1, three, withLearners(4))
	c.elect(2)
	c.mustStep(&messages.ReplicationReport{Term: 2, Peer: 2, MatchIndex: 2, NextIndex: 3, Heard: true, Reachable: true,
		Mode: messages.ReplicationMode_REPLICATION_MODE_PIPELINE})
	c.Propose(1, &messages.ClientWriteRequest{Data: []byte("x")})
	c.flush()
	m := c.Metrics()
	if m.Role != messages.Role_ROLE_LEADER || m.LeaderId != 1 || m.Term != 2 || m.LastLogIndex != 3 || m.CommitIndex != 2 ||
		m.PendingWrites != 1 || len(m.Peers) != 3 {
		t.Fatalf("metrics %v", m)
	}
	p2, p4 := m.Peers[0], m.Peers[2]
	if p2.NodeId != 2 || !p2.Voter || p2.MatchIndex != 2 || p2.Lag != 1 || p2.Mode != messages.ReplicationMode_REPLICATION_MODE_PIPELINE {
		t.Fatalf("peer 2 %v", p2)
	}
	if p4.NodeId != 4 || p4.Voter || p4.Lag != 3 {
		t.Fatalf("learner 4 %v", p4)
	}
}
