package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// setupError is a problem with what the operator asked for (a directory
// that cannot be written, a port in use, a directory of another node):
// the process exits with status 2, like for a bad flag.
type setupError struct{ msg string }

func (e *setupError) Error() string { return e.msg }

func setupf(format string, args ...any) error { return &setupError{msg: fmt.Sprintf(format, args...)} }

// server is one running node: its actor system with remote, its log store
// and state machine, the Raft node and the HTTP API.
type server struct {
	cfg     config
	log     *slog.Logger
	system  *actor.ActorSystem
	remote  *remote.Remote
	st      store.Store
	sm      *kvsm.SM
	node    *actors.Node
	http    *http.Server
	httpURL string
	served  chan error
	// hasData is set when the log held entries or a snapshot at start:
	// the node belongs to a cluster already and ignores --peers and --join.
	hasData bool
}

// checkDir makes sure dir exists and takes new files.
func checkDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return setupf("--dir %s cannot be created: %v", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return setupf("--dir %s is not writable: %v", dir, err)
	}
	name := f.Name()
	_ = f.Close()
	if err := os.Remove(name); err != nil {
		return setupf("--dir %s: removing a test file: %v", dir, err)
	}
	return nil
}

// claimPorts checks both ports before anything starts. The raft port is
// released again for the remote to take; the HTTP listener is kept.
func claimPorts(raftAddr, httpAddr string) (net.Listener, error) {
	l, err := net.Listen("tcp", raftAddr)
	if err != nil {
		return nil, setupf("--raft-addr %s cannot be used: %v", raftAddr, unwrapNet(err))
	}
	_ = l.Close()
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return nil, setupf("--http-addr %s cannot be used: %v", httpAddr, unwrapNet(err))
	}
	return hl, nil
}

func unwrapNet(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// startServer starts one node as cfg says, and the HTTP API. It forms or
// joins no cluster yet: see form.
func startServer(cfg config, logger *slog.Logger) (_ *server, err error) {
	if err := checkDir(cfg.dir); err != nil {
		return nil, err
	}
	httpLn, err := claimPorts(cfg.raftAddr, cfg.httpAddr)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, log: logger.With("node", cfg.id), served: make(chan error, 1)}
	defer func() {
		if err != nil {
			_ = httpLn.Close()
			s.close()
		}
	}()

	st, err := store.OpenPebble(filepath.Join(cfg.dir, "log"), store.PebbleOptions{
		Options: store.Options{ClusterID: cfg.clusterID, NodeID: cfg.id}, Logger: logger})
	if err != nil {
		if errors.Is(err, store.ErrWrongIdentity) {
			return nil, setupf("--dir %s: %v", cfg.dir, err)
		}
		return nil, fmt.Errorf("opening the log in %s: %w", cfg.dir, err)
	}
	s.st = st // only now: a nil *PebbleStore in the interface would not be nil
	state, err := s.st.Load(1)
	if err != nil {
		return nil, fmt.Errorf("loading the log in %s: %w", cfg.dir, err)
	}
	s.hasData = state.GetLastIndex() > 0 || state.GetSnapshot().GetIndex() > 0
	s.sm, err = kvsm.Open(filepath.Join(cfg.dir, "sm"), kvsm.Options{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("opening the state machine in %s: %w", cfg.dir, err)
	}

	s.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		if cfg.debug {
			return logger.With("component", "protoactor")
		}
		return slog.New(slog.DiscardHandler)
	}))
	s.remote, err = remote.Start(s.system, remote.Config{Address: cfg.raftAddr, Logger: logger})
	if err != nil {
		return nil, setupf("--raft-addr %s cannot be used: %v", cfg.raftAddr, err)
	}
	metrics := newServiceMetrics()
	s.node, err = actors.Start(s.system, actors.Config{
		ClusterID:        cfg.clusterID,
		NodeID:           cfg.id,
		Address:          cfg.raftAddr,
		TickInterval:     cfg.tickInterval,
		ElectionTicks:    cfg.electionTicks,
		MaxEntryBytes:    cfg.maxValueBytes + maxKeyBytes + entryOverhead,
		MaxAppendBytes:   maxAppendBytes,
		SnapshotEntries:  cfg.snapshotEntries,
		SnapshotBytes:    cfg.snapshotBytes,
		SnapshotTrailing: cfg.snapshotKeep,
		RequestTimeout:   cfg.requestTimeout,
		Logger:           logger,
	}, s.sm, timedStore{Store: s.st, m: metrics})
	if err != nil {
		return nil, fmt.Errorf("starting the node: %w", err)
	}

	a := &api{node: s.node, sm: s.sm, system: s.system, clusterID: cfg.clusterID, maxValue: cfg.maxValueBytes,
		timeout: cfg.requestTimeout, admin: cfg.adminTimeout(), metrics: metrics, log: s.log}
	s.http = &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	s.httpURL = "http://" + httpLn.Addr().String()
	go func() { s.served <- s.http.Serve(httpLn) }()
	return s, nil
}

