package sim

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
)

// The same seed gives the same run, byte for byte: every trace record, every
// statistic and the whole client history. Different seeds differ.
func TestSameSeedSameRun(t *testing.T) {
	for _, seed := range []uint64{17, 123456789} {
		a := Run(seed, Options{TraceSize: 1 << 20})
		b := Run(seed, Options{TraceSize: 1 << 20})
		var ta, tb bytes.Buffer
		a.Trace.WriteTo(&ta)
		b.Trace.WriteTo(&tb)
		if ta.Len() == 0 {
			t.Fatalf("seed %d left an empty trace", seed)
		}
		if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
			t.Fatalf("seed %d: two runs produced different traces (%d vs %d bytes)", seed, ta.Len(), tb.Len())
		}
		if a.Stats != b.Stats {
			t.Fatalf("seed %d: stats differ:\n%+v\n%+v", seed, a.Stats, b.Stats)
		}
		ha, hb := a.History.Operations(), b.History.Operations()
		if len(ha) == 0 || len(ha) != len(hb) {
			t.Fatalf("seed %d: histories of %d and %d operations", seed, len(ha), len(hb))
		}
		for i := range ha {
			if ha[i].Input != hb[i].Input || ha[i].Output != hb[i].Output || ha[i].Call != hb[i].Call || ha[i].Return != hb[i].Return {
				t.Fatalf("seed %d: operation %d differs: %+v vs %+v", seed, i, ha[i], hb[i])
			}
		}
	}
	a := Run(1, Options{})
	b := Run(2, Options{})
	var ta, tb bytes.Buffer
	a.Trace.WriteTo(&ta)
	b.Trace.WriteTo(&tb)
	if bytes.Equal(ta.Bytes(), tb.Bytes()) {
		t.Fatal("seeds 1 and 2 produced the same trace")
	}
}

func TestQueueOrdersByTimeThenScheduling(t *testing.T) {
	var q Queue
	var got []string
	q.At(20*time.Millisecond, func() { got = append(got, "b") })
	q.At(10*time.Millisecond, func() { got = append(got, "a") })
	q.At(20*time.Millisecond, func() { got = append(got, "c") })
	q.At(10*time.Millisecond, func() {
		got = append(got, "a2")
		q.After(0, func() { got = append(got, "a3") }) // same time, scheduled later
	})
	for q.Step(15 * time.Millisecond) {
	}
	if q.Now() != 10*time.Millisecond || q.Len() != 2 {
		t.Fatalf("stopped at %v with %d queued, want 10ms and 2", q.Now(), q.Len())
	}
	for q.Step(time.Second) {
	}
	want := []string{"a", "a2", "a3", "b", "c"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	q.At(0, func() {}) // the past is now
	q.Step(time.Second)
	if q.Now() != 20*time.Millisecond {
		t.Fatalf("scheduling in the past moved the clock to %v", q.Now())
	}
}

func TestTraceKeepsTheLastRecords(t *testing.T) {
	tr := NewTrace(3)
	for i := 0; i < 5; i++ {
		tr.Add(time.Duration(i)*time.Second, 1, "event %d", i)
	}
	var b bytes.Buffer
	tr.WriteTo(&b)
	want := "... 2 earlier records dropped\n" +
		"    2.000000s n1   event 2\n" +
		"    3.000000s n1   event 3\n" +
		"    4.000000s n1   event 4\n"
	if b.String() != want {
		t.Fatalf("trace:\n%s\nwant:\n%s", b.String(), want)
	}
	NewTrace(0).Add(0, 0, "dropped") // tracing off must not panic
}

func ent(index, term uint64, data string) *messages.Entry {
	return &messages.Entry{Index: index, Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte(data)}
}

func terms(st *DiskState) []uint64 {
	var out []uint64
	for _, e := range st.Entries {
		out = append(out, e.Term)
	}
	return out
}

func TestDiskCrashLosesUnsyncedWrites(t *testing.T) {
	tests := []struct {
		name      string
		keep      int
		wantTerms []uint64
		wantTerm  uint64
	}{
		{"nothing unsynced survives", 0, []uint64{1, 1}, 1},
		{"a prefix of the unsynced writes survives", 1, []uint64{1, 1, 2}, 2},
		{"everything survives", 5, []uint64{1, 1, 2, 2}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDisk(&messages.NodeIdentity{NodeId: 1})
			must(t, d.Append(&messages.HardState{Term: 1}, []*messages.Entry{ent(1, 1, "a"), ent(2, 1, "b")}))
			d.Sync()
			must(t, d.Append(&messages.HardState{Term: 2}, []*messages.Entry{ent(3, 2, "c")}))
			must(t, d.Append(&messages.HardState{Term: 3}, []*messages.Entry{ent(4, 2, "d")}))
			if got := terms(d.State()); !slices.Equal(got, []uint64{1, 1, 2, 2}) {
				t.Fatalf("written log terms %v before the crash", got)
			}
			d.Crash(tt.keep)
			if got := terms(d.State()); !slices.Equal(got, tt.wantTerms) {
				t.Fatalf("log terms after crash %v, want %v", got, tt.wantTerms)
			}
			if got := d.State().HardState.Term; got != tt.wantTerm {
				t.Fatalf("term after crash %d, want %d", got, tt.wantTerm)
			}
		})
	}
}

