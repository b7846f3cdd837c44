// Package storetest is the conformance suite of store.Store: every
// implementation runs it (the Pebble store and the in-memory store do, in
// their own tests), and so should any other.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Harness { return newMyHarness(t) })
//	}
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// Options is the identity every harness opens its store with.
var Options = store.Options{ClusterID: "storetest", NodeID: 7, Incarnation: 0xfeed}

// Harness drives one store implementation over one simulated disk.
type Harness interface {
	// Open creates the store on a fresh disk, with Options.
	Open(t *testing.T) store.Store
	// Reopen closes the current store and opens the same disk again.
	Reopen(t *testing.T) store.Store
	// ReopenAs closes the current store and opens the disk with o.
	ReopenAs(t *testing.T, o store.Options) (store.Store, error)
	// Crash abandons the current store as a power loss would: writes that
	// were not synced are lost. It returns the store reopened on what
	// survived.
	Crash(t *testing.T) store.Store
	// FailSyncs makes every later sync of the current store fail.
	FailSyncs(t *testing.T)
	// CorruptEntry closes the store, damages the stored record of group at
	// index, and returns the store reopened.
	CorruptEntry(t *testing.T, group, index uint64) store.Store
	// CorruptSnapshot damages the body of group's latest snapshot.
	CorruptSnapshot(t *testing.T, group uint64)
}

// Factory makes a harness for one test.
type Factory func(t *testing.T) Harness

// Run runs the suite.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"EmptyGroup", testEmptyGroup},
		{"AppendAndRead", testAppendAndRead},
		{"AppendRules", testAppendRules},
		{"HardState", testHardState},
		{"TruncateUncommittedSuffix", testTruncate},
		{"ByteBudget", testByteBudget},
		{"GroupsAreIsolated", testGroups},
		{"Memberships", testMemberships},
		{"ReopenAfterClose", testReopen},
		{"CrashKeepsSyncedAppends", testCrash},
		{"FailedSyncFailsTheStore", testFailedSync},
		{"CorruptEntry", testCorruptEntry},
		{"WrongIdentity", testWrongIdentity},
		{"SnapshotWriteReadVerify", testSnapshot},
		{"SnapshotPurge", testSnapshotPurge},
		{"SnapshotInstall", testSnapshotInstall},
		{"SnapshotNeverGoesBack", testSnapshotBackwards},
		{"SnapshotCorrupt", testSnapshotCorrupt},
		{"ConcurrentReadsDuringWrites", testConcurrentReads},
		{"CommitterGroupCommit", testCommitter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f(t)) })
	}
}

// ---- building blocks ----

// ent builds entries lo..lo+len(terms)-1 with the given terms and a payload
// naming each.
func ent(lo uint64, terms ...uint64) []*messages.Entry {
	out := make([]*messages.Entry, len(terms))
	for i, term := range terms {
		idx := lo + uint64(i)
		out[i] = &messages.Entry{Index: idx, Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL,
			Data: []byte(fmt.Sprintf("entry %d of term %d", idx, term))}
	}
	return out
}

func hs(term, vote, commit uint64) *messages.HardState {
	return &messages.HardState{Term: term, Vote: vote, Commit: commit}
}

// appendOK appends and fails the test unless every request succeeds.
func appendOK(t *testing.T, s store.Store, reqs ...*messages.StorageAppend) []*messages.StorageAppendResult {
	t.Helper()
	res, err := s.Append(reqs)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	for i, r := range res {
		if r.Error != nil {
			t.Fatalf("append %d (group %d): %v", i, reqs[i].GroupId, r.Error)
		}
	}
	return res
}

func req(group uint64, h *messages.HardState, ents []*messages.Entry) *messages.StorageAppend {
	return &messages.StorageAppend{GroupId: group, HardState: h, Entries: ents}
}

// appendCode appends one request and returns its result's error code.
func appendCode(t *testing.T, s store.Store, r *messages.StorageAppend) messages.ErrorCode {
	t.Helper()
	res, err := s.Append([]*messages.StorageAppend{r})
	if err != nil {
		return store.CodeOf(err)
	}
	return res[0].GetError().GetCode()
}

// wantLog checks the bounds and every entry's index and term of group.
func wantLog(t *testing.T, s store.Store, group, first uint64, terms ...uint64) {
	t.Helper()
	last := first + uint64(len(terms)) - 1
	if got, err := s.FirstIndex(group); err != nil || got != first {
		t.Fatalf("group %d first index = %d, %v; want %d", group, got, err, first)
	}
	if got, err := s.LastIndex(group); err != nil || got != last {
		t.Fatalf("group %d last index = %d, %v; want %d", group, got, err, last)
	}
	if len(terms) == 0 {
		return
	}
	ents, err := s.Entries(group, first, last+1, 0)
	if err != nil {
		t.Fatalf("group %d entries %d..%d: %v", group, first, last, err)
	}
	if len(ents) != len(terms) {
		t.Fatalf("group %d: read %d entries, want %d", group, len(ents), len(terms))
	}
	for i, e := range ents {
		idx := first + uint64(i)
		if e.Index != idx || e.Term != terms[i] {
			t.Fatalf("group %d entry %d = %d/%d, want %d/%d", group, i, e.Index, e.Term, idx, terms[i])
		}
		if want := fmt.Sprintf("entry %d of term %d", idx, terms[i]); string(e.Data) != want && e.Kind == messages.EntryKind_ENTRY_KIND_NORMAL {
			t.Fatalf("group %d entry %d data %q, want %q", group, idx, e.Data, want)
		}
		if tm, err := s.Term(group, idx); err != nil || tm != terms[i] {
			t.Fatalf("group %d term(%d) = %d, %v; want %d", group, idx, tm, err, terms[i])
		}
	}
}

