package core

import (
	"slices"
	"testing"

	"github.com/raftor/raftor/messages"
)

func TestRemoveLearner(t *testing.T) {
	c := newTestCore(t, 1, three, withLearners(4))
	c.elect(2)
	c.report(2, 2)
	c.RemoveLearner(7, &messages.RemoveLearnerRequest{NodeId: 9})
	if r, _ := responseOf[*messages.MembershipChangeResponse](c.take(), 7); r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("removing a non-learner: %v", r)
	}
	c.RemoveLearner(8, &messages.RemoveLearnerRequest{NodeId: 4})
	rd := c.take()
	if stops := replicateOf[*messages.ReplicationStop](rd); len(stops) != 0 {
		t.Fatalf("replication to the learner stopped before its removal committed: %v", stops)
	}
	c.report(2, 3)
	rd = c.take()
	r, ok := responseOf[*messages.MembershipChangeResponse](rd, 8)
	if !ok || r.Error != nil || slices.Contains(r.Membership.Learners, 4) || r.Index != 3 {
		t.Fatalf("answer %v", r)
	}
	if stops := replicateOf[*messages.ReplicationStop](rd); len(stops) != 1 || stops[0].Peer != 4 {
		t.Fatalf("replication stops %v, want node 4's", stops)
	}
}

// A batch of writes shares one persist and one replication notification.
func TestProposeBatch(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.elect(2)
	c.ProposeBatch([]Proposal{
		{Handle: 1, Request: &messages.ClientWriteRequest{Data: []byte("a")}},
		{Handle: 2, Request: &messages.ClientWriteRequest{Data: []byte("b")}},
		{Handle: 3, Request: &messages.ClientWriteRequest{Data: []byte("c")}},
	})
	rd := c.Ready()
	ns := replicateOf[*messages.ReplicationNotify](rd)
	if len(rd.Persist) != 1 || len(rd.Persist[0].Entries) != 3 || len(ns) != 1 || len(ns[0].Entries) != 3 {
		t.Fatalf("persist %v notify %v", rd.Persist, ns)
	}
}

// TriggerSnapshot asks the apply actor for a snapshot and answers with its
// meta; the log is purged up to SnapshotTrailing entries before it.
func TestTriggerSnapshot(t *testing.T) {
	c := newTestCore(t, 1, []uint64{1}, withConfig(func(c *Config) { c.SnapshotTrailing = 2 }))
	c.Campaign()
	c.flush()
	for h := Handle(1); h <= 5; h++ {
		c.Propose(h, &messages.ClientWriteRequest{Data: []byte("x")})
	}
	c.take()
	c.mustStep(&messages.ApplyResult{AppliedIndex: 7})
	c.TriggerSnapshot(9, &messages.TriggerSnapshotRequest{})
	rd := c.take()
	var build *messages.BuildSnapshot
	for _, a := range rd.Apply {
		if b, ok := a.(*messages.BuildSnapshot); ok {
			build = b
		}
	}
	if build == nil {
		t.Fatalf("no BuildSnapshot in %v", rd.Apply)
	}
	meta := &messages.SnapshotMeta{Index: 7, Term: 2, Id: "s7", Membership: c.Status().Membership, MembershipIndex: 1}
	c.mustStep(&messages.SnapshotBuilt{Seq: build.Seq, Meta: meta})
	rd = c.take()
	if r, ok := responseOf[*messages.TriggerSnapshotResponse](rd, 9); !ok || r.Meta.GetIndex() != 7 {
		t.Fatalf("answer %v", r)
	}
	if len(rd.Storage) != 1 || rd.Storage[0].(*messages.StoragePurge).Index != 5 {
		t.Fatalf("storage %v, want a purge up to 5", rd.Storage)
	}
	c.mustStep(&messages.StoragePurgeResult{GroupId: 1, FirstIndex: 6})
	if st := c.Status(); st.FirstIndex != 6 || st.SnapshotIndex != 7 {
		t.Fatalf("status %+v", st)
	}
}

// A failed fsync takes the node out: it steps down, refuses writes with
// STORAGE_FAILED, never sends what waited for the failed append, and
// refuses wire messages.
func TestStorageFailure(t *testing.T) {
	c := newTestCore(t, 1, three)
	c.elect(2)
	c.hold = true
	c.Propose(1, &messages.ClientWriteRequest{Data: []byte("x")})
	rd := c.take()
	err := c.step(&messages.StorageAppendResult{GroupId: 1, Seq: rd.Persist[0].Seq, Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Message: "disk full"}})
	if !isCode(err, messages.ErrorCode_ERROR_CODE_STORAGE_FAILED) {
		t.Fatalf("err %v", err)
	}
	if st := c.Status(); st.Role == messages.Role_ROLE_LEADER {
		t.Fatal("leader with a failed disk kept leading")
	}
	c.take()
	c.Propose(2, &messages.ClientWriteRequest{Data: []byte("y")})
	if r, _ := responseOf[*messages.ClientWriteResponse](c.take(), 2); r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
		t.Fatalf("write after the failure: %v", r)
	}
	if err := c.step(voteReq(2, 1, 9, 9, 9)); !isCode(err, messages.ErrorCode_ERROR_CODE_STORAGE_FAILED) {
		t.Fatalf("vote request after the failure: %v", err)
	}
	if rd := c.take(); len(rd.Send) != 0 {
		t.Fatalf("sent %v", rd.Send)
	}
	c.tick(50)
	if st := c.Status(); st.Role != messages.Role_ROLE_FOLLOWER || st.Term != 2 {
		t.Fatalf("node with a failed disk campaigned: %+v", st)
	}
}

// A leader that appended a C_new removing itself, and crashed before C_new
// committed, comes back as a non-voter of its latest configuration. The
// other voter lacks C_new, its log is behind, and it cannot win without this
// node's vote. This node must campaign under C_new (counting only C_new's
// voters) rather than wait forever; a node whose removal committed must not.
func TestRemovedLeaderWithUncommittedCNewCampaigns(t *testing.T) {
	joint := &messages.Membership{Voters: []uint64{2}, VotersOutgoing: []uint64{1, 2}, Addresses: map[uint64]string{1: "a", 2: "b"}}
	cnew := &messages.Membership{Voters: []uint64{2}, Learners: []uint64{1}, Addresses: map[uint64]string{1: "a", 2: "b"}}
	tests := []struct {
		name     string
		commit   uint64
		campaign bool
	}{
		{"C_new not committed: campaigns", 2, true},
		{"C_new committed: stays quiet", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, []uint64{1, 2}, withTerms(1, 1, 1), withHardState(1, 1, tt.commit),
				withMembership(joint, 2), withMembership(cnew, 3))
			c.tick(40)
			var asked []uint64
			for _, m := range sentOf[*messages.VoteRequest](c.take()) {
				asked = append(asked, m.Header.GetTo())
			}
			if got := len(asked) > 0; got != tt.campaign {
				t.Fatalf("vote requests sent to %v; want a campaign: %v", asked, tt.campaign)
			}
			for _, id := range asked {
				if id != 2 {
					t.Fatalf("asked %d for a vote; only C_new's voter 2 counts", id)
				}
			}
		})
	}
}
