package core

import (
	"errors"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// testCore is a Core with a log whose entry i has term terms[i-1]; entry 1
// is the configuration of voters (and learners).
type testCore struct {
	t testing.TB
	*Core
	// out accumulates what the core emitted, with persists acknowledged
	// automatically unless hold is set.
	out  Ready
	hold bool
}

type coreOpt func(*Config, *messages.InitialState)

func withTerms(terms ...uint64) coreOpt {
	return func(_ *Config, st *messages.InitialState) {
		st.LastIndex = uint64(len(terms))
		st.TermRuns = nil
		for i, t := range terms {
			if n := len(st.TermRuns); n == 0 || st.TermRuns[n-1].Term != t {
				st.TermRuns = append(st.TermRuns, &messages.TermRun{FirstIndex: uint64(i + 1), Term: t})
			}
		}
		if st.HardState.Term < terms[len(terms)-1] {
			st.HardState.Term = terms[len(terms)-1]
		}
	}
}

func withHardState(term, vote, commit uint64) coreOpt {
	return func(_ *Config, st *messages.InitialState) {
		st.HardState = &messages.HardState{Term: term, Vote: vote, Commit: commit}
	}
}

func withLearners(ids ...uint64) coreOpt {
	return func(_ *Config, st *messages.InitialState) {
		m := st.Memberships[0].Membership
		m.Learners = append(m.Learners, ids...)
		for _, id := range ids {
			m.Addresses[id] = "addr"
		}
	}
}

func withMembership(m *messages.Membership, index uint64) coreOpt {
	return func(_ *Config, st *messages.InitialState) {
		st.Memberships = append(st.Memberships, &messages.MembershipEntry{Index: index, Term: 1, Membership: m})
	}
}

func withConfig(f func(*Config)) coreOpt {
	return func(c *Config, _ *messages.InitialState) { f(c) }
}

func newTestCore(t testing.TB, id uint64, voters []uint64, opts ...coreOpt) *testCore {
	t.Helper()
	m := &messages.Membership{Voters: voters, Addresses: map[uint64]string{}}
	for _, v := range voters {
		m.Addresses[v] = "addr"
	}
	st := &messages.InitialState{
		HardState:   &messages.HardState{Term: 1},
		FirstIndex:  1,
		LastIndex:   1,
		TermRuns:    []*messages.TermRun{{FirstIndex: 1, Term: 1}},
		Memberships: []*messages.MembershipEntry{{Index: 1, Term: 1, Membership: m}},
	}
	cfg := Config{ClusterID: "c", GroupID: 1, ID: id, ElectionTicks: 10, HeartbeatTicks: 1,
		Rand: rand.New(rand.NewPCG(1, id))}
	for _, o := range opts {
		o(&cfg, st)
	}
	c, err := New(cfg, st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tc := &testCore{t: t, Core: c}
	tc.flush()
	return tc
}

// flush drains the core, acknowledging persists unless hold is set.
func (tc *testCore) flush() {
	tc.t.Helper()
	for tc.HasReady() {
		rd := tc.Ready()
		tc.out.Persist = append(tc.out.Persist, rd.Persist...)
		tc.out.Storage = append(tc.out.Storage, rd.Storage...)
		tc.out.Send = append(tc.out.Send, rd.Send...)
		tc.out.Replicate = append(tc.out.Replicate, rd.Replicate...)
		tc.out.Apply = append(tc.out.Apply, rd.Apply...)
		tc.out.Responses = append(tc.out.Responses, rd.Responses...)
		if !tc.hold {
			for _, ap := range rd.Persist {
				tc.ack(ap)
			}
		}
	}
}

func (tc *testCore) ack(ap *messages.StorageAppend) {
	tc.t.Helper()
	if err := tc.Core.Step(&messages.StorageAppendResult{GroupId: 1, Seq: ap.Seq}); err != nil {
		tc.t.Fatalf("append result: %v", err)
	}
}

// take returns and clears what the core emitted.
func (tc *testCore) take() Ready {
	tc.flush()
	out := tc.out
	tc.out = Ready{}
	return out
}

// step steps m and flushes; it returns Step's error.
func (tc *testCore) step(m proto.Message) error {
	tc.t.Helper()
	err := tc.Core.Step(m)
	tc.flush()
	return err
}

func (tc *testCore) mustStep(m proto.Message) {
	tc.t.Helper()
	if err := tc.step(m); err != nil {
		tc.t.Fatalf("step %T: %v", m, err)
	}
}

func (tc *testCore) tick(n int) {
	for range n {
		tc.Tick()
	}
	tc.flush()
}

// elect makes the core leader with votes from the given voters.
func (tc *testCore) elect(from ...uint64) {
	tc.t.Helper()
	tc.Campaign()
	tc.flush()
	for _, f := range from {
		st := tc.Status()
		if st.Role == messages.Role_ROLE_LEADER {
			break
		}
		pre := st.Role == messages.Role_ROLE_PRE_CANDIDATE
		term := st.Term
		if pre {
			term++
		}
		tc.mustStep(&messages.VoteResponse{Header: hdr(f, tc.ID(), term), Granted: true, PreVote: pre})
		if pre && tc.Status().Role == messages.Role_ROLE_CANDIDATE {
			for _, g := range from {
				if tc.Status().Role != messages.Role_ROLE_CANDIDATE {
					break
				}
				tc.mustStep(&messages.VoteResponse{Header: hdr(g, tc.ID(), tc.Status().Term), Granted: true})
			}
		}
	}
	if r := tc.Status().Role; r != messages.Role_ROLE_LEADER {
		tc.t.Fatalf("not leader after election: %v", r)
	}
	tc.take()
}

// report steps a replication report of peer with match index.
func (tc *testCore) report(peer, match uint64) {
	tc.t.Helper()
	tc.mustStep(&messages.ReplicationReport{Term: tc.Status().Term, Peer: peer, MatchIndex: match, Heard: true, Reachable: true})
}

func hdr(from, to, term uint64) *messages.Header {
	return &messages.Header{ClusterId: "c", GroupId: 1, From: from, To: to, Term: term}
}

func ent(index, term uint64) *messages.Entry {
	return &messages.Entry{Index: index, Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte("d")}
}

func ents(from uint64, terms ...uint64) []*messages.Entry {
	var out []*messages.Entry
	for k, t := range terms {
		out = append(out, ent(from+uint64(k), t))
	}
	return out
}

func appendReq(from, to, term, prev, prevTerm, commit uint64, es ...*messages.Entry) *messages.AppendEntriesRequest {
	return &messages.AppendEntriesRequest{Header: hdr(from, to, term), PrevLogIndex: prev, PrevLogTerm: prevTerm,
		LeaderCommit: commit, Entries: es}
}

func voteReq(from, to, term, lastIndex, lastTerm uint64) *messages.VoteRequest {
	return &messages.VoteRequest{Header: hdr(from, to, term), LastLogIndex: lastIndex, LastLogTerm: lastTerm}
}

func sentOf[T proto.Message](rd Ready) []T {
	var out []T
	for _, m := range rd.Send {
		if v, ok := m.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func replicateOf[T proto.Message](rd Ready) []T {
	var out []T
	for _, m := range rd.Replicate {
		if v, ok := m.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func responseOf[T proto.Message](rd Ready, h Handle) (T, bool) {
	var zero T
	for _, r := range rd.Responses {
		if r.Handle == h {
			v, ok := r.Msg.(T)
			return v, ok
		}
	}
	return zero, false
}

func isCode(err error, code messages.ErrorCode) bool {
	return errors.Is(err, &StepError{Code: code})
}
