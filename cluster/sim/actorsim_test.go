package sim

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// The actor mode's default run: fewer seeds than the core mode, as each
// runs the whole actor stack (about a quarter of a second a seed).
const (
	actorSeeds     = 40
	actorRaceSeeds = 6
)

// TestActorSim runs the real actors under the deterministic dispatcher for
// many seeds (RAFTOR_SIM_SEEDS=N, default 40; RAFTOR_SIM_BASE=B starts at
// seed B), or replays one (RAFTOR_SIM_SEED=S). A failure names its seed and
// the command that replays it; RAFTOR_SIM_TRACE=1 prints the events that
// led to it.
func TestActorSim(t *testing.T) {
	if s := os.Getenv("RAFTOR_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RAFTOR_SIM_SEED=%q: %v", s, err)
		}
		opts := Options{}
		if s := os.Getenv("RAFTOR_SIM_TRACE_SIZE"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v <= 0 {
				t.Fatalf("RAFTOR_SIM_TRACE_SIZE=%q is not a positive number", s)
			}
			opts.TraceSize = v
		}
		res := RunActors(seed, opts)
		t.Logf("seed %d: %s", seed, res.Config)
		t.Logf("seed %d: %s", seed, summary(res))
		if res.Err != nil {
			reportFailureOf(t, "TestActorSim", res)
		}
		return
	}
	n := actorSeeds
	if raceEnabled {
		n = actorRaceSeeds
	}
	if s := os.Getenv("RAFTOR_SIM_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("RAFTOR_SIM_SEEDS=%q is not a positive number", s)
		}
		n = v
	}
	base := uint64(1)
	if s := os.Getenv("RAFTOR_SIM_BASE"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RAFTOR_SIM_BASE=%q: %v", s, err)
		}
		base = v
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	start := time.Now()
	var (
		mu       sync.Mutex
		total    Stats
		failures []*Result
		next     atomic.Uint64
		wg       sync.WaitGroup
	)
	// Each seed is one run on one goroutine, deterministic on its own;
	// seeds spread over the CPUs.
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= uint64(n) {
					return
				}
				res := RunActors(base+i, Options{})
				mu.Lock()
				total.add(res.Stats)
				if res.Err != nil {
					failures = append(failures, res)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds from %d in %v", n, base, time.Since(start).Round(time.Millisecond))
	t.Logf("totals: %s", summaryStats(total))
	t.Logf("faults: %s", total.Faults)
	if total.WritesAcked == 0 || total.ReadsOK == 0 {
		t.Errorf("the workload did nothing: %d writes and %d reads acknowledged", total.WritesAcked, total.ReadsOK)
	}
	if len(failures) == 0 {
		return
	}
	sort.Slice(failures, func(i, j int) bool { return failures[i].Seed < failures[j].Seed })
	var seeds []string
	for _, res := range failures {
		seeds = append(seeds, strconv.FormatUint(res.Seed, 10))
	}
	t.Errorf("%d of %d seeds failed: %s", len(failures), n, strings.Join(seeds, " "))
	for i, res := range failures {
		if i == 10 {
			t.Logf("(details of the first 10 failures only)")
			break
		}
		reportFailureOf(t, "TestActorSim", res)
	}
}

// The same seed gives the same run of the real actors, byte for byte: every
// trace record (each message on the wire, each client request and answer,
// each fault, crash and restart), every statistic and the whole client
// history. Different seeds differ.
func TestActorSimSameSeedSameRun(t *testing.T) {
	// Seeds whose runs have several voters and spares, membership changes,
	// chunked snapshots, crashes, partitions and clock faults (2, 12, 29),
	// and pauses with lease reads (28).
	seeds := []uint64{2, 12, 28, 29}
	if raceEnabled {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		a := RunActors(seed, Options{TraceSize: 1 << 22})
		b := RunActors(seed, Options{TraceSize: 1 << 22})
		var ta, tb bytes.Buffer
		a.Trace.WriteTo(&ta)
		b.Trace.WriteTo(&tb)
		if a.Err != nil {
			t.Fatalf("seed %d failed: %v", seed, a.Err)
		}
		if ta.Len() == 0 || a.Stats.Steps == 0 {
			t.Fatalf("seed %d left an empty trace", seed)
		}
		if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
			la, lb := strings.Split(ta.String(), "\n"), strings.Split(tb.String(), "\n")
			for i := 0; i < min(len(la), len(lb)); i++ {
				if la[i] != lb[i] {
					t.Fatalf("seed %d: two runs' traces differ at line %d:\n%s\n%s", seed, i+1, la[i], lb[i])
				}
			}
			t.Fatalf("seed %d: two runs produced traces of %d and %d lines", seed, len(la), len(lb))
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
		t.Logf("seed %d: %d trace records, %d steps, %d operations, identical twice", seed, len(a.Trace.Records()), a.Stats.Steps, len(ha))
	}
	var ta, tb bytes.Buffer
	RunActors(1, Options{}).Trace.WriteTo(&ta)
	RunActors(2, Options{}).Trace.WriteTo(&tb)
	if bytes.Equal(ta.Bytes(), tb.Bytes()) {
		t.Fatal("seeds 1 and 2 produced the same trace")
	}
}

