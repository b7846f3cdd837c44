package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/raftor/raftor/examples/bench/peers/internal/load"
)

// Each driver forms a three-node cluster, commits writes through its leader,
// applies them, and (where it can see them) counts the fsyncs that made them
// durable.
func TestEachDriverCommitsWrites(t *testing.T) {
	for _, system := range []string{"hashicorp", "etcd", "dragonboat"} {
		for _, mode := range []string{"durable", "minimal"} {
			t.Run(system+"/"+mode, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c, err := start(ctx, load.Spec{System: system, Mode: mode, Dir: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := load.Ready(ctx, c, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				before := applied.Load()
				f0, e0, visible := c.Counters()
				const writes = 20
				for i := range writes {
					if err := c.Write(ctx, 0, fmt.Appendf(nil, "write %d", i)); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
				}
				// The writer's node applied each write before it was acknowledged.
				if got := applied.Load() - before; got < writes {
					t.Fatalf("%d entries applied after %d acknowledged writes", got, writes)
				}
				f1, e1, _ := c.Counters()
				wantVisible := mode == "durable" && system != "dragonboat"
				if visible != wantVisible {
					t.Fatalf("fsyncs visible = %v, want %v", visible, wantVisible)
				}
				// Sequential writes: every node syncs each one (leader and two followers).
				if visible && (f1-f0 < writes || e1-e0 < writes) {
					t.Fatalf("%d fsyncs carrying %d entries for %d writes, want at least one each", f1-f0, e1-e0, writes)
				}
			})
		}
	}
}

func TestUnknownSystemOrModeIsAnError(t *testing.T) {
	for _, s := range []load.Spec{{System: "zookeeper", Mode: "durable"}, {System: "etcd", Mode: "fast"}} {
		if c, err := start(context.Background(), s); err == nil {
			c.Close()
			t.Errorf("start(%s/%s) succeeded", s.System, s.Mode)
		}
	}
}
