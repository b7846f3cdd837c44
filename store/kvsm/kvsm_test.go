package kvsm_test

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, fs vfs.FS) *kvsm.SM {
	t.Helper()
	s, err := kvsm.Open("/kv", kvsm.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// log builds NORMAL entries from index lo, one per command.
func log(lo, term uint64, cmds ...*messages.KVCommand) []*messages.Entry {
	out := make([]*messages.Entry, len(cmds))
	for i, c := range cmds {
		out[i] = &messages.Entry{Index: lo + uint64(i), Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: kvsm.Encode(c)}
	}
	return out
}

func apply(t *testing.T, s *kvsm.SM, ents []*messages.Entry) []*messages.KVResult {
	t.Helper()
	rs, err := s.Apply(ents)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(rs) != len(ents) {
		t.Fatalf("%d results for %d entries", len(rs), len(ents))
	}
	out := make([]*messages.KVResult, len(rs))
	for i, r := range rs {
		if r.Skipped || r.Data == nil && r.Typed == nil {
			continue // skipped, or not a command (blank, membership)
		}
		res, err := kvsm.DecodeResult(r)
		if err != nil {
			t.Fatal(err)
		}
		typed := &messages.KVResult{}
		if r.Typed == nil || r.Typed.UnmarshalTo(typed) != nil || !proto.Equal(typed, res) {
			t.Fatalf("typed result %v differs from data %v", r.Typed, res)
		}
		out[i] = res
	}
	return out
}

func wantValue(t *testing.T, s *kvsm.SM, key, want string, present bool) {
	t.Helper()
	v, ok, err := s.Get([]byte(key))
	if err != nil || ok != present || (present && string(v) != want) {
		t.Fatalf("get %q = %q, %v, %v; want %q, %v", key, v, ok, err, want, present)
	}
}

func b(s string) []byte { return []byte(s) }

func TestCommands(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	tests := []struct {
		name string
		cmd  *messages.KVCommand
		want *messages.KVResult
	}{
		{"put a new key", kvsm.Put(b("x"), b("1")), &messages.KVResult{Ok: true}},
		{"put over it", kvsm.Put(b("x"), b("2")), &messages.KVResult{Ok: true, Existed: true, Previous: b("1")}},
		{"cas with the wrong value", kvsm.CompareAndSet(b("x"), b("1"), b("3")), &messages.KVResult{Ok: false, Existed: true, Previous: b("2")}},
		{"cas with the right value", kvsm.CompareAndSet(b("x"), b("2"), b("3")), &messages.KVResult{Ok: true, Existed: true, Previous: b("2")}},
		{"create if absent on a present key", kvsm.CreateIfAbsent(b("x"), b("4")), &messages.KVResult{Ok: false, Existed: true, Previous: b("3")}},
		{"create if absent on an absent key", kvsm.CreateIfAbsent(b("y"), b("1")), &messages.KVResult{Ok: true}},
		{"cas expecting a value on an absent key", kvsm.CompareAndSet(b("z"), b(""), b("1")), &messages.KVResult{Ok: false}},
		{"delete", kvsm.Delete(b("x")), &messages.KVResult{Ok: true, Existed: true, Previous: b("3")}},
		{"delete an absent key", kvsm.Delete(b("x")), &messages.KVResult{Ok: true}},
		{"empty key", kvsm.Put(nil, b("1")), &messages.KVResult{Error: "empty key"}},
		{"empty command", &messages.KVCommand{}, &messages.KVResult{Error: "empty command"}},
	}
	for i, tc := range tests {
		got := apply(t, s, log(uint64(i+1), 1, tc.cmd))[0]
		if !proto.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	wantValue(t, s, "x", "", false)
	wantValue(t, s, "y", "1", true)
	if idx, term := s.LastApplied(); idx != uint64(len(tests)) || term != 1 {
		t.Fatalf("last applied %d/%d, want %d/1", idx, term, len(tests))
	}
}

func TestCommandsInOneBatchSeeEachOther(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	rs := apply(t, s, log(1, 1, kvsm.Put(b("k"), b("a")), kvsm.CompareAndSet(b("k"), b("a"), b("b")), kvsm.Delete(b("k")), kvsm.CreateIfAbsent(b("k"), b("c"))))
	for i, r := range rs {
		if !r.Ok {
			t.Fatalf("command %d of the batch failed: %v", i, r)
		}
	}
	wantValue(t, s, "k", "c", true)
}

func TestTypedCommandAndOtherKinds(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	any, _ := anypb.New(kvsm.Put(b("t"), b("typed")))
	ents := []*messages.Entry{
		{Index: 1, Term: 1, Kind: messages.EntryKind_ENTRY_KIND_BLANK},
		{Index: 2, Term: 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Command: any},
		{Index: 3, Term: 2, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: &messages.Membership{Voters: []uint64{1}}},
		{Index: 4, Term: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte{0xff, 0xff}},
	}
	rs := apply(t, s, ents)
	if !rs[1].Ok || rs[3].Error == "" {
		t.Fatalf("results %v: want the typed put applied and the garbage refused with an error", rs)
	}
	wantValue(t, s, "t", "typed", true)
	if idx, term := s.LastApplied(); idx != 4 || term != 2 {
		t.Fatalf("blank and membership entries must advance the applied index: %d/%d", idx, term)
	}
}

func TestReplayAfterRestartSkipsApplied(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := open(t, fs)
	// A counter-like history where applying twice would show: each entry
	// appends to the value via compare-and-set on the previous value.
	cmds := []*messages.KVCommand{kvsm.CreateIfAbsent(b("c"), b("1")), kvsm.CompareAndSet(b("c"), b("1"), b("12")), kvsm.CompareAndSet(b("c"), b("12"), b("123"))}
	apply(t, s, log(1, 1, cmds...))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s = open(t, crashed)
	defer s.Close()
	if idx, _ := s.LastApplied(); idx != 3 {
		t.Fatalf("applied index after crash %d, want 3 (it is synced with the data)", idx)
	}
	more := append(log(1, 1, cmds...), log(4, 1, kvsm.CompareAndSet(b("c"), b("123"), b("1234")))...)
	rs, err := s.Apply(more)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if !rs[i].Skipped {
			t.Fatalf("entry %d was applied twice", i+1)
		}
	}
	wantValue(t, s, "c", "1234", true)
	_, err = s.Apply(log(9, 1, kvsm.Put(b("gap"), nil)))
	if store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("applying past a gap: %v, want INVALID", err)
	}
}

func TestDeduplication(t *testing.T) {
	s := open(t, vfs.NewMem())
	defer s.Close()
	withID := func(e *messages.Entry, client, seq uint64) *messages.Entry {
		e.Request = &messages.RequestID{ClientId: client, Sequence: seq}
		return e
	}
	first := apply(t, s, []*messages.Entry{withID(log(1, 1, kvsm.CreateIfAbsent(b("lock"), b("me")))[0], 7, 1)})[0]
	if !first.Ok {
		t.Fatalf("first attempt failed: %v", first)
	}
	// The client did not see the answer and retries: same RequestID, new
	// entry. Applying it again would answer "not ok" (the key exists); the
	// state machine answers what the first application answered.
	retry := apply(t, s, []*messages.Entry{withID(log(2, 1, kvsm.CreateIfAbsent(b("lock"), b("me")))[0], 7, 1)})[0]
	if !retry.Ok || !retry.Duplicate {
		t.Fatalf("retry answered %v, want the first answer marked duplicate", retry)
	}
	next := apply(t, s, []*messages.Entry{withID(log(3, 1, kvsm.Put(b("lock"), b("you")))[0], 7, 2)})[0]
	if next.Duplicate || !next.Ok {
		t.Fatalf("next request %v", next)
	}
	stale := apply(t, s, []*messages.Entry{withID(log(4, 1, kvsm.Put(b("lock"), b("old")))[0], 7, 1)})[0]
	if !stale.Duplicate || stale.Error == "" {
		t.Fatalf("stale request %v, want refused as a duplicate", stale)
	}
	other := apply(t, s, []*messages.Entry{withID(log(5, 1, kvsm.Put(b("other"), b("x")))[0], 8, 1)})[0]
	if other.Duplicate {
		t.Fatalf("another client's request taken for a duplicate")
	}
	wantValue(t, s, "lock", "you", true)
}

func TestSnapshotWhileApplyingAndRestore(t *testing.T) {
	src := open(t, vfs.NewMem())
	defer src.Close()
	apply(t, src, log(1, 1, kvsm.Put(b("a"), b("1")), kvsm.Put(b("b"), b("2"))))
	apply(t, src, []*messages.Entry{{Index: 3, Term: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: kvsm.Encode(kvsm.Put(b("c"), b("3"))),
		Request: &messages.RequestID{ClientId: 5, Sequence: 9}}})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if snap.Index() != 3 || snap.Term() != 2 {
		t.Fatalf("snapshot at %d/%d, want 3/2", snap.Index(), snap.Term())
	}
	// Entries applied after the snapshot was taken are not in it.
	apply(t, src, log(4, 2, kvsm.Put(b("a"), b("changed")), kvsm.Delete(b("b")), kvsm.Put(b("d"), b("4"))))
	var body bytes.Buffer
	n, err := snap.WriteTo(&body)
	if err != nil || n != int64(body.Len()) {
		t.Fatalf("write snapshot: %d, %v", n, err)
	}

	dst := open(t, vfs.NewMem())
	defer dst.Close()
	apply(t, dst, log(1, 1, kvsm.Put(b("stale"), b("x")), kvsm.Put(b("a"), b("old"))))
	if err := dst.Restore(bytes.NewReader(body.Bytes())); err != nil {
		t.Fatal(err)
	}
	if idx, term := dst.LastApplied(); idx != 3 || term != 2 {
		t.Fatalf("restored applied %d/%d, want 3/2", idx, term)
	}
	wantValue(t, dst, "a", "1", true)
	wantValue(t, dst, "b", "2", true)
	wantValue(t, dst, "c", "3", true)
	wantValue(t, dst, "d", "", false)
	wantValue(t, dst, "stale", "", false) // restore starts from a fresh keyspace
	// Sessions travel with the snapshot: a retry after the restore is a duplicate.
	rs := apply(t, dst, []*messages.Entry{{Index: 4, Term: 2, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: kvsm.Encode(kvsm.Put(b("c"), b("again"))),
		Request: &messages.RequestID{ClientId: 5, Sequence: 9}}})
	if !rs[0].Duplicate {
		t.Fatalf("retry after restore applied again: %v", rs[0])
	}
	wantValue(t, dst, "c", "3", true)
}

func TestInterruptedRestoreIsDiscarded(t *testing.T) {
	src := open(t, vfs.NewMem())
	defer src.Close()
	apply(t, src, log(1, 1, kvsm.Put(b("a"), b("1")), kvsm.Put(b("b"), b("2"))))
	snap, _ := src.Snapshot()
	var body bytes.Buffer
	snap.WriteTo(&body)
	snap.Close()

	fs := vfs.NewMem()
	dst := open(t, fs)
	apply(t, dst, log(1, 1, kvsm.Put(b("x"), b("1"))))
	// A body cut short (a crash of the sender, a bad transfer) fails the
	// restore, and the half-restored state does not pass for a good one.
	err := dst.Restore(bytes.NewReader(body.Bytes()[:body.Len()-3]))
	if store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_CORRUPT {
		t.Fatalf("restore of a truncated body: %v, want CORRUPT", err)
	}
	dst.Close()
	dst = open(t, fs)
	defer dst.Close()
	if idx, _ := dst.LastApplied(); idx != 0 {
		t.Fatalf("after an interrupted restore the applied index is %d, want 0", idx)
	}
	wantValue(t, dst, "a", "", false)
	wantValue(t, dst, "x", "", false)
}
