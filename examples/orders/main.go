// Command orders is a small order service whose state lives in Raft
// groups: orders are sharded over a few groups by order ID, every group
// has a replica on each of three protoactor cluster members, and the
// service's actors reach the groups only through Raftor's group client.
//
//	go run ./examples/orders
//
// runs the three members in this process on 127.0.0.1, places orders from
// the order desk actor of every member, stops one member, and shows that
// orders are still placed and read. README.md walks through the code.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	dir := fs.String("dir", "", "where the members keep their data (default: a temporary directory, removed at exit)")
	shards := fs.Int("shards", 4, "number of Raft groups the orders are sharded over")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *shards < 1 {
		fmt.Fprintln(os.Stderr, "--shards must be at least 1")
		os.Exit(2)
	}
	if err := run(ctx, *dir, *shards, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// run is the whole demonstration; it writes a story of what happens to out.
func run(ctx context.Context, dir string, shards int, out io.Writer) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "raftor-orders-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	quiet := slog.New(slog.DiscardHandler)
	svc, err := startService(dir, shards, quiet)
	if err != nil {
		return err
	}
	defer svc.stop()
	fmt.Fprintf(out, "3 members, %d order shards (Raft groups), a replica of every shard on every member\n", shards)

	// Every member's order desk places orders.
	for i, m := range svc.members {
		for n := range 3 {
			id := fmt.Sprintf("o-%d%d", i+1, n)
			r, err := m.place(ctx, id, fmt.Sprintf("%d widgets", n+1))
			if err != nil {
				return fmt.Errorf("member %d: place %s: %w", i+1, id, err)
			}
			fmt.Fprintf(out, "member %d placed %s in %s: %s\n", i+1, id, svc.shardOf(id), r)
		}
	}
	// Placing an order twice is refused by the state machine, not by luck.
	r, err := svc.members[1].place(ctx, "o-10", "9 widgets")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "member 2 placed o-10 again: %s\n", r)

	// Stop the member that leads the most shards; the others keep serving.
	victim := svc.busiestLeader()
	fmt.Fprintf(out, "stopping member %d, which leads %d shard(s)\n", victim+1, svc.leads(victim))
	svc.members[victim].stop()
	for i, m := range svc.members {
		if i == victim {
			continue
		}
		id := fmt.Sprintf("o-after-%d", i+1)
		r, err := m.place(ctx, id, "1 gadget")
		if err != nil {
			return fmt.Errorf("member %d after the stop: place %s: %w", i+1, id, err)
		}
		fmt.Fprintf(out, "member %d placed %s in %s: %s\n", i+1, id, svc.shardOf(id), r)
		v, err := m.lookup(ctx, "o-10")
		if err != nil {
			return fmt.Errorf("member %d after the stop: read o-10: %w", i+1, err)
		}
		fmt.Fprintf(out, "member %d reads o-10: %s\n", i+1, v)
	}
	fmt.Fprintln(out, "done")
	return nil
}
