// Command peers is the benchmark worker for the systems Raftor is compared
// with: hashicorp/raft, etcd-io/raft and dragonboat. The benchmark program
// (examples/bench) builds it, writes a load.Spec as JSON to its stdin, and
// reads one load.Result JSON line per client count from its stdout. It lives
// in a module of its own so that Raftor's module graph does not carry the
// peers' dependencies.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raftor/raftor/examples/bench/peers/internal/load"
)

// applied counts the entries every node's state machine applied.
var applied atomic.Int64

func main() {
	var s load.Spec
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		fmt.Fprintf(os.Stderr, "peers: reading the spec from stdin: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, s); err != nil {
		fmt.Fprintf(os.Stderr, "peers: %s/%s: %v\n", s.System, s.Mode, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s load.Spec) error {
	c, err := start(ctx, s)
	if err != nil {
		return err
	}
	err = load.Execute(ctx, s, c, os.Stdout)
	// Shutting a cluster down can take a while (dragonboat waits for its
	// workers); the results are out already, so bound it.
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return err
}

func start(ctx context.Context, s load.Spec) (load.Cluster, error) {
	if s.Mode != "durable" && s.Mode != "minimal" {
		return nil, fmt.Errorf("unknown mode %q", s.Mode)
	}
	switch s.System {
	case "hashicorp":
		return startHashicorp(ctx, s.Mode, s.Dir)
	case "etcd":
		return startEtcd(ctx, s.Mode, s.Dir)
	case "dragonboat":
		return startDragonboat(ctx, s.Mode, s.Dir)
	}
	return nil, fmt.Errorf("unknown system %q", s.System)
}