// form makes the node part of a cluster: on an empty log, the nodes of
// --peers initialize it with the same membership (entry 1 is the same on
// each, so any start order works), and --join asks a member to add this
// node as a learner. A node with data rejoins by itself.
func (s *server) form(ctx context.Context, out io.Writer) error {
	switch {
	case s.hasData:
		if s.cfg.peers != nil || s.cfg.join != "" {
			s.log.Info("kvstore: the data directory holds a log; --peers and --join are ignored")
		}
		fmt.Fprintf(out, "kvstore: node %d rejoins its cluster from %s\n", s.cfg.id, s.cfg.dir)
		return nil
	case s.cfg.peers != nil:
		if err := s.initialize(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "kvstore: node %d founds a cluster with nodes %v\n", s.cfg.id, sortedPeers(s.cfg.peers))
		return nil
	case s.cfg.join != "":
		if err := s.join(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "kvstore: node %d joined as a learner through %s; promote it with PUT /cluster/voters\n", s.cfg.id, s.cfg.join)
		return nil
	}
	fmt.Fprintf(out, "kvstore: node %d has no data, no --peers and no --join: it waits for a member to add it (POST /cluster/learners)\n", s.cfg.id)
	return nil
}

func (s *server) initialize(ctx context.Context) error {
	m := &messages.Membership{Voters: sortedPeers(s.cfg.peers), Addresses: s.cfg.peers}
	for {
		err := s.node.Initialize(ctx, m)
		if err == nil || errors.Is(err, actors.ErrAlreadyInitialized) {
			return nil
		}
		if errors.Is(err, actors.ErrInvalid) || ctx.Err() != nil {
			return fmt.Errorf("initializing the cluster: %w", err)
		}
		s.log.Warn("kvstore: initialize failed, retrying", "err", err)
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("initializing the cluster: %w", ctx.Err())
		}
	}
}

// join asks the member at --join to add this node as a learner, until it
// succeeds or fails for good. Asking again is safe: a learner already
// added with the same address is only waited for.
func (s *server) join(ctx context.Context) error {
	body, _ := json.Marshal(map[string]any{"id": s.cfg.id, "addr": s.cfg.raftAddr})
	client := &http.Client{Timeout: s.cfg.adminTimeout() + 5*time.Second}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		code, msg, err := postJSON(ctx, client, s.cfg.join+"/cluster/learners", body)
		switch {
		case err == nil && code == http.StatusOK:
			return nil
		case err == nil && code != http.StatusServiceUnavailable && code != http.StatusConflict:
			return fmt.Errorf("joining through %s: %d %s", s.cfg.join, code, msg)
		case err != nil:
			msg = err.Error()
		}
		s.log.Warn("kvstore: join not done yet, retrying", "via", s.cfg.join, "status", code, "answer", msg)
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return fmt.Errorf("joining through %s: gave up: %s", s.cfg.join, msg)
		}
	}
}

func postJSON(ctx context.Context, c *http.Client, url string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(bytes.TrimSpace(b)), nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handOff transfers leadership before a clean stop, so the cluster does not
// wait an election timeout for a new leader. Best effort: it gives up
// quickly and the stop goes on.
func (s *server) handOff() {
	m := s.node.Metrics()
	if m.GetRole() != messages.Role_ROLE_LEADER {
		return
	}
	var target, best uint64
	for _, p := range m.GetPeers() {
		if p.GetVoter() && p.GetReachable() && p.GetMatchIndex() >= best {
			target, best = p.GetNodeId(), p.GetMatchIndex()
		}
	}
	if target == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, 3*time.Duration(s.cfg.electionTicks)*s.cfg.tickInterval))
	defer cancel()
	if err := s.node.TransferLeader(ctx, target); err != nil {
		s.log.Info("kvstore: leadership hand-off before stopping failed", "target", target, "err", err)
		return
	}
	s.log.Info("kvstore: leadership handed to another node before stopping", "target", target)
}

// shutdown stops the node cleanly: the HTTP API finishes the requests in
// flight, leadership moves away (handOff), then the node, the remote and
// the stores stop in that order.
func (s *server) shutdown(handOff bool) {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.requestTimeout+time.Second)
		if err := s.http.Shutdown(ctx); err != nil {
			_ = s.http.Close()
		}
		cancel()
	}
	if handOff && s.node != nil {
		s.handOff()
	}
	s.close()
}

// close releases whatever was started, in reverse order.
func (s *server) close() {
	if s.http != nil {
		_ = s.http.Close()
	}
	if s.node != nil {
		_ = s.node.Stop()
	}
	if s.remote != nil {
		// A graceful remote shutdown waits for its connections, about 10s
		// for one to a peer that is down. Nothing is left to send by now.
		done := make(chan struct{})
		go func() {
			s.remote.Shutdown()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Second):
			s.log.Info("kvstore: the remote is still closing connections; going on")
		}
	}
	if s.system != nil {
		s.system.Shutdown()
	}
	if s.sm != nil {
		if err := s.sm.Close(); err != nil {
			s.log.Warn("kvstore: closing the state machine", "err", err)
		}
	}
	if s.st != nil {
		if err := s.st.Close(); err != nil {
			s.log.Warn("kvstore: closing the log", "err", err)
		}
	}
}