func TestDiskTruncationNeverLeaksIntoTheDurableView(t *testing.T) {
	d := NewDisk(&messages.NodeIdentity{NodeId: 1})
	must(t, d.Append(nil, []*messages.Entry{ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 1, "c")}))
	d.Sync()
	// Replace entry 2 onwards, unsynced: the durable log must keep b, c.
	must(t, d.Append(nil, []*messages.Entry{ent(2, 2, "x")}))
	if got := terms(d.Durable()); !slices.Equal(got, []uint64{1, 1, 1}) {
		t.Fatalf("durable log %v changed by an unsynced truncation", got)
	}
	if _, trunc := d.TakeDirty(); trunc != 2 {
		t.Fatalf("truncation from 2 not reported: %d", trunc)
	}
	d.Crash(0)
	if got := string(d.State().Entry(2).Data); got != "b" {
		t.Fatalf("entry 2 after crash is %q, want b", got)
	}
}

func TestDiskRefusesBadWrites(t *testing.T) {
	d := NewDisk(&messages.NodeIdentity{NodeId: 1})
	must(t, d.Append(nil, []*messages.Entry{ent(1, 1, "a")}))
	for name, err := range map[string]error{
		"gap":                         d.Append(nil, []*messages.Entry{ent(3, 1, "c")}),
		"not contiguous":              d.Append(nil, []*messages.Entry{ent(2, 1, "b"), ent(4, 1, "d")}),
		"purge without a snap":        d.Purge(1),
		"local snapshot past the log": d.SaveSnapshot(&messages.SnapshotMeta{Index: 5, Term: 1}, nil),
	} {
		if !errors.Is(err, ErrBadWrite) {
			t.Errorf("%s: got %v, want ErrBadWrite", name, err)
		}
	}
}