// The checker's view of an actor-mode node's log follows the store by
// reading it back, and tells a replaced suffix (what the leader
// append-only property watches for) from a purge behind a snapshot.
func TestStoreLogFollowsTheStore(t *testing.T) {
	mem, err := store.NewMemStore(store.Options{ClusterID: "sim", NodeID: 1, Incarnation: 7})
	if err != nil {
		t.Fatal(err)
	}
	view := newStoreLog(&messages.NodeIdentity{ClusterId: "sim", GroupId: 1, NodeId: 1, Incarnation: 7})
	ents := func(term uint64, lo, hi uint64) []*messages.Entry {
		var es []*messages.Entry
		for i := lo; i <= hi; i++ {
			es = append(es, &messages.Entry{Index: i, Term: term, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte{byte(i)}})
		}
		return es
	}
	steps := []struct {
		story         string
		hs            *messages.HardState
		entries       []*messages.Entry
		purge         uint64
		wantFirst     uint64
		wantLast      uint64
		wantDirty     uint64
		wantTruncated uint64
	}{
		{story: "a follower of term 1 stores entries 1 to 5",
			hs: &messages.HardState{Term: 1}, entries: ents(1, 1, 5), wantFirst: 1, wantLast: 5, wantDirty: 1},
		{story: "the next leader's entries 6 and 7 extend the log",
			hs: &messages.HardState{Term: 2, Commit: 3}, entries: ents(2, 6, 7), wantFirst: 1, wantLast: 7, wantDirty: 6},
		{story: "a leader of term 3 replaces 5 to 7 by its own 5 and 6",
			hs: &messages.HardState{Term: 3, Commit: 4}, entries: ents(3, 5, 6), wantFirst: 1, wantLast: 6, wantDirty: 5, wantTruncated: 5},
		{story: "rewriting 6 with the same entry takes nothing back",
			entries: ents(3, 6, 6), wantFirst: 1, wantLast: 6, wantDirty: 6},
	}
	for _, st := range steps {
		req := &messages.StorageAppend{GroupId: 1, HardState: st.hs, Entries: st.entries}
		res, err := mem.Append([]*messages.StorageAppend{req})
		if err != nil || res[0].GetError() != nil {
			t.Fatalf("%s: append: %v %v", st.story, err, res[0].GetError())
		}
		from := ^uint64(0)
		if len(st.entries) > 0 {
			from = st.entries[0].GetIndex()
		}
		if err := view.refresh(mem, 1, from); err != nil {
			t.Fatalf("%s: %v", st.story, err)
		}
		dirty, truncated := view.TakeDirty()
		s := view.State()
		if s.First != st.wantFirst || s.LastIndex() != st.wantLast || dirty != st.wantDirty || truncated != st.wantTruncated {
			t.Fatalf("%s: view holds %d..%d, dirty %d, truncated %d; want %d..%d, dirty %d, truncated %d",
				st.story, s.First, s.LastIndex(), dirty, truncated, st.wantFirst, st.wantLast, st.wantDirty, st.wantTruncated)
		}
		for idx := s.First; idx <= s.LastIndex(); idx++ {
			want, err := mem.Entries(1, idx, idx+1, 0)
			if err != nil || s.Entry(idx).GetTerm() != want[0].GetTerm() {
				t.Fatalf("%s: view's entry %d has term %d, the store's %v (%v)", st.story, idx, s.Entry(idx).GetTerm(), want, err)
			}
		}
		if got := s.HardState.GetCommit(); st.hs != nil && got != st.hs.GetCommit() {
			t.Fatalf("%s: view's commit %d, want %d", st.story, got, st.hs.GetCommit())
		}
	}

	// A snapshot at 4 and a purge up to 3 drop a prefix: nothing taken back.
	w, err := mem.CreateSnapshot(1, &messages.SnapshotMeta{Index: 4, Term: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("state at 4")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Purge(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := view.refresh(mem, 1, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	dirty, truncated := view.TakeDirty()
	if s := view.State(); s.First != 4 || s.LastIndex() != 6 || s.Snapshot.GetIndex() != 4 || dirty != ^uint64(0) || truncated != 0 {
		t.Fatalf("after the purge the view holds %d..%d with snapshot %d, dirty %d, truncated %d; want 4..6, snapshot 4, nothing changed",
			s.First, s.LastIndex(), s.Snapshot.GetIndex(), dirty, truncated)
	}
}

// TestActorSimFoundSeeds replays, on every run, the actor-mode seeds that
// found defects in the actors; each failed before the fix named beside it.
func TestActorSimFoundSeeds(t *testing.T) {
	for _, tc := range []struct {
		seed uint64
		fix  string
	}{
		{767, "a restore never moves the state machine back"},
		{849, "RaftCore adopts a snapshot storage finished installing after its term moved on"},
		{5275, "the apply actor catches up from the snapshot that compacted the entries it had to read"},
		{4105, "a write delivered twice by the network is answered once, by its first copy"},
		{8291, "a leader counts the ticks a pause swallowed before answering from its lease"},
		{10655, "a leader counts the ticks a pause swallowed before answering from its lease"},
	} {
		t.Run(fmt.Sprint(tc.seed), func(t *testing.T) {
			if res := RunActors(tc.seed, Options{}); res.Err != nil {
				t.Logf("this seed found: %s", tc.fix)
				reportFailureOf(t, "TestActorSim", res)
			}
		})
	}
}
