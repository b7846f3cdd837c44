package core

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Fuzzing of the wire handlers: arbitrary bytes, unmarshalled into each
// wire message and stepped into a core in each role, never panic, and the
// invariants hold: the term never decreases, commit never decreases and
// never passes the last index, durable never passes the last index.
//
//	go test ./core -run '^$' -fuzz FuzzStepAppendEntries -fuzztime 20s

// fuzzCore builds a core in one of several roles over a log with entries of
// terms 1,1,2,2,3.
func fuzzCore(t *testing.T, role byte) *testCore {
	c := newTestCore(t, 1, []uint64{1, 2, 3}, withTerms(1, 1, 2, 2, 3), withHardState(3, 0, 2), withLearners(4),
		withConfig(func(c *Config) { c.PreVote = role&4 != 0; c.CheckQuorum = role&8 != 0 }))
	switch role % 4 {
	case 1:
		c.Campaign()
		c.flush()
	case 2:
		c.elect(2)
		c.report(2, 6)
	case 3:
		c.mustStep(appendReq(2, 1, 4, 5, 3, 3))
	}
	c.take()
	return c
}

func fixHeader(h *messages.Header, from uint64) *messages.Header {
	if h == nil {
		h = &messages.Header{}
	}
	h.ClusterId, h.GroupId, h.To = "c", 1, 1
	if h.From == 0 || h.From == 1 || h.From > 5 {
		h.From = from
	}
	if h.Term > 10 {
		h.Term = 3 + h.Term%4
	}
	return h
}

func checkInvariants(t *testing.T, before, after Status) {
	t.Helper()
	switch {
	case after.Term < before.Term:
		t.Fatalf("term went back: %d -> %d", before.Term, after.Term)
	case after.Commit < before.Commit:
		t.Fatalf("commit went back: %d -> %d", before.Commit, after.Commit)
	case after.Commit > after.LastIndex:
		t.Fatalf("commit %d beyond last index %d", after.Commit, after.LastIndex)
	case after.Durable > after.LastIndex:
		t.Fatalf("durable %d beyond last index %d", after.Durable, after.LastIndex)
	case after.Term == before.Term && before.Vote != 0 && after.Vote != before.Vote:
		t.Fatalf("vote changed within term %d: %d -> %d", after.Term, before.Vote, after.Vote)
	case after.Role == messages.Role_ROLE_LEADER && after.Leader != 1:
		t.Fatalf("leader does not name itself")
	}
}

func fuzzStep(f *testing.F, seed proto.Message, fix func(proto.Message)) {
	b, _ := proto.Marshal(seed)
	for role := range byte(16) {
		f.Add(b, role, true)
	}
	f.Add([]byte{0xff, 0x01}, byte(0), false)
	f.Fuzz(func(t *testing.T, data []byte, role byte, fixIt bool) {
		c := fuzzCore(t, role)
		m := seed.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(data, m); err != nil {
			return
		}
		if fixIt {
			fix(m)
		}
		for range 2 {
			before := c.Status()
			_ = c.step(m)
			checkInvariants(t, before, c.Status())
			before = c.Status()
			c.tick(3)
			checkInvariants(t, before, c.Status())
		}
		c.take()
	})
}

func FuzzStepAppendEntries(f *testing.F) {
	fuzzStep(f, appendReq(2, 1, 4, 3, 2, 4, ents(4, 3, 4)...), func(m proto.Message) {
		a := m.(*messages.AppendEntriesRequest)
		a.Header = fixHeader(a.Header, 2)
	})
}

func FuzzStepVote(f *testing.F) {
	fuzzStep(f, &messages.VoteRequest{Header: hdr(2, 1, 4), LastLogIndex: 5, LastLogTerm: 3, PreVote: true}, func(m proto.Message) {
		v := m.(*messages.VoteRequest)
		v.Header = fixHeader(v.Header, 2)
	})
}

func FuzzStepVoteResponse(f *testing.F) {
	fuzzStep(f, &messages.VoteResponse{Header: hdr(2, 1, 4), Granted: true}, func(m proto.Message) {
		v := m.(*messages.VoteResponse)
		v.Header = fixHeader(v.Header, 3)
	})
}

func FuzzStepInstallSnapshot(f *testing.F) {
	fuzzStep(f, &messages.InstallSnapshotRequest{Header: hdr(2, 1, 4), Done: true, Data: []byte("abc"),
		Meta: &messages.SnapshotMeta{Index: 9, Term: 3, Id: "s", Size: 3, Membership: &messages.Membership{Voters: []uint64{1, 2, 3}}}},
		func(m proto.Message) {
			v := m.(*messages.InstallSnapshotRequest)
			v.Header = fixHeader(v.Header, 2)
		})
}

func FuzzStepTimeoutNow(f *testing.F) {
	fuzzStep(f, &messages.TimeoutNowRequest{Header: hdr(2, 1, 3)}, func(m proto.Message) {
		v := m.(*messages.TimeoutNowRequest)
		v.Header = fixHeader(v.Header, 2)
	})
}

// FuzzStepReport fuzzes the replication reports a leader receives.
func FuzzStepReport(f *testing.F) {
	fuzzStep(f, &messages.ReplicationReport{Term: 4, Peer: 2, MatchIndex: 6, Heard: true, ReadSeq: 1}, func(m proto.Message) {
		r := m.(*messages.ReplicationReport)
		if r.Term > 10 {
			r.Term = 4
		}
		if r.HigherTerm > 10 {
			r.HigherTerm = 0
		}
	})
}
