package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cockroachdb/pebble/v2"

	"github.com/raftor/raftor/examples/bench/internal/load"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
)

// floorSpec asks the floor worker for its measurements.
type floorSpec struct {
	Dir     string `json:"dir"`
	Samples int    `json:"samples"`
	Payload int    `json:"payload"`
}

// floorResult is the floor: the latency of the two things a durable write
// cannot avoid, measured on this machine in the same run. A durable Raft
// write on three nodes needs at least one synced write on the leader and one
// round trip to a follower that syncs too (in parallel or in sequence with
// the leader's), so fsync p50 + round trip p50 is a lower bound of a single
// client's latency; the table prints Raftor's as a multiple of it.
type floorResult struct {
	FsyncP50Micros float64 `json:"pebble_sync_commit_p50_us"`
	FsyncP99Micros float64 `json:"pebble_sync_commit_p99_us"`
	RTTP50Micros   float64 `json:"remote_round_trip_p50_us"`
	RTTP99Micros   float64 `json:"remote_round_trip_p99_us"`
	// SharedFsync is the same synced commit while three Pebble stores on
	// the same disk commit at once, as the three nodes of a one-machine
	// benchmark do: the disk the nodes actually get. It is shown beside the
	// floor, not in it.
	SharedFsyncP50Micros float64 `json:"pebble_sync_commit_3_at_once_p50_us"`
	SharedFsyncP99Micros float64 `json:"pebble_sync_commit_3_at_once_p99_us"`
	Samples              int     `json:"samples"`
}

func (f *floorResult) sumP50() float64 { return f.FsyncP50Micros + f.RTTP50Micros }

// runFloor measures the floor in a child process (so that the remote's and
// Pebble's goroutines and memory do not stay in the parent).
func runFloor(ctx context.Context, self, base string, samples int) (*floorResult, error) {
	dir := filepath.Join(base, "floor")
	defer os.RemoveAll(dir)
	in, _ := json.Marshal(floorSpec{Dir: dir, Samples: samples, Payload: 128})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), roleEnv+"=floor")
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(lastLines(errb.String(), 5)))
	}
	var f floorResult
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		return nil, fmt.Errorf("reading the floor worker's output: %w", err)
	}
	return &f, nil
}

func measureFloor(ctx context.Context, s floorSpec) (*floorResult, error) {
	syncs, err := pebbleSyncLatency(s.Dir, s.Samples, s.Payload)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	shared, err := sharedSyncLatency(s.Dir, s.Samples, s.Payload)
	if err != nil {
		return nil, fmt.Errorf("pebble, three at once: %w", err)
	}
	rtts, err := remoteRoundTrip(ctx, s.Samples)
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return &floorResult{
		FsyncP50Micros:       us(load.Quantile(syncs, 0.5)),
		FsyncP99Micros:       us(load.Quantile(syncs, 0.99)),
		RTTP50Micros:         us(load.Quantile(rtts, 0.5)),
		RTTP99Micros:         us(load.Quantile(rtts, 0.99)),
		SharedFsyncP50Micros: us(load.Quantile(shared, 0.5)),
		SharedFsyncP99Micros: us(load.Quantile(shared, 0.99)),
		Samples:              s.Samples,
	}, nil
}

// sharedSyncLatency runs pebbleSyncLatency on three stores at once, in
// directories of their own under dir, and returns every commit's latency.
func sharedSyncLatency(dir string, n, payload int) ([]time.Duration, error) {
	type result struct {
		d   []time.Duration
		err error
	}
	results := make(chan result, 3)
	for i := range 3 {
		go func() {
			d, err := pebbleSyncLatency(filepath.Join(dir, fmt.Sprintf("shared-%d", i)), n/3+1, payload)
			results <- result{d, err}
		}()
	}
	var all []time.Duration
	var first error
	for range 3 {
		r := <-results
		if r.err != nil && first == nil {
			first = r.err
		}
		all = append(all, r.d...)
	}
	return all, first
}

// pebbleSyncLatency commits n batches of one payload-sized value each with
// Sync: true, which is what a log store does per group commit.
func pebbleSyncLatency(dir string, n, payload int) ([]time.Duration, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	value := bytes.Repeat([]byte{'v'}, payload)
	out := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		b := db.NewBatch()
		if err := b.Set(fmt.Appendf(nil, "entry/%016x", i), value, nil); err != nil {
			return nil, err
		}
		start := time.Now()
		err := b.Commit(pebble.Sync)
		took := time.Since(start)
		b.Close()
		if err != nil {
			return nil, err
		}
		if i >= n/10 { // the first tenth warms up the WAL file
			out = append(out, took)
		}
	}
	return out, nil
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// remoteRoundTrip measures a request-response between two actor systems in
// this process over protoactor remote on loopback, configured as Raftor's
// nodes configure it (remote.Start), with a Raft message each way.
func remoteRoundTrip(ctx context.Context, n int) ([]time.Duration, error) {
	a, b := quietSystem(), quietSystem()
	defer a.Shutdown()
	defer b.Shutdown()
	ra, err := remote.Start(a, remote.Config{Address: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer ra.Shutdown()
	rb, err := remote.Start(b, remote.Config{Address: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	defer rb.Shutdown()
	if _, err := b.Root.SpawnNamed(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*messages.AppendEntriesRequest); ok {
			c.Respond(&messages.AppendEntriesResponse{Header: m.Header, Success: true, Seq: m.Seq})
		}
	}), "echo"); err != nil {
		return nil, err
	}
	target := actor.NewPID(rb.Address(), "echo")
	req := &messages.AppendEntriesRequest{Header: &messages.Header{ClusterId: "floor", From: 1, To: 2, Term: 1}}
	out := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		start := time.Now()
		res, err := a.Root.RequestFuture(target, req, 5*time.Second).Result()
		took := time.Since(start)
		if err != nil {
			return nil, err
		}
		if _, ok := res.(*messages.AppendEntriesResponse); !ok {
			return nil, fmt.Errorf("unexpected answer %T", res)
		}
		if i >= n/10 { // the first tenth dials the connection
			out = append(out, took)
		}
	}
	return out, nil
}