func wantCode(t *testing.T, what string, err error, code messages.ErrorCode) {
	t.Helper()
	if got := store.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %v), want code %v", what, err, got, code)
	}
}

func load(t *testing.T, s store.Store, group uint64) *messages.InitialState {
	t.Helper()
	st, err := s.Load(group)
	if err != nil {
		t.Fatalf("load group %d: %v", group, err)
	}
	return st
}

func writeSnapshot(t *testing.T, s store.Store, group uint64, meta *messages.SnapshotMeta, body []byte, install bool) *messages.SnapshotMeta {
	t.Helper()
	w, err := s.CreateSnapshot(group, meta)
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	// Write in pieces, as a stream does.
	for off := 0; off < len(body); off += 7 {
		if _, err := w.Write(body[off:min(off+7, len(body))]); err != nil {
			t.Fatalf("write snapshot: %v", err)
		}
	}
	var m *messages.SnapshotMeta
	if install {
		m, err = w.Install()
	} else {
		m, err = w.Commit()
	}
	if err != nil {
		t.Fatalf("finish snapshot %d/%d (install %v): %v", meta.Index, meta.Term, install, err)
	}
	return m
}

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/7)
	}
	return b
}

func members(voters ...uint64) *messages.Membership {
	m := &messages.Membership{Voters: voters, Addresses: map[uint64]string{}}
	for _, v := range voters {
		m.Addresses[v] = fmt.Sprintf("node%d:9000", v)
	}
	return m
}

// ---- the suite ----

func testEmptyGroup(t *testing.T, h Harness) {
	s := h.Open(t)
	st := load(t, s, 1)
	if st.FirstIndex != 1 || st.LastIndex != 0 || st.Snapshot != nil || len(st.TermRuns) != 0 || len(st.Memberships) != 0 {
		t.Fatalf("empty group loads as %v; want first 1, last 0, nothing else", st)
	}
	if st.HardState.GetTerm() != 0 || st.HardState.GetVote() != 0 || st.HardState.GetCommit() != 0 {
		t.Fatalf("empty group hard state %v, want zero", st.HardState)
	}
	id := st.Identity
	if id.ClusterId != Options.ClusterID || id.NodeId != Options.NodeID || id.GroupId != 1 || id.Incarnation == 0 {
		t.Fatalf("identity %v; want cluster %q node %d group 1 and an incarnation", id, Options.ClusterID, Options.NodeID)
	}
	if tm, err := s.Term(1, 0); err != nil || tm != 0 {
		t.Fatalf("term(0) = %d, %v; want 0", tm, err)
	}
	_, err := s.Entries(1, 1, 2, 0)
	wantCode(t, "reading past the end of an empty log", err, messages.ErrorCode_ERROR_CODE_INVALID)
	_, err = s.Load(0)
	wantCode(t, "group 0", err, messages.ErrorCode_ERROR_CODE_INVALID)
}

func testAppendAndRead(t *testing.T, h Harness) {
	s := h.Open(t)
	res := appendOK(t, s, &messages.StorageAppend{GroupId: 1, Seq: 9, HardState: hs(3, 1, 0), Entries: ent(1, 1, 1, 2, 2, 2, 3)})
	if res[0].LastIndex != 6 || res[0].Seq != 9 || res[0].GroupId != 1 {
		t.Fatalf("append result %v, want group 1 seq 9 last index 6", res[0])
	}
	appendOK(t, s, req(1, nil, ent(7, 3, 3)))
	wantLog(t, s, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3)
	st := load(t, s, 1)
	want := []*messages.TermRun{{FirstIndex: 1, Term: 1}, {FirstIndex: 3, Term: 2}, {FirstIndex: 6, Term: 3}}
	if len(st.TermRuns) != len(want) {
		t.Fatalf("term runs %v, want %v", st.TermRuns, want)
	}
	for i := range want {
		if !proto.Equal(st.TermRuns[i], want[i]) {
			t.Fatalf("term runs %v, want %v", st.TermRuns, want)
		}
	}
	// A sub-range, and a range that runs off the end.
	ents, err := s.Entries(1, 3, 5, 0)
	if err != nil || len(ents) != 2 || ents[0].Index != 3 || ents[1].Index != 4 {
		t.Fatalf("entries 3..4 = %v, %v", ents, err)
	}
	_, err = s.Entries(1, 5, 10, 0)
	wantCode(t, "reading past the last index", err, messages.ErrorCode_ERROR_CODE_INVALID)
	_, err = s.Term(1, 9)
	wantCode(t, "term past the last index", err, messages.ErrorCode_ERROR_CODE_INVALID)
	if ents, err := s.Entries(1, 4, 4, 0); err != nil || len(ents) != 0 {
		t.Fatalf("empty range = %v, %v", ents, err)
	}
	// A hard-state-only append and an empty one change no entries.
	appendOK(t, s, req(1, hs(3, 1, 4), nil), req(1, nil, nil))
	wantLog(t, s, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3)
}

