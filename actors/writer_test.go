package actors

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// gatedStore is a store whose Append calls the test can hold at the door,
// and which records the groups each call carried.
type gatedStore struct {
	store.Store
	mu      sync.Mutex
	calls   [][]uint64
	hold    chan struct{} // non-nil: Append waits for it to close
	entered chan struct{} // told when a held Append is waiting
	delay   time.Duration // a modelled fsync
}

func newGatedStore(t *testing.T) *gatedStore {
	t.Helper()
	st, err := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: 1, Incarnation: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &gatedStore{Store: st, entered: make(chan struct{}, 16)}
}

func (s *gatedStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	groups := make([]uint64, len(reqs))
	for i, r := range reqs {
		groups[i] = r.GetGroupId()
	}
	s.mu.Lock()
	s.calls = append(s.calls, groups)
	hold, delay := s.hold, s.delay
	s.mu.Unlock()
	if hold != nil {
		s.entered <- struct{}{}
		<-hold
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	return s.Store.Append(reqs)
}

// holdAppends makes the next Append calls wait until the returned release
// is called.
func (s *gatedStore) holdAppends() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(ch)
		})
	}
}

func (s *gatedStore) appendCalls() [][]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// inbox is a PID whose messages a test reads from a channel, in the order
// they were sent.
type inbox struct {
	pid *actor.PID
	ch  chan any
}

func newInbox(t *testing.T, system *actor.ActorSystem) *inbox {
	in := &inbox{ch: make(chan any, 64)}
	in.pid, _ = system.ProcessRegistry.Add(in, "test-inbox-"+system.ProcessRegistry.NextId())
	t.Cleanup(func() { system.ProcessRegistry.Remove(in.pid) })
	return in
}

func (in *inbox) SendUserMessage(_ *actor.PID, m any) {
	_, msg, _ := actor.UnwrapEnvelope(m)
	in.ch <- msg
}
func (in *inbox) SendSystemMessage(*actor.PID, any) {}
func (in *inbox) Stop(*actor.PID)                   {}

func (in *inbox) next(t *testing.T) any {
	t.Helper()
	select {
	case m := <-in.ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

func (in *inbox) nothing(t *testing.T, what string) {
	t.Helper()
	select {
	case m := <-in.ch:
		t.Fatalf("%s: got %T %v", what, m, m)
	case <-time.After(50 * time.Millisecond):
	}
}

// appendOne is the append of entry index (term 1) to group.
func appendOne(group, seq, index uint64) *messages.StorageAppend {
	return &messages.StorageAppend{GroupId: group, Seq: seq, HardState: &messages.HardState{Term: 1},
		Entries: []*messages.Entry{{Term: 1, Index: index, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: []byte(fmt.Sprint(index))}}}
}

func wantAppended(t *testing.T, m any, group, seq, last uint64) {
	t.Helper()
	r, ok := m.(*messages.StorageAppendResult)
	if !ok {
		t.Fatalf("got %T, want the result of group %d seq %d", m, group, seq)
	}
	if r.GetGroupId() != group || r.GetSeq() != seq || r.GetError() != nil || r.GetLastIndex() != last {
		t.Fatalf("got group %d seq %d last %d err %v, want group %d seq %d last %d",
			r.GetGroupId(), r.GetSeq(), r.GetLastIndex(), r.GetError(), group, seq, last)
	}
}

func waitEntered(t *testing.T, s *gatedStore) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never called Append")
	}
}

