package actors

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// logSM is a state machine that records the data of every NORMAL entry it
// applies, in order, and answers each with "ok:<index>".
type logSM struct {
	mu          sync.Mutex
	applied     uint64
	appliedTerm uint64
	data        [][]byte
	failWith    error
	// panicAt makes Apply panic once, before applying that index.
	panicAt uint64
}

func (s *logSM) Apply(entries []*messages.Entry) ([]store.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWith != nil {
		return nil, s.failWith
	}
	out := make([]store.Result, len(entries))
	for i, e := range entries {
		if e.GetIndex() <= s.applied {
			out[i].Skipped = true
			continue
		}
		if e.GetIndex() == s.panicAt {
			s.panicAt = 0
			panic(fmt.Sprintf("logSM: injected panic at %d", e.GetIndex()))
		}
		if e.GetIndex() != s.applied+1 {
			return nil, fmt.Errorf("logSM: entry %d after %d", e.GetIndex(), s.applied)
		}
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL {
			d := e.GetData()
			if e.GetCommand() != nil {
				d = e.GetCommand().GetValue()
			}
			s.data = append(s.data, append([]byte(nil), d...))
			out[i].Data = []byte(fmt.Sprintf("ok:%d", e.GetIndex()))
			out[i].Typed = e.GetCommand()
		}
		s.applied, s.appliedTerm = e.GetIndex(), e.GetTerm()
	}
	return out, nil
}

type logSnap struct {
	index, term uint64
	body        []byte
}

func (s *logSnap) Index() uint64 { return s.index }
func (s *logSnap) Term() uint64  { return s.term }
func (s *logSnap) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(s.body)
	return int64(n), err
}
func (s *logSnap) Close() error { return nil }

func (s *logSM) Snapshot() (store.StateSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, s.applied)
	_ = binary.Write(&b, binary.BigEndian, s.appliedTerm)
	_ = binary.Write(&b, binary.BigEndian, uint64(len(s.data)))
	for _, d := range s.data {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(d)))
		b.Write(d)
	}
	return &logSnap{index: s.applied, term: s.appliedTerm, body: b.Bytes()}, nil
}

func (s *logSM) Restore(r io.Reader) error {
	var applied, term, n uint64
	if err := binary.Read(r, binary.BigEndian, &applied); err != nil {
		return err
	}
	if err := binary.Read(r, binary.BigEndian, &term); err != nil {
		return err
	}
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err
	}
	data := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		var l uint32
		if err := binary.Read(r, binary.BigEndian, &l); err != nil {
			return err
		}
		d := make([]byte, l)
		if _, err := io.ReadFull(r, d); err != nil {
			return err
		}
		data = append(data, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.appliedTerm, s.data = applied, term, data
	return nil
}

func (s *logSM) LastApplied() (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied, s.appliedTerm
}

func (s *logSM) snapshotData() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.data))
	for i, d := range s.data {
		out[i] = string(d)
	}
	return out
}

// quietSystem is an actor system whose own logging is discarded.
func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testLogger() *slog.Logger {
	if os.Getenv("RAFTOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

const testClusterID = "test"

// testConfig is fast enough for tests and slow enough for a loaded 2-core
// machine under -race: 20ms ticks, elections after 500ms-1s.
func testConfig(id uint64) Config {
	return Config{ClusterID: testClusterID, NodeID: id, TickInterval: 20 * time.Millisecond, ElectionTicks: 25,
		HeartbeatTicks: 2, Logger: testLogger()}
}

type testNode struct {
	id   uint64
	node *Node
	sm   *logSM
	st   store.Store
}

type testCluster struct {
	t      *testing.T
	system *actor.ActorSystem
	nodes  map[uint64]*testNode
	cfg    func(id uint64) Config
}

func newTestCluster(t *testing.T, cfg func(id uint64) Config) *testCluster {
	t.Helper()
	if cfg == nil {
		cfg = testConfig
	}
	tc := &testCluster{t: t, system: quietSystem(), nodes: map[uint64]*testNode{}, cfg: cfg}
	t.Cleanup(tc.stopAll)
	return tc
}

// start starts node id with an empty store.
func (tc *testCluster) start(id uint64) *testNode {
	tc.t.Helper()
	st, err := store.NewMemStore(store.Options{ClusterID: testClusterID, NodeID: id, Incarnation: id})
	if err != nil {
		tc.t.Fatal(err)
	}
	return tc.startWith(id, &logSM{}, st)
}

func (tc *testCluster) startWith(id uint64, sm *logSM, st store.Store) *testNode {
	tc.t.Helper()
	n, err := Start(tc.system, tc.cfg(id), sm, st)
	if err != nil {
		tc.t.Fatalf("start node %d: %v", id, err)
	}
	tn := &testNode{id: id, node: n, sm: sm, st: st}
	tc.nodes[id] = tn
	return tn
}

func (tc *testCluster) stop(id uint64) {
	if n := tc.nodes[id]; n != nil {
		_ = n.node.Stop()
		delete(tc.nodes, id)
	}
}

func (tc *testCluster) stopAll() {
	for id := range tc.nodes {
		tc.stop(id)
	}
	if !tc.system.IsStopped() {
		tc.system.Shutdown()
	}
}

// boot starts nodes 1..n and initializes them as one cluster.
func (tc *testCluster) boot(n int) {
	tc.t.Helper()
	m := &messages.Membership{}
	for id := uint64(1); id <= uint64(n); id++ {
		tc.start(id)
		m.Voters = append(m.Voters, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.nodes[1].node.Initialize(ctx, m); err != nil {
		tc.t.Fatalf("initialize: %v", err)
	}
}

// leader waits until exactly one running node leads, and returns it.
func (tc *testCluster) leader() *testNode {
	tc.t.Helper()
	var l *testNode
	waitFor(tc.t, 20*time.Second, "a leader", func() bool {
		l = nil
		var term uint64
		for _, n := range tc.nodes {
			m := n.node.Metrics()
			if m.GetRole() == messages.Role_ROLE_LEADER && m.GetTerm() >= term {
				l, term = n, m.GetTerm()
			}
		}
		if l == nil {
			return false
		}
		// Every other running node must follow that leader in that term.
		for _, n := range tc.nodes {
			m := n.node.Metrics()
			if n != l && (m.GetLeaderId() != l.id || m.GetTerm() != term) {
				return false
			}
		}
		return true
	})
	return l
}

// waitApplied waits until every running node applied at least index.
func (tc *testCluster) waitApplied(index uint64) {
	tc.t.Helper()
	waitFor(tc.t, 20*time.Second, fmt.Sprintf("every node applied %d", index), func() bool {
		for _, n := range tc.nodes {
			if a, _ := n.sm.LastApplied(); a < index {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// write writes data through node n, retrying while leadership settles.
func write(t *testing.T, n *Node, data string) *WriteResult {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := n.ClientWrite(ctxT(t, 5*time.Second), []byte(data))
		if err == nil {
			return res
		}
		if time.Now().After(deadline) || !(errors.Is(err, ErrNotLeader) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrTransferInProgress)) {
			t.Fatalf("write %q: %v", data, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxB(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	b.Cleanup(cancel)
	return ctx
}