func testAppendRules(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(2, 0, 0), ent(1, 1, 1, 2)))
	tests := []struct {
		name string
		r    *messages.StorageAppend
	}{
		{"a gap after the last index", req(1, nil, ent(5, 2))},
		{"entries that are not contiguous", req(1, nil, []*messages.Entry{ent(4, 2)[0], ent(6, 2)[0]})},
		{"terms that go down within the request", req(1, nil, ent(4, 2, 1))},
		{"a term below the entry before it", req(1, nil, ent(4, 1))},
		{"a term newer than the node's term", req(1, nil, ent(4, 3))},
		{"term zero", req(1, nil, ent(4, 0))},
		{"index zero", req(1, nil, ent(0, 1))},
		{"group zero", req(0, nil, ent(4, 2))},
		{"a nil entry", req(1, nil, []*messages.Entry{nil})},
		{"an entry that does not encode (membership address not UTF-8)", req(1, nil, func() []*messages.Entry {
			e := ent(4, 2)
			e[0].Kind = messages.EntryKind_ENTRY_KIND_MEMBERSHIP
			e[0].Membership = &messages.Membership{Voters: []uint64{1}, Addresses: map[uint64]string{1: "\xff\xfe"}}
			return e
		}())},
		{"an entry that does not encode (command type URL not UTF-8)", req(1, nil, func() []*messages.Entry {
			e := ent(4, 2)
			e[0].Command = &anypb.Any{TypeUrl: "type.googleapis.com/\xff"}
			return e
		}())},
	}
	for _, tc := range tests {
		if code := appendCode(t, s, tc.r); code != messages.ErrorCode_ERROR_CODE_INVALID {
			t.Errorf("%s: code %v, want INVALID", tc.name, code)
		}
	}
	wantLog(t, s, 1, 1, 1, 1, 2)
	// One bad request in a batch fails alone; the ones around it are written.
	res, err := s.Append([]*messages.StorageAppend{req(1, nil, ent(4, 2)), req(1, nil, ent(9, 2)), req(1, nil, ent(5, 2))})
	if err != nil {
		t.Fatalf("batch with one bad request: %v", err)
	}
	if res[0].Error != nil || res[1].GetError().GetCode() != messages.ErrorCode_ERROR_CODE_INVALID || res[2].Error != nil {
		t.Fatalf("results %v; want ok, INVALID, ok", res)
	}
	if res[2].LastIndex != 5 {
		t.Fatalf("last index after the batch %d, want 5", res[2].LastIndex)
	}
	wantLog(t, s, 1, 1, 1, 1, 2, 2, 2)
}

func testHardState(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(5, 3, 0), nil))
	if got := load(t, s, 1).HardState; !proto.Equal(got, hs(5, 3, 0)) {
		t.Fatalf("hard state %v, want term 5 vote 3", got)
	}
	// Pitfall: two different votes in one term elect two leaders.
	if code := appendCode(t, s, req(1, hs(5, 2, 0), nil)); code != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("changing the vote within a term: code %v, want INVALID", code)
	}
	if code := appendCode(t, s, req(1, hs(4, 0, 0), nil)); code != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("a term going backwards: code %v, want INVALID", code)
	}
	// A new term clears the vote; the commit index never goes backwards.
	appendOK(t, s, req(1, hs(6, 0, 0), ent(1, 6, 6)))
	appendOK(t, s, req(1, hs(6, 6, 2), nil))
	appendOK(t, s, req(1, hs(6, 6, 1), nil))
	if got := load(t, s, 1).HardState; !proto.Equal(got, hs(6, 6, 2)) {
		t.Fatalf("hard state %v, want term 6 vote 6 commit 2", got)
	}
	s = h.Reopen(t)
	if got := load(t, s, 1).HardState; !proto.Equal(got, hs(6, 6, 2)) {
		t.Fatalf("hard state after reopen %v, want term 6 vote 6 commit 2", got)
	}
}

func testTruncate(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 1, 3), ent(1, 1, 1, 1, 1, 1, 1)))
	// A new leader's entries from index 5 replace the uncommitted 5..6.
	appendOK(t, s, req(1, hs(2, 0, 3), ent(5, 2)))
	wantLog(t, s, 1, 1, 1, 1, 1, 1, 2)
	// Rewriting committed entries with the same terms is harmless.
	appendOK(t, s, req(1, nil, ent(2, 1, 1, 1, 2, 2)))
	wantLog(t, s, 1, 1, 1, 1, 1, 1, 2, 2)
	// Pitfall: replacing a committed entry takes back an acknowledged write.
	if code := appendCode(t, s, req(1, nil, ent(3, 2))); code != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("replacing committed entry 3: code %v, want INVALID", code)
	}
	wantLog(t, s, 1, 1, 1, 1, 1, 1, 2, 2)
	// Truncation survives a reopen: the removed entries stay removed.
	appendOK(t, s, req(1, hs(3, 0, 3), ent(4, 3)))
	s = h.Reopen(t)
	wantLog(t, s, 1, 1, 1, 1, 1, 3)
	if runs := load(t, s, 1).TermRuns; len(runs) != 2 || runs[1].FirstIndex != 4 || runs[1].Term != 3 {
		t.Fatalf("term runs after truncation %v, want 1@1, 3@4", runs)
	}
}