// The appends of two groups that wait while a sync runs go to the store
// together in the next Append, and each group's results come back in the
// order it asked; a load queued behind a group's appends sees them.
func TestSharedWriterBatchesGroupsAndKeepsEachGroupsOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	sw, err := NewSharedWriter(st, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	a, _ := sw.w.register(1, system, false)
	b, _ := sw.w.register(2, system, false)
	defer a.close()
	defer b.close()
	inA, inB := newInbox(t, system), newInbox(t, system)

	// Group 1's first append takes the writer into a sync that the disk
	// holds; meanwhile both groups queue more.
	release := st.holdAppends()
	a.submit(storageJob{append: appendOne(1, 1, 1), replyTo: inA.pid})
	waitEntered(t, st)
	a.submit(storageJob{append: appendOne(1, 2, 2), replyTo: inA.pid})
	b.submit(storageJob{append: appendOne(2, 1, 1), replyTo: inB.pid})
	a.submit(storageJob{append: appendOne(1, 3, 3), replyTo: inA.pid})
	b.submit(storageJob{append: appendOne(2, 2, 2), replyTo: inB.pid})
	b.submit(storageJob{run: func(l *storageLane) {
		last, err := l.w.st.LastIndex(2)
		l.system.Root.Send(inB.pid, fmt.Sprintf("load: last %d err %v", last, err))
	}})
	inA.nothing(t, "an append answered before its sync")
	release()

	for seq := uint64(1); seq <= 3; seq++ {
		wantAppended(t, inA.next(t), 1, seq, seq)
	}
	wantAppended(t, inB.next(t), 2, 1, 1)
	wantAppended(t, inB.next(t), 2, 2, 2)
	if got := inB.next(t); got != "load: last 2 err <nil>" {
		t.Fatalf("the load queued behind group 2's appends saw %q", got)
	}
	calls := st.appendCalls()
	if want := [][]uint64{{1}, {1, 1, 2, 2}}; !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("Append calls carried groups %v, want %v: the waiting appends of both groups in one sync", calls, want)
	}
	if s := sw.Stats(); s.Batches != 2 || s.Appends != 5 {
		t.Errorf("writer stats %+v, want 2 batches of 5 appends", s)
	}
	if s := a.stats(); s.Batches != 2 || s.Appends != 3 {
		t.Errorf("group 1 stats %+v, want its 3 appends in 2 batches", s)
	}
	if s := b.stats(); s.Batches != 1 || s.Appends != 2 {
		t.Errorf("group 2 stats %+v, want its 2 appends in 1 batch", s)
	}
	a.close()
	b.close()
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
}

// A failed sync fails the appends of every group in the batch, and every
// later append of every group, without touching the store again.
func TestSharedWriterSyncFailureFailsEveryGroup(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	sw, _ := NewSharedWriter(st, WriterOptions{})
	defer sw.Close()
	a, _ := sw.w.register(1, system, false)
	b, _ := sw.w.register(2, system, false)
	defer a.close()
	defer b.close()
	inA, inB := newInbox(t, system), newInbox(t, system)

	a.submit(storageJob{append: appendOne(1, 1, 1), replyTo: inA.pid})
	wantAppended(t, inA.next(t), 1, 1, 1)

	release := st.holdAppends()
	a.submit(storageJob{append: appendOne(1, 2, 2), replyTo: inA.pid})
	waitEntered(t, st)
	a.submit(storageJob{append: appendOne(1, 3, 3), replyTo: inA.pid})
	b.submit(storageJob{append: appendOne(2, 1, 1), replyTo: inB.pid})
	st.Store.(*store.MemStore).FailSyncs(errors.New("disk on fire"))
	release()

	failed := func(in *inbox, group, seq uint64) {
		t.Helper()
		r, ok := in.next(t).(*messages.StorageAppendResult)
		if !ok || r.GetGroupId() != group || r.GetSeq() != seq || r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
			t.Fatalf("group %d seq %d: got %v, want STORAGE_FAILED", group, seq, r)
		}
	}
	failed(inA, 1, 2)
	failed(inA, 1, 3)
	failed(inB, 2, 1)
	calls := len(st.appendCalls())
	b.submit(storageJob{append: appendOne(2, 2, 1), replyTo: inB.pid})
	failed(inB, 2, 2)
	if got := len(st.appendCalls()); got != calls {
		t.Errorf("the writer called Append %d more times after the store failed", got-calls)
	}
	if !a.stats().Failed || !b.stats().Failed || !sw.Stats().Failed {
		t.Errorf("Failed not set: group 1 %+v, group 2 %+v, writer %+v", a.stats(), b.stats(), sw.Stats())
	}
}

// A snapshot body being written for one group holds up that group's later
// work only: the other group's appends go on.
func TestSharedWriterSlowSnapshotHoldsOnlyItsGroup(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	sw, _ := NewSharedWriter(st, WriterOptions{})
	defer sw.Close()
	a, _ := sw.w.register(1, system, false)
	b, _ := sw.w.register(2, system, false)
	defer a.close()
	defer b.close()
	inA, inB := newInbox(t, system), newInbox(t, system)

	body := make(chan struct{})
	defer func() {
		select {
		case <-body:
		default:
			close(body)
		}
	}()
	a.submit(storageJob{slow: true, run: func(l *storageLane) {
		<-body
		l.system.Root.Send(inA.pid, "snapshot written")
	}})
	a.submit(storageJob{append: appendOne(1, 1, 1), replyTo: inA.pid})
	b.submit(storageJob{append: appendOne(2, 1, 1), replyTo: inB.pid})
	wantAppended(t, inB.next(t), 2, 1, 1)
	inA.nothing(t, "group 1's append overtook its snapshot")
	close(body)
	if got := inA.next(t); got != "snapshot written" {
		t.Fatalf("got %v, want the snapshot first", got)
	}
	wantAppended(t, inA.next(t), 1, 1, 1)
	a.close()
	b.close()
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
}

