// Command kvstore is Raftor's main example: a replicated key-value service.
//
// Without flags it runs a three-node cluster in this process: three actor
// systems talking over protoactor remote on 127.0.0.1, each node's log and
// state machine on Pebble under data/kvstore/node-N, and an HTTP API on
// each node. With --id it runs one node of a cluster whose nodes run in
// separate processes. README.md lists the flags and the HTTP API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/raftor/raftor/messages"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program: 0 after a clean stop, 2 for a bad command
// line or an unusable directory or port, 1 for any other failure.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "kvstore: %v\nRun kvstore --help for the flags.\n", err)
		return 2
	}
	if cfg.local {
		return runLocal(ctx, cfg, stdout, stderr)
	}
	s, err := startServer(cfg, newLogger(stderr, cfg.logLevel))
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "kvstore: node %d serves HTTP at %s (raft %s, data in %s)\n", cfg.id, s.httpURL, cfg.raftAddr, cfg.dir)
	if err := s.form(ctx, stdout); err != nil {
		s.shutdown(false)
		if ctx.Err() != nil {
			return 0 // interrupted while forming
		}
		return fail(stderr, err)
	}
	select {
	case <-ctx.Done():
	case err := <-s.served:
		s.shutdown(false)
		return fail(stderr, fmt.Errorf("HTTP server stopped: %w", err))
	}
	fmt.Fprintf(stdout, "kvstore: node %d stopping\n", cfg.id)
	s.shutdown(true)
	return 0
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "kvstore: %v\n", err)
	var se *setupError
	if errors.As(err, &se) {
		return 2
	}
	return 1
}

// runLocal runs three nodes in this process, each in its own actor system
// with its own remote, exactly as three processes would.
func runLocal(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	const n = 3
	logger := newLogger(stderr, cfg.logLevel)
	peers := map[uint64]string{}
	for i := range uint64(n) {
		peers[i+1] = "127.0.0.1:" + strconv.Itoa(cfg.raftPort+int(i))
	}
	var servers []*server
	stopAll := func() {
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() { s.shutdown(false) })
		}
		wg.Wait()
	}
	for i := range uint64(n) {
		nc := cfg
		nc.local = false
		nc.id = i + 1
		nc.peers = peers
		nc.raftAddr = peers[nc.id]
		nc.httpAddr = "127.0.0.1:" + strconv.Itoa(cfg.httpPort+int(i))
		nc.dir = filepath.Join(cfg.dir, "node-"+strconv.FormatUint(nc.id, 10))
		s, err := startServer(nc, logger)
		if err != nil {
			stopAll()
			return fail(stderr, fmt.Errorf("node %d: %w", nc.id, err))
		}
		servers = append(servers, s)
	}
	for _, s := range servers {
		if err := s.form(ctx, io.Discard); err != nil {
			stopAll()
			if ctx.Err() != nil {
				return 0
			}
			return fail(stderr, fmt.Errorf("node %d: %w", s.cfg.id, err))
		}
	}
	fmt.Fprintf(stdout, "kvstore: three nodes of cluster %q, data under %s\n", cfg.clusterID, cfg.dir)
	for _, s := range servers {
		fmt.Fprintf(stdout, "  node %d: %s  (raft %s)\n", s.cfg.id, s.httpURL, s.cfg.raftAddr)
	}
	if leader, term, ok := waitLeader(ctx, servers, 30*time.Second); ok {
		fmt.Fprintf(stdout, "kvstore: node %d is the leader (term %d). Try:\n", leader.cfg.id, term)
		u := servers[0].httpURL
		fmt.Fprintf(stdout, "  curl -X PUT %s/kv/greeting -d hello\n  curl %s/kv/greeting\n  curl %s/status\n",
			u, servers[len(servers)-1].httpURL, leader.httpURL)
		fmt.Fprintln(stdout, "Stop with Ctrl-C.")
	} else if ctx.Err() == nil {
		fmt.Fprintln(stderr, "kvstore: no leader after 30s; still serving (see GET /status)")
	}
	select {
	case <-ctx.Done():
	case err := <-firstServed(servers):
		stopAll()
		return fail(stderr, fmt.Errorf("HTTP server stopped: %w", err))
	}
	fmt.Fprintln(stdout, "kvstore: stopping")
	stopAll()
	return 0
}

// waitLeader waits until every node names the same leader and that node
// says it leads.
func waitLeader(ctx context.Context, servers []*server, d time.Duration) (*server, uint64, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		id := servers[0].node.Metrics().GetLeaderId()
		var leader *server
		agreed := id != 0
		for _, s := range servers {
			m := s.node.Metrics()
			if m.GetLeaderId() != id {
				agreed = false
			}
			if s.cfg.id == id && m.GetRole() == messages.Role_ROLE_LEADER {
				leader = s
			}
		}
		if agreed && leader != nil {
			return leader, leader.node.Metrics().GetTerm(), true
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func firstServed(servers []*server) <-chan error {
	out := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if err, ok := <-s.served; ok {
				out <- err
			}
		}()
	}
	return out
}