func testByteBudget(t *testing.T, h Harness) {
	s := h.Open(t)
	ents := ent(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	for _, e := range ents {
		e.Data = bytes.Repeat([]byte{'x'}, 100)
	}
	appendOK(t, s, req(1, hs(1, 0, 0), ents))
	size := uint64(proto.Size(ents[0]))
	tests := []struct {
		maxBytes uint64
		want     int
	}{
		{0, 9},            // no limit
		{size * 3, 3},     // exactly three fit
		{size*3 + 1, 3},   // a fourth does not
		{size*3 - 1, 2},   // the third does not
		{1, 1},            // always at least one
		{size * 100, 9},   // more than the range
		{size * 9, 9},     // exactly the range
		{size * 9 / 2, 4}, // half
	}
	for _, tc := range tests {
		got, err := s.Entries(1, 1, 10, tc.maxBytes)
		if err != nil || len(got) != tc.want {
			t.Errorf("max bytes %d: %d entries, %v; want %d", tc.maxBytes, len(got), err, tc.want)
		}
	}
}

func testGroups(t *testing.T, h Harness) {
	s := h.Open(t)
	// One batch, interleaving groups and several requests for one group.
	appendOK(t, s,
		req(1, hs(1, 0, 0), ent(1, 1, 1)),
		req(2, hs(4, 2, 0), ent(1, 4)),
		req(1, nil, ent(3, 1)),
		req(3, hs(1, 0, 0), ent(1, 1, 1, 1)),
	)
	wantLog(t, s, 1, 1, 1, 1, 1)
	wantLog(t, s, 2, 1, 4)
	wantLog(t, s, 3, 1, 1, 1, 1)
	// Truncating group 3 leaves group 1 alone.
	appendOK(t, s, req(3, hs(2, 0, 0), ent(2, 2)))
	wantLog(t, s, 3, 1, 1, 2)
	wantLog(t, s, 1, 1, 1, 1, 1)
	if got := load(t, s, 2).HardState; got.Term != 4 || got.Vote != 2 {
		t.Fatalf("group 2 hard state %v", got)
	}
	if got := load(t, s, 1).HardState; got.Term != 1 || got.Vote != 0 {
		t.Fatalf("group 1 hard state %v", got)
	}
	s = h.Reopen(t)
	wantLog(t, s, 1, 1, 1, 1, 1)
	wantLog(t, s, 2, 1, 4)
	wantLog(t, s, 3, 1, 1, 2)
	wantLog(t, s, 4, 1)
}

func testMemberships(t *testing.T, h Harness) {
	s := h.Open(t)
	m := func(idx, term uint64, voters ...uint64) *messages.Entry {
		return &messages.Entry{Index: idx, Term: term, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: members(voters...)}
	}
	log := []*messages.Entry{m(1, 1, 1), ent(2, 1)[0], m(3, 1, 1, 2), ent(4, 1)[0], m(5, 1, 1, 2, 3)}
	appendOK(t, s, req(1, hs(1, 1, 4), log))
	check := func(what string, want ...uint64) {
		t.Helper()
		got := load(t, s, 1).Memberships
		if len(got) != len(want) {
			t.Fatalf("%s: memberships %v, want at %v", what, got, want)
		}
		for i, g := range got {
			if g.Index != want[i] || len(g.Membership.Voters) == 0 || g.Membership.Addresses[1] != "node1:9000" {
				t.Fatalf("%s: membership %d = %v, want index %d with its configuration", what, i, g, want[i])
			}
		}
	}
	check("appended", 1, 3, 5)
	// The uncommitted configuration at 5 is replaced, and so leaves the list.
	appendOK(t, s, req(1, hs(2, 0, 4), ent(5, 2)))
	check("after truncation", 1, 3)
	s = h.Reopen(t)
	check("after reopen", 1, 3)
	// A snapshot at 3 covers the configurations at 1 and 3 (its meta
	// carries the one in force); only later ones are listed.
	writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 3, Term: 1, Membership: members(1, 2), MembershipIndex: 3}, body(10), false)
	check("after a snapshot at 3")
	appendOK(t, s, req(1, nil, []*messages.Entry{m(6, 2, 1, 2, 4)}))
	check("after a new configuration", 6)
	if _, err := s.Purge(1, 3); err != nil {
		t.Fatal(err)
	}
	s = h.Reopen(t)
	check("after purge and reopen", 6)
}