// groupOnShared starts a one-node group on the shared writer and founds it.
func groupOnShared(t *testing.T, system *actor.ActorSystem, sw *SharedWriter, group uint64) (*Node, *logSM) {
	t.Helper()
	cfg := testConfig(1)
	cfg.GroupID, cfg.SharedWriter = group, sw
	sm := &logSM{}
	n, err := Start(system, cfg, sm, sw.Store())
	if err != nil {
		t.Fatalf("start group %d: %v", group, err)
	}
	if err := n.Initialize(ctxT(t, 10*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatalf("initialize group %d: %v", group, err)
	}
	return n, sm
}

// Three groups on one store and one shared writer: their concurrent
// writes share syncs, each group applies exactly its own writes, the
// per-node counters add up to the writer's, and stopping one group leaves
// the others writing.
func TestGroupsShareOneWriter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	st.delay = time.Millisecond // a disk whose syncs take time, as real ones do
	sw, err := NewSharedWriter(st, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const groups, writers, each = 3, 8, 15
	nodes := make([]*Node, groups)
	sms := make([]*logSM, groups)
	for i := range nodes {
		nodes[i], sms[i] = groupOnShared(t, system, sw, uint64(i+1))
	}
	for i, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("group %d leads", i+1), n.IsLeader)
	}
	if got := sw.Groups(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("Groups() = %v", got)
	}
	before := sw.Stats()

	var wg sync.WaitGroup
	var failures atomic.Int32
	for g, n := range nodes {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if _, err := n.ClientWrite(ctxT(t, 20*time.Second), []byte(fmt.Sprintf("g%d-w%d-%d", g+1, w, i))); err != nil {
						failures.Add(1)
						t.Errorf("group %d writer %d: %v", g+1, w, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.FailNow()
	}
	for g, sm := range sms {
		data := sm.snapshotData()
		if len(data) != writers*each {
			t.Errorf("group %d applied %d writes, want %d", g+1, len(data), writers*each)
		}
		// Each writer's writes are applied in the order it made them.
		next := make([]int, writers)
		for _, d := range data {
			var gg, w, i int
			if _, err := fmt.Sscanf(d, "g%d-w%d-%d", &gg, &w, &i); err != nil || gg != g+1 || i != next[w] {
				t.Fatalf("group %d applied %q out of place", g+1, d)
			}
			next[w]++
		}
	}

	// The syncs were shared: fewer Append calls than appends, and calls
	// that carried more than one group.
	after := sw.Stats()
	batches, appends := after.Batches-before.Batches, after.Appends-before.Appends
	mixed := 0
	for _, c := range st.appendCalls() {
		if slices.ContainsFunc(c, func(g uint64) bool { return g != c[0] }) {
			mixed++
		}
	}
	t.Logf("%d writes to %d groups: %d appends in %d syncs, %d of them for several groups",
		groups*writers*each, groups, appends, batches, mixed)
	if batches >= appends || mixed == 0 {
		t.Errorf("%d appends took %d syncs, %d shared between groups: want groups to share syncs", appends, batches, mixed)
	}
	var sum StorageStats
	for _, n := range nodes {
		s := n.StorageStats()
		sum.Appends += s.Appends
		if s.Batches > after.Batches || s.Batches == 0 {
			t.Errorf("a node counts %d batches, the writer %d", s.Batches, after.Batches)
		}
		sum.Batches += s.Batches
	}
	if sum.Appends != after.Appends || sum.Batches <= after.Batches {
		t.Errorf("nodes count %+v in all, the writer %+v: appends must add up, batches be shared", sum, after)
	}

	// Group 1 stops; the writer goes on for groups 2 and 3.
	if err := nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if got := sw.Groups(); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("after group 1 stopped, Groups() = %v", got)
	}
	for g, n := range nodes[1:] {
		if _, err := n.ClientWrite(ctxT(t, 20*time.Second), []byte("after")); err != nil {
			t.Fatalf("group %d after group 1 stopped: %v", g+2, err)
		}
	}
	for _, n := range nodes[1:] {
		_ = n.Stop()
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
}

// A disk that fails under one group fails every group on the store.
func TestSharedWriterFailureStopsEveryGroupsWrites(t *testing.T) {
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	sw, _ := NewSharedWriter(st, WriterOptions{})
	defer sw.Close()
	n1, sm1 := groupOnShared(t, system, sw, 1)
	n2, _ := groupOnShared(t, system, sw, 2)
	defer n1.Stop()
	defer n2.Stop()
	waitFor(t, 20*time.Second, "both groups lead", func() bool { return n1.IsLeader() && n2.IsLeader() })
	write(t, n1, "durable")
	write(t, n2, "durable")

	st.Store.(*store.MemStore).FailSyncs(errors.New("disk on fire"))
	if _, err := n1.ClientWrite(ctxT(t, 10*time.Second), []byte("lost")); !errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("group 1's write meeting the failure: %v", err)
	}
	// Group 2 never wrote to the failed disk itself; its writes fail all
	// the same, and it says why.
	for i := range 2 {
		_, err := n2.ClientWrite(ctxT(t, 10*time.Second), []byte("refused"))
		if err == nil {
			t.Fatalf("group 2 write %d succeeded on a failed store", i)
		}
		if i == 1 && !errors.Is(err, ErrStorageFailed) {
			t.Fatalf("group 2 write %d: %v, want STORAGE_FAILED", i, err)
		}
	}
	for i, n := range []*Node{n1, n2} {
		if !n.StorageStats().Failed {
			t.Errorf("group %d: StorageStats.Failed not set", i+1)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("group %d reports the storage error", i+1), func() bool {
			return n.Metrics().GetStorageError() != nil
		})
	}
	if got := sm1.snapshotData(); !slices.Equal(got, []string{"durable"}) {
		t.Errorf("group 1 applied %v; only the write before the failure may be applied", got)
	}
}