func TestDiskSnapshots(t *testing.T) {
	d := NewDisk(&messages.NodeIdentity{NodeId: 1})
	must(t, d.Append(&messages.HardState{Term: 2}, []*messages.Entry{ent(1, 1, "a"), ent(2, 1, "b"), ent(3, 2, "c"), ent(4, 2, "d")}))
	must(t, d.SaveSnapshot(&messages.SnapshotMeta{Index: 3, Term: 2, Id: "s1"}, []byte("body")))
	if d.State().First != 1 {
		t.Fatal("a local snapshot must not touch the log")
	}
	must(t, d.Purge(2))
	if st := d.State(); st.First != 3 || st.LastIndex() != 4 {
		t.Fatalf("after purge to 2 the log holds %d..%d, want 3..4", st.First, st.LastIndex())
	}
	if tm, ok := d.State().Term(2); ok {
		t.Fatalf("purged index 2 still has term %d", tm)
	}

	// A leader's snapshot that matches the log keeps the suffix.
	must(t, d.InstallSnapshot(&messages.SnapshotMeta{Index: 4, Term: 2, Id: "s2"}, []byte("b2")))
	if st := d.State(); st.First != 5 || st.LastIndex() != 4 || st.HardState.Commit != 4 {
		t.Fatalf("install: log %d..%d commit %d, want empty at 5 with commit 4", st.First, st.LastIndex(), st.HardState.Commit)
	}
	// One that conflicts discards the whole log.
	must(t, d.Append(nil, []*messages.Entry{ent(5, 2, "e"), ent(6, 2, "f")}))
	must(t, d.InstallSnapshot(&messages.SnapshotMeta{Index: 5, Term: 3, Id: "s3"}, []byte("b3")))
	if st := d.State(); st.First != 6 || len(st.Entries) != 0 {
		t.Fatalf("a conflicting snapshot kept entries %v", terms(st))
	}
	if _, trunc := d.TakeDirty(); trunc != 6 {
		t.Fatalf("discarding entry 6 not reported as a truncation (%d)", trunc)
	}
	is := d.State().InitialState()
	if is.FirstIndex != 6 || is.LastIndex != 5 || is.Snapshot.GetId() != "s3" {
		t.Fatalf("initial state %v", is)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPartitionShapes(t *testing.T) {
	nodes := []uint64{1, 2, 3, 4, 5}
	for seed := uint64(0); seed < 50; seed++ {
		rng := NewRand(seed)
		for k := PartitionIsolate; k < numPartitionKinds; k++ {
			p := RandomPartition(rng, k, nodes)
			cut := map[link]bool{}
			for _, l := range p.links() {
				cut[l] = true
			}
			reach := func(a, b uint64) bool { return !cut[link{a, b}] }
			switch k {
			case PartitionIsolate:
				x := p.A[0]
				for _, o := range nodes {
					if o != x && (reach(x, o) || reach(o, x)) {
						t.Fatalf("isolated n%d still talks to n%d", x, o)
					}
				}
			case PartitionSplit:
				if len(p.A) > len(nodes)/2 || len(p.A)+len(p.B) != len(nodes) {
					t.Fatalf("split %v | %v is not minority | majority", p.A, p.B)
				}
			case PartitionAsymmetric:
				if !p.OneWay {
					t.Fatal("asymmetric partition cuts both ways")
				}
				a, b := p.A[0], p.B[0]
				if reach(a, b) || !reach(b, a) {
					t.Fatalf("asymmetric: n%d->n%d should be cut and the reverse open", a, b)
				}
			case PartitionBridge:
				for _, a := range p.A {
					for _, b := range p.B {
						if reach(a, b) || reach(b, a) {
							t.Fatalf("bridge: sides n%d and n%d still talk", a, b)
						}
					}
					if !reach(a, p.Bridge) || !reach(p.Bridge, a) {
						t.Fatalf("bridge n%d cannot reach n%d", p.Bridge, a)
					}
				}
			}
		}
	}
}

func TestNetworkFaults(t *testing.T) {
	var q Queue
	got := map[string]int{}
	net := NewNetwork(&q, NewRand(7), nil, func(from, to uint64, msg any) bool {
		got[msg.(string)]++
		return true
	})
	net.SetFaults(NetFaults{Loss: 0.3, Dup: 0.3, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	for i := 0; i < 1000; i++ {
		net.Send(1, 2, string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	for q.Step(time.Hour) {
	}
	st := net.Stats
	if st.Lost < 200 || st.Lost > 400 || st.Duplicated < 100 {
		t.Fatalf("loss %d, duplicates %d out of 1000 at 30%%", st.Lost, st.Duplicated)
	}
	if st.Delivered != 1000-st.Lost+st.Duplicated {
		t.Fatalf("delivered %d, want %d", st.Delivered, 1000-st.Lost+st.Duplicated)
	}

	// A partition drops what is in flight on a cut link when it arrives.
	net.SetFaults(CalmNet)
	net.Send(1, 2, "in flight")
	net.Partition(Partition{Kind: PartitionIsolate, A: []uint64{2}, B: []uint64{1}})
	net.Send(2, 1, "from the isolated side")
	for q.Step(2 * time.Hour) {
	}
	if got["in flight"] != 0 || got["from the isolated side"] != 0 {
		t.Fatalf("messages crossed a partition: %v", got)
	}
	net.Heal()
	net.Send(1, 2, "after heal")
	for q.Step(3 * time.Hour) {
	}
	if got["after heal"] != 1 {
		t.Fatal("a healed link did not deliver")
	}
}

// In calm conditions each link is FIFO, as protoactor remote's is.
func TestNetworkKeepsLinkOrderUnlessReordering(t *testing.T) {
	for _, reorder := range []float64{0, 0.5} {
		var q Queue
		var got []int
		net := NewNetwork(&q, NewRand(1), nil, func(_, _ uint64, msg any) bool {
			got = append(got, msg.(int))
			return true
		})
		f := CalmNet
		f.Reorder, f.ReorderDelay = reorder, 10*time.Millisecond
		net.SetFaults(f)
		for i := 0; i < 200; i++ {
			net.Send(1, 2, i)
		}
		for q.Step(time.Hour) {
		}
		if sorted := slices.IsSorted(got); sorted != (reorder == 0) {
			t.Fatalf("reorder=%v: delivery in order = %v", reorder, sorted)
		}
	}
}