func testReopen(t *testing.T, h Harness) {
	s := h.Open(t)
	inc := s.Identity().Incarnation
	appendOK(t, s, req(1, hs(3, 2, 2), ent(1, 1, 2, 3)), req(5, hs(1, 1, 0), ent(1, 1)))
	meta := writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 2, Term: 2, Membership: members(1, 2, 3), MembershipIndex: 1}, body(1000), false)
	for i := 0; i < 2; i++ {
		s = h.Reopen(t)
		if got := s.Identity().Incarnation; got != inc {
			t.Fatalf("incarnation changed across reopen: %x, want %x", got, inc)
		}
		wantLog(t, s, 1, 1, 1, 2, 3)
		wantLog(t, s, 5, 1, 1)
		st := load(t, s, 1)
		if !proto.Equal(st.HardState, hs(3, 2, 2)) {
			t.Fatalf("hard state %v", st.HardState)
		}
		if !proto.Equal(st.Snapshot, meta) {
			t.Fatalf("snapshot after reopen %v, want %v", st.Snapshot, meta)
		}
		r, err := s.OpenSnapshot(1, meta.Id)
		if err != nil {
			t.Fatalf("open snapshot after reopen: %v", err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if !bytes.Equal(got, body(1000)) {
			t.Fatalf("snapshot body changed across reopen")
		}
	}
}

func testCrash(t *testing.T, h Harness) {
	s := h.Open(t)
	for i := uint64(1); i <= 20; i++ {
		appendOK(t, s, req(1, hs(1, 1, 0), ent(i, 1)))
	}
	appendOK(t, s, req(1, hs(2, 0, 0), ent(15, 2)))
	s = h.Crash(t)
	// Every acknowledged append is there, and the truncation too.
	wantLog(t, s, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2)
	if got := load(t, s, 1).HardState; got.Term != 2 {
		t.Fatalf("hard state after crash %v, want term 2", got)
	}
	// The store goes on after a crash.
	appendOK(t, s, req(1, nil, ent(16, 2)))
	s = h.Crash(t)
	wantLog(t, s, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2)
}

func testFailedSync(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 0), ent(1, 1, 1)))
	h.FailSyncs(t)
	res, err := s.Append([]*messages.StorageAppend{req(1, nil, ent(3, 1)), req(2, hs(1, 0, 0), ent(1, 1))})
	wantCode(t, "append with a failing sync", err, messages.ErrorCode_ERROR_CODE_STORAGE_FAILED)
	for i, r := range res {
		if r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
			t.Fatalf("result %d of a failed batch: %v, want STORAGE_FAILED", i, r)
		}
	}
	if s.Err() == nil {
		t.Fatalf("store does not report its failure")
	}
	// Failed for good: a later write is refused without trying (fsyncgate:
	// a retried fsync can succeed without the lost pages).
	_, err = s.Append([]*messages.StorageAppend{req(1, nil, ent(3, 1))})
	wantCode(t, "append after a failure", err, messages.ErrorCode_ERROR_CODE_STORAGE_FAILED)
	if !strings.Contains(err.Error(), "storage failed") {
		t.Fatalf("error %q does not say why", err)
	}
	_, err = s.Purge(1, 1)
	wantCode(t, "purge after a failure", err, messages.ErrorCode_ERROR_CODE_STORAGE_FAILED)
	if _, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 1, Term: 1}); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
		t.Fatalf("snapshot after a failure: %v, want STORAGE_FAILED", err)
	}
	// What was acknowledged survives; what failed is not there.
	s = h.Crash(t)
	wantLog(t, s, 1, 1, 1, 1)
	wantLog(t, s, 2, 1)
}

func testCorruptEntry(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 0), ent(1, 1, 1, 1, 1)), req(2, hs(1, 0, 0), ent(1, 1, 1)))
	s = h.CorruptEntry(t, 1, 3)
	_, err := s.Load(1)
	wantCode(t, "load with a corrupt entry", err, messages.ErrorCode_ERROR_CODE_CORRUPT)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "group 1 index 3") {
		t.Fatalf("error %q does not name group 1 index 3", err)
	}
	_, err = s.Entries(1, 1, 6, 0)
	wantCode(t, "reading a corrupt entry", err, messages.ErrorCode_ERROR_CODE_CORRUPT)
	// Other groups are unaffected.
	wantLog(t, s, 2, 1, 1, 1)
}

func testWrongIdentity(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 0), ent(1, 1)))
	for _, o := range []store.Options{
		{ClusterID: "other", NodeID: Options.NodeID},
		{ClusterID: Options.ClusterID, NodeID: Options.NodeID + 1},
	} {
		_, err := h.ReopenAs(t, o)
		wantCode(t, fmt.Sprintf("reopen as %v", o), err, messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER)
		if !strings.Contains(err.Error(), Options.ClusterID) {
			t.Fatalf("error %q does not name the stored identity", err)
		}
	}
	s = h.Reopen(t)
	wantLog(t, s, 1, 1, 1)
}