// What Start and Close refuse, with errors that say why.
func TestSharedWriterMisuse(t *testing.T) {
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	other := newGatedStore(t)
	sw, _ := NewSharedWriter(st, WriterOptions{})
	sm := &logSM{}
	cfg := func(group uint64, mod func(*Config)) Config {
		c := testConfig(1)
		c.GroupID, c.SharedWriter = group, sw
		if mod != nil {
			mod(&c)
		}
		return c
	}
	n, err := Start(system, cfg(1, nil), sm, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		st   store.Store
		want string
	}{
		{"another store", cfg(2, nil), other, "writes another store"},
		{"inline storage", cfg(2, func(c *Config) { c.InlineStorage = true }), st, "exclude each other"},
		{"the same group twice in another actor system", cfg(1, nil), st, "already writes through this writer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sys := system
			if strings.Contains(tt.name, "another actor system") {
				sys = quietSystem()
				defer sys.Shutdown()
			}
			if _, err := Start(sys, tt.cfg, &logSM{}, tt.st); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start: %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if _, err := NewSharedWriter(nil, WriterOptions{}); err == nil {
		t.Error("NewSharedWriter(nil) succeeded")
	}

	// Closing the writer under a running node says so, and the node's
	// later writes fail instead of hanging.
	if err := n.Initialize(ctxT(t, 10*time.Second), &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "group 1 leads", n.IsLeader)
	if err := sw.Close(); err == nil || !strings.Contains(err.Error(), "[1]") {
		t.Fatalf("Close under group 1: %v, want an error naming it", err)
	}
	if _, err := n.ClientWrite(ctxT(t, 10*time.Second), []byte("late")); err == nil {
		t.Fatal("a write after the writer closed succeeded")
	}
	if _, err := Start(system, cfg(2, nil), &logSM{}, st); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start on a closed writer: %v, want STOPPED", err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// Big appends of several groups do not pile into one unbounded batch: the
// writer writes what it gathered before a batch would pass its bound, and
// each group's appends still complete in order.
func TestSharedWriterBoundsABatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	system := quietSystem()
	defer system.Shutdown()
	st := newGatedStore(t)
	sw, _ := NewSharedWriter(st, WriterOptions{})
	defer sw.Close()
	a, _ := sw.w.register(1, system, false)
	b, _ := sw.w.register(2, system, false)
	defer a.close()
	defer b.close()
	inA, inB := newInbox(t, system), newInbox(t, system)
	big := func(group, seq, index uint64) *messages.StorageAppend {
		m := appendOne(group, seq, index)
		m.Entries[0].Data = make([]byte, maxBatchBytes*6/10)
		return m
	}

	release := st.holdAppends()
	a.submit(storageJob{append: appendOne(1, 1, 1), replyTo: inA.pid})
	waitEntered(t, st)
	a.submit(storageJob{append: big(1, 2, 2), replyTo: inA.pid})
	a.submit(storageJob{append: appendOne(1, 3, 3), replyTo: inA.pid})
	b.submit(storageJob{append: big(2, 1, 1), replyTo: inB.pid})
	b.submit(storageJob{append: appendOne(2, 2, 2), replyTo: inB.pid})
	release()
	for seq := uint64(1); seq <= 3; seq++ {
		wantAppended(t, inA.next(t), 1, seq, seq)
	}
	wantAppended(t, inB.next(t), 2, 1, 1)
	wantAppended(t, inB.next(t), 2, 2, 2)
	if want, calls := [][]uint64{{1}, {1, 1}, {2, 2}}, st.appendCalls(); !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("Append calls carried groups %v, want %v: two big appends in one batch", calls, want)
	}
}
