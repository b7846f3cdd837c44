package cluster

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// A host with two single-replica groups in one actor system (no remote:
// the system's address is set to the replicas' address, so their PIDs are
// local), reached through a group client: the whole path, under -race.
func TestHostServesWritesAndQueriesThroughTheClient(t *testing.T) {
	system := quietSystem()
	const addr = "127.0.0.1:1"
	system.ProcessRegistry.Address = addr
	quiet := slog.New(slog.DiscardHandler)
	rep := []Replica{{NodeID: 1, Address: addr}}
	dir, err := NewDirectory("t", Group{Name: "stock", ID: 1, Replicas: rep}, Group{Name: "audit", ID: 2, Replicas: rep})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.NewMemStore(store.Options{ClusterID: "t", NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	h, err := NewHost(system, HostConfig{ClusterID: "t", NodeID: 1, Store: st,
		StateMachine: func(g Group) (store.StateMachine, error) {
			return kvsm.Open(filepath.Join(tmp, g.Name), kvsm.Options{Logger: quiet, NoSync: true})
		},
		Query: func(g Group, sm store.StateMachine, q []byte) ([]byte, error) {
			if g.Name == "audit" {
				return nil, errors.New("audit is write-only")
			}
			v, _, err := sm.(*kvsm.SM).Get(q)
			return v, err
		},
		Node: actors.Config{TickInterval: 10 * time.Millisecond, Logger: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewGroupClient(system, ClientConfig{Directory: dir, Leaders: h.Leaders()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(); _ = h.Stop(); system.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, g := range dir.Groups() {
		if _, err := h.StartGroup(g); err != nil {
			t.Fatal(err)
		}
		if err := h.Initialize(ctx, g); err != nil {
			t.Fatal(err)
		}
		// Initialize again is harmless: the group has a log.
		if err := h.Initialize(ctx, g); err != nil {
			t.Fatalf("second Initialize: %v", err)
		}
	}
	if _, err := h.StartGroup(Group{Name: "stock", ID: 1, Replicas: rep}); err == nil {
		t.Fatal("a group started twice on one member")
	}
	if _, err := h.StartGroup(Group{Name: "elsewhere", ID: 3, Replicas: []Replica{{NodeID: 2, Address: "127.0.0.1:2"}}}); err == nil {
		t.Fatal("started a group that does not list this member")
	}

	if _, err := c.Write(ctx, "stock", kvsm.Put([]byte("widgets"), []byte("12"))); err != nil {
		t.Fatal(err)
	}
	v, err := c.Query(ctx, "stock", []byte("widgets"))
	if err != nil || string(v) != "12" {
		t.Fatalf("widgets = %q, %v after an acknowledged write", v, err)
	}
	if _, err := c.Query(ctx, "audit", []byte("x")); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("query refused by the application: err = %v, want INVALID", err)
	}
	if got := h.Leaders().Leader(1); got != 1 {
		t.Fatalf("leader table from local metrics: %d, want 1", got)
	}

	// A stopped group answers NOT_LEADER from the host, and the client
	// gives up at the deadline rather than hanging.
	if err := h.StopGroup(2); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelShort()
	if _, err := c.Query(short, "audit", []byte("x")); err == nil {
		t.Fatal("a query to a stopped group succeeded")
	}
	wshort, cancelW := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelW()
	if _, err := c.Write(wshort, "audit", kvsm.Put([]byte("a"), []byte("b"))); !errors.Is(err, actors.ErrUnknownOutcome) {
		t.Fatalf("write to a stopped group: err = %v, want UNKNOWN_OUTCOME", err)
	}
}