func testSnapshot(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(2, 0, 5), ent(1, 1, 1, 2, 2, 2)))
	if m, err := s.Snapshot(1); err != nil || m != nil {
		t.Fatalf("snapshot of a group without one = %v, %v", m, err)
	}
	b := body(10000)
	in := &messages.SnapshotMeta{Index: 4, Term: 2, Membership: members(1, 2, 3), MembershipIndex: 1}
	meta := writeSnapshot(t, s, 1, in, b, false)
	if meta.Id == "" || meta.Size != uint64(len(b)) || meta.Checksum == 0 || meta.Index != 4 || meta.Term != 2 || !proto.Equal(meta.Membership, in.Membership) {
		t.Fatalf("committed meta %v", meta)
	}
	if got, err := s.Snapshot(1); err != nil || !proto.Equal(got, meta) {
		t.Fatalf("latest snapshot %v, %v; want %v", got, err, meta)
	}
	r, err := s.OpenSnapshot(1, meta.Id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("snapshot body read back differs (%d bytes, %v)", len(got), err)
	}
	part := make([]byte, 10)
	if _, err := r.ReadAt(part, 5000); err != nil || !bytes.Equal(part, b[5000:5010]) {
		t.Fatalf("ReadAt: %v", err)
	}
	r.Close()
	// Chunks at offsets, as a leader streams it.
	var assembled []byte
	for off := uint64(0); ; {
		m, data, done, err := s.ReadSnapshotChunk(1, meta.Id, off, 3000)
		if err != nil || !proto.Equal(m, meta) {
			t.Fatalf("chunk at %d: %v", off, err)
		}
		assembled = append(assembled, data...)
		off += uint64(len(data))
		if done {
			break
		}
		if len(data) != 3000 {
			t.Fatalf("chunk at %d has %d bytes before the end", off, len(data))
		}
	}
	if !bytes.Equal(assembled, b) {
		t.Fatalf("assembled chunks differ from the body")
	}
	if _, _, done, err := s.ReadSnapshotChunk(1, meta.Id, uint64(len(b)), 10); err != nil || !done {
		t.Fatalf("chunk at the end: done %v, %v", done, err)
	}
	if _, _, _, err := s.ReadSnapshotChunk(1, meta.Id, uint64(len(b))+1, 10); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("chunk past the end: %v, want INVALID", err)
	}
	if _, err := s.OpenSnapshot(1, "nope"); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("open unknown snapshot: %v, want INVALID", err)
	}
	// A newer snapshot replaces it; the old id is gone.
	meta2 := writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 5, Term: 2}, body(10), false)
	if meta2.Id == meta.Id {
		t.Fatalf("two snapshots share id %q", meta.Id)
	}
	if _, err := s.OpenSnapshot(1, meta.Id); err == nil {
		t.Fatalf("replaced snapshot still opens")
	}
	// An aborted snapshot leaves nothing behind.
	w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 5, Term: 2})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	w.Abort()
	if got, _ := s.Snapshot(1); !proto.Equal(got, meta2) {
		t.Fatalf("after abort the latest is %v, want %v", got, meta2)
	}
	// A local snapshot must be of the local log.
	w, _ = s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 9, Term: 2})
	w.Write([]byte("x"))
	if _, err := w.Commit(); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("committing a snapshot past the log: %v, want INVALID", err)
	}
	// A snapshot that was never committed does not survive a crash.
	w, _ = s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 5, Term: 2})
	w.Write([]byte("lost"))
	s = h.Crash(t)
	if got, _ := s.Snapshot(1); !proto.Equal(got, meta2) {
		t.Fatalf("after a crash the latest is %v, want %v", got, meta2)
	}
}

func testSnapshotPurge(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(3, 0, 8), ent(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3)))
	_, err := s.Purge(1, 3)
	wantCode(t, "purge without a snapshot", err, messages.ErrorCode_ERROR_CODE_INVALID)
	writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 6, Term: 3}, body(100), false)
	_, err = s.Purge(1, 7)
	wantCode(t, "purge past the snapshot", err, messages.ErrorCode_ERROR_CODE_INVALID)
	first, err := s.Purge(1, 4)
	if err != nil || first != 5 {
		t.Fatalf("purge to 4: first %d, %v; want 5", first, err)
	}
	wantLog(t, s, 1, 5, 2, 3, 3, 3, 3, 3)
	_, err = s.Entries(1, 4, 6, 0)
	wantCode(t, "reading purged entries", err, messages.ErrorCode_ERROR_CODE_COMPACTED)
	if !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("errors.Is(%v, ErrCompacted) is false", err)
	}
	_, err = s.Term(1, 3)
	wantCode(t, "term of a purged entry", err, messages.ErrorCode_ERROR_CODE_COMPACTED)
	if runs := load(t, s, 1).TermRuns; len(runs) != 2 || runs[0].FirstIndex != 5 || runs[0].Term != 2 {
		t.Fatalf("term runs after purge %v, want 2@5, 3@6", runs)
	}
	// Purging again below the first index is a no-op.
	if first, err := s.Purge(1, 2); err != nil || first != 5 {
		t.Fatalf("purge below first: %d, %v", first, err)
	}
	first, err = s.Purge(1, 6)
	if err != nil || first != 7 {
		t.Fatalf("purge to the snapshot: %d, %v", first, err)
	}
	// The term at the snapshot's index is known after its entry is purged.
	if tm, err := s.Term(1, 6); err != nil || tm != 3 {
		t.Fatalf("term at the snapshot index = %d, %v; want 3", tm, err)
	}
	// Appends continue after it, and cannot go below it.
	appendOK(t, s, req(1, nil, ent(11, 3)))
	_, err = s.Append([]*messages.StorageAppend{req(1, nil, ent(6, 3))})
	if code := appendCode(t, s, req(1, nil, ent(6, 3))); code != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("append at the snapshot index: %v, want INVALID", code)
	}
	s = h.Reopen(t)
	wantLog(t, s, 1, 7, 3, 3, 3, 3, 3)
	// With a snapshot covering the whole log, purging everything leaves an
	// empty log whose bounds come from the snapshot.
	writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 11, Term: 3}, body(10), false)
	if first, err := s.Purge(1, 11); err != nil || first != 12 {
		t.Fatalf("purge everything: %d, %v", first, err)
	}
	s = h.Crash(t)
	st := load(t, s, 1)
	if st.FirstIndex != 12 || st.LastIndex != 11 || st.Snapshot.GetIndex() != 11 || len(st.TermRuns) != 0 {
		t.Fatalf("empty log after purge loads as first %d last %d snapshot %v runs %v", st.FirstIndex, st.LastIndex, st.Snapshot, st.TermRuns)
	}
	appendOK(t, s, req(1, nil, ent(12, 3)))
	wantLog(t, s, 1, 12, 3)
}

