package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// The groups of a host write through one storage writer: the host's own,
// closed by Stop, or one the application hands in, which Stop leaves open.
func TestHostGroupsShareOneWriter(t *testing.T) {
	for _, tt := range []struct {
		name string
		own  bool // the application makes the writer
	}{
		{"the host's writer", false},
		{"the application's writer", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			system := quietSystem()
			defer system.Shutdown()
			const addr = "127.0.0.1:1"
			system.ProcessRegistry.Address = addr
			quiet := slog.New(slog.DiscardHandler)
			st, err := store.NewMemStore(store.Options{ClusterID: "t", NodeID: 1})
			if err != nil {
				t.Fatal(err)
			}
			node := actors.Config{TickInterval: 10 * time.Millisecond, Logger: quiet}
			var mine *actors.SharedWriter
			if tt.own {
				mine, _ = actors.NewSharedWriter(st, actors.WriterOptions{})
				defer mine.Close()
				node.SharedWriter = mine
			}
			tmp := t.TempDir()
			h, err := NewHost(system, HostConfig{ClusterID: "t", NodeID: 1, Store: st, Node: node,
				StateMachine: func(g Group) (store.StateMachine, error) {
					return kvsm.Open(filepath.Join(tmp, g.Name), kvsm.Options{Logger: quiet, NoSync: true})
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Stop()
			if tt.own && h.writer != mine {
				t.Fatal("the host did not take the application's writer")
			}
			rep := []Replica{{NodeID: 1, Address: addr}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var nodes []*actors.Node
			for id := uint64(1); id <= 3; id++ {
				g := Group{Name: fmt.Sprintf("shelf-%d", id), ID: id, Replicas: rep}
				n, err := h.StartGroup(g)
				if err != nil {
					t.Fatal(err)
				}
				if err := h.Initialize(ctx, g); err != nil {
					t.Fatal(err)
				}
				nodes = append(nodes, n)
			}
			if got := h.writer.Groups(); !slices.Equal(got, []uint64{1, 2, 3}) {
				t.Fatalf("the writer serves groups %v, want 1-3", got)
			}
			for _, n := range nodes {
				for !n.IsLeader() {
					if ctx.Err() != nil {
						t.Fatal("a group elected no leader")
					}
					time.Sleep(5 * time.Millisecond)
				}
				if _, err := n.ClientWrite(ctx, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			// The host's figures are the writer's, over every group.
			var own uint64
			for _, n := range nodes {
				own += n.StorageStats().Appends
			}
			if s := h.StorageStats(); s.Appends != own || s.Batches == 0 || s.Batches > s.Appends {
				t.Fatalf("host stats %+v, the groups' appends add up to %d", s, own)
			}

			// Stopping a group leaves the writer to the others.
			if err := h.StopGroup(2); err != nil {
				t.Fatal(err)
			}
			if _, err := nodes[2].ClientWrite(ctx, []byte("y")); err != nil {
				t.Fatalf("group 3 after group 2 stopped: %v", err)
			}
			if err := h.Stop(); err != nil {
				t.Fatal(err)
			}
			// The host closed its own writer and left the application's open.
			probe, err := kvsm.Open(filepath.Join(tmp, "probe"), kvsm.Options{Logger: quiet, NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer probe.Close()
			n, err := actors.Start(system, actors.Config{ClusterID: "t", GroupID: 9, NodeID: 1, SharedWriter: h.writer, Logger: quiet}, probe, st)
			if tt.own {
				if err != nil {
					t.Fatalf("the application's writer after Host.Stop: %v", err)
				}
				_ = n.Stop()
				if err := mine.Close(); err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, actors.ErrStopped) {
				t.Fatalf("the host's writer after Host.Stop: %v, want STOPPED", err)
			}
		})
	}
}