func testSnapshotInstall(t *testing.T, h Harness) {
	tests := []struct {
		name      string
		log       []uint64 // terms of entries 1..
		snapIndex uint64
		snapTerm  uint64
		wantFirst uint64
		wantTerms []uint64
	}{
		// The follower has the snapshot's last entry: it keeps what follows.
		{"matching entry keeps the suffix", []uint64{1, 1, 2, 2, 2, 2}, 4, 2, 5, []uint64{2, 2}},
		// Its entry at the snapshot index has another term: all goes.
		{"conflicting entry discards the log", []uint64{1, 1, 2, 2, 2, 2}, 4, 3, 5, nil},
		// The follower is far behind: the log is replaced.
		{"short log is discarded", []uint64{1, 1}, 10, 3, 11, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := h.Open(t)
			appendOK(t, s, req(1, hs(3, 0, 1), ent(1, tc.log...)))
			b := body(5000)
			// A received snapshot arrives with the leader's size and checksum.
			meta := &messages.SnapshotMeta{Index: tc.snapIndex, Term: tc.snapTerm, Membership: members(1, 2), MembershipIndex: 1,
				Size: uint64(len(b)), Checksum: crcOf(b)}
			got := writeSnapshot(t, s, 1, meta, b, true)
			for round := 0; round < 2; round++ {
				if round == 1 {
					s = h.Crash(t)
				}
				st := load(t, s, 1)
				if !proto.Equal(st.Snapshot, got) || st.FirstIndex != tc.wantFirst || st.LastIndex != tc.wantFirst+uint64(len(tc.wantTerms))-1 {
					t.Fatalf("round %d: after install loads snapshot %v first %d last %d", round, st.Snapshot, st.FirstIndex, st.LastIndex)
				}
				if st.HardState.Commit < tc.snapIndex {
					t.Fatalf("round %d: commit %d below the installed snapshot %d", round, st.HardState.Commit, tc.snapIndex)
				}
				wantLog(t, s, 1, tc.wantFirst, tc.wantTerms...)
				if tm, err := s.Term(1, tc.snapIndex); err != nil || tm != tc.snapTerm {
					t.Fatalf("round %d: term at the snapshot = %d, %v", round, tm, err)
				}
			}
		})
	}
	t.Run("a snapshot that contradicts a committed entry is refused", func(t *testing.T) {
		s := h.Open(t)
		appendOK(t, s, req(1, hs(3, 0, 3), ent(1, 1, 2, 2, 3)))
		w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 2, Term: 3})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("state"))
		_, err = w.Install()
		wantCode(t, "install over a committed entry of another term", err, messages.ErrorCode_ERROR_CODE_INVALID)
		wantLog(t, s, 1, 1, 1, 2, 2, 3)
	})
	t.Run("checksum mismatch is refused", func(t *testing.T) {
		s := h.Open(t)
		appendOK(t, s, req(1, hs(3, 0, 1), ent(1, 1, 1)))
		b := body(100)
		w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 5, Term: 3, Size: uint64(len(b)), Checksum: crcOf(b) + 1})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		_, err = w.Install()
		wantCode(t, "install with a wrong checksum", err, messages.ErrorCode_ERROR_CODE_CORRUPT)
		wantLog(t, s, 1, 1, 1, 1)
		if m, _ := s.Snapshot(1); m != nil {
			t.Fatalf("refused snapshot recorded: %v", m)
		}
	})
}

func testSnapshotBackwards(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 10), ent(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)))
	m := writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 8, Term: 1}, body(10), false)
	// Pitfall (hashicorp #248): a stale snapshot must not move the base back.
	for _, install := range []bool{false, true} {
		w, err := s.CreateSnapshot(1, &messages.SnapshotMeta{Index: 5, Term: 1})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("old"))
		if install {
			_, err = w.Install()
		} else {
			_, err = w.Commit()
		}
		wantCode(t, fmt.Sprintf("older snapshot (install %v)", install), err, messages.ErrorCode_ERROR_CODE_INVALID)
	}
	s = h.Reopen(t)
	if got, _ := s.Snapshot(1); !proto.Equal(got, m) {
		t.Fatalf("latest snapshot %v, want %v", got, m)
	}
}

func testSnapshotCorrupt(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 3), ent(1, 1, 1, 1)))
	m := writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: 3, Term: 1}, body(4096), false)
	h.CorruptSnapshot(t, 1)
	_, err := s.OpenSnapshot(1, m.Id)
	wantCode(t, "open a damaged snapshot", err, messages.ErrorCode_ERROR_CODE_CORRUPT)
	if !strings.Contains(err.Error(), "crc32c") {
		t.Fatalf("error %q does not say what failed", err)
	}
}

// testConcurrentReads reads while a writer appends, truncates and purges;
// a reader must never see a torn log (a missing or corrupt entry).
func testConcurrentReads(t *testing.T, h Harness) {
	s := h.Open(t)
	appendOK(t, s, req(1, hs(1, 0, 0), ent(1, 1)))
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				first, err1 := s.FirstIndex(1)
				last, err2 := s.LastIndex(1)
				if err1 != nil || err2 != nil || last < first {
					continue
				}
				ents, err := s.Entries(1, first, last+1, 0)
				switch store.CodeOf(err) {
				case messages.ErrorCode_ERROR_CODE_UNSPECIFIED:
					for i := 1; i < len(ents); i++ {
						if ents[i].Index != ents[i-1].Index+1 || ents[i].Term < ents[i-1].Term {
							errs <- fmt.Errorf("torn read: %d/%d after %d/%d", ents[i].Index, ents[i].Term, ents[i-1].Index, ents[i-1].Term)
							return
						}
					}
				case messages.ErrorCode_ERROR_CODE_COMPACTED, messages.ErrorCode_ERROR_CODE_INVALID:
					// The log moved between the bounds and the read.
				default:
					errs <- err
					return
				}
			}
		}()
	}
	term := uint64(1)
	for i := 0; i < 300; i++ {
		last, _ := s.LastIndex(1)
		switch {
		case i%10 == 9:
			// A new term replaces the last two entries.
			term++
			first, _ := s.FirstIndex(1)
			at := max(last-1, first)
			appendOK(t, s, req(1, hs(term, 0, 0), ent(at, term, term, term)))
		case i%50 == 49:
			writeSnapshot(t, s, 1, &messages.SnapshotMeta{Index: last - 5, Term: mustTerm(t, s, 1, last-5)}, body(10), false)
			if _, err := s.Purge(1, last-5); err != nil {
				t.Fatal(err)
			}
		default:
			appendOK(t, s, req(1, nil, ent(last+1, term, term)))
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func mustTerm(t *testing.T, s store.Store, group, index uint64) uint64 {
	t.Helper()
	tm, err := s.Term(group, index)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// testCommitter drives the group committer with concurrent appenders of
// several groups: every append is answered once, in order per group, only
// after it is durable (it survives a crash), and appends share syncs.
func testCommitter(t *testing.T, h Harness) {
	s := h.Open(t)
	const groups, perGroup = 8, 50
	for g := uint64(1); g <= groups; g++ {
		appendOK(t, s, req(g, hs(1, 0, 0), nil))
	}
	c := store.NewCommitter(s, store.CommitterOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for g := uint64(1); g <= groups; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each group's appender keeps several appends in flight, as a
			// leader does, and checks they are answered in order.
			answered := make(chan *messages.StorageAppendResult, perGroup)
			for i := uint64(1); i <= perGroup; i++ {
				c.Submit(&messages.StorageAppend{GroupId: g, Seq: i, Entries: ent(i, 1)}, func(r *messages.StorageAppendResult) { answered <- r })
			}
			for i := uint64(1); i <= perGroup; i++ {
				r := <-answered
				if r.Error != nil || r.Seq != i || r.LastIndex != i || r.GroupId != g {
					errs <- fmt.Errorf("group %d answer %d: %v", g, i, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := c.Stats()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Appends != groups*perGroup || st.Batches == 0 || st.Batches >= groups*perGroup {
		t.Fatalf("stats %+v: want %d appends in fewer batches", st, groups*perGroup)
	}
	t.Logf("%d appends in %d batches (%.1f appends per sync)", st.Appends, st.Batches, st.AppendsPerSync())
	// After Close, appends are refused, not lost silently.
	done := make(chan *messages.StorageAppendResult, 1)
	c.Submit(&messages.StorageAppend{GroupId: 1, Entries: ent(perGroup+1, 1)}, func(r *messages.StorageAppendResult) { done <- r })
	if r := <-done; r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_STOPPED {
		t.Fatalf("append after close: %v, want STOPPED", r)
	}
	s = h.Crash(t)
	for g := uint64(1); g <= groups; g++ {
		if last, err := s.LastIndex(g); err != nil || last != perGroup {
			t.Fatalf("group %d after crash: last %d, %v", g, last, err)
		}
	}

	// A failing disk: the batch in flight and every later append get
	// STORAGE_FAILED; none is acknowledged.
	c = store.NewCommitter(s, store.CommitterOptions{})
	defer c.Close()
	h.FailSyncs(t)
	results := make(chan *messages.StorageAppendResult, 10)
	for i := uint64(0); i < 10; i++ {
		c.Submit(&messages.StorageAppend{GroupId: 1, Seq: i, Entries: ent(perGroup+1+i, 1)}, func(r *messages.StorageAppendResult) { results <- r })
	}
	for i := 0; i < 10; i++ {
		if r := <-results; r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
			t.Fatalf("append %d on a failed disk: %v, want STORAGE_FAILED", i, r)
		}
	}
	if c.Err() == nil {
		t.Fatalf("committer does not report the failure")
	}
}

func crcOf(b []byte) uint32 {
	return crc32c(b)
}
