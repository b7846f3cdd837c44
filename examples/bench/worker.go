package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/examples/bench/internal/load"
)

// workerMain is a child process: it reads a load.Spec (or, for the floor,
// floorSpec) from stdin and writes JSON results to stdout.
func workerMain(role string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch role {
	case "floor":
		var fs floorSpec
		if err := json.NewDecoder(stdin).Decode(&fs); err != nil {
			fmt.Fprintf(stderr, "floor: reading the spec: %v\n", err)
			return 2
		}
		f, err := measureFloor(ctx, fs)
		if err != nil {
			fmt.Fprintf(stderr, "floor: %v\n", err)
			return 1
		}
		if err := json.NewEncoder(stdout).Encode(f); err != nil {
			return 1
		}
		return 0
	case "raftor":
		var s load.Spec
		if err := json.NewDecoder(stdin).Decode(&s); err != nil {
			fmt.Fprintf(stderr, "raftor worker: reading the spec: %v\n", err)
			return 2
		}
		c, err := startRaftor(ctx, s.Mode, s.Dir)
		if err != nil {
			fmt.Fprintf(stderr, "raftor %s: %v\n", s.Mode, err)
			return 1
		}
		stopProfile, perr := startProfile(os.Getenv(profileEnv), s)
		if perr != nil {
			fmt.Fprintf(stderr, "raftor %s: %v\n", s.Mode, perr)
		}
		err = load.Execute(ctx, s, c, stdout)
		stopProfile()
		if serr := writeStages(os.Getenv(stagesEnv), s); serr != nil {
			fmt.Fprintf(stderr, "raftor %s: %v\n", s.Mode, serr)
		}
		done := make(chan struct{})
		go func() { c.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		if err != nil {
			fmt.Fprintf(stderr, "raftor %s: %v\n", s.Mode, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "bench: unknown worker role %q\n", role)
	return 2
}

// profileEnv names a directory: when it is set, Raftor's worker writes a
// CPU profile of each run there (raftor-<mode>-round<n>.pprof, every client
// count of the run in one profile), for `go tool pprof`. The peers' workers
// are not profiled.
const profileEnv = "RAFTOR_BENCH_CPUPROFILE"

// traceEnv names a directory: when it is set, Raftor's worker writes an
// execution trace of each run there (raftor-<mode>-round<n>.trace), for
// `go tool trace`: where goroutines wait (`-pprof=sched`, `-pprof=sync`)
// rather than where they spend CPU. A trace of a busy run grows by tens of
// megabytes a second; use a short --duration.
const traceEnv = "RAFTOR_BENCH_TRACE"

// stagesEnv names a directory: when it is set, and the program was built
// with -tags raftorstages (see actors/stages.go), Raftor's worker writes
// there, after each run, where the writes it followed spent their time
// (raftor-<mode>-round<n>.stages): the median time since the call started
// at which each actor on the way took the write, sent it, synced it,
// answered it. Writes are followed one at a time, so use --clients 1: with
// more clients the report is that of a sample of the writes, and the client
// counts of the run mix.
const stagesEnv = "RAFTOR_BENCH_STAGES"

func writeStages(dir string, s load.Spec) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := filepath.Join(dir, fmt.Sprintf("raftor-%s-round%d.stages", s.Mode, s.Round))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	on, err := actors.WriteStageReport(f)
	if !on {
		fmt.Fprintf(f, "stage timing is not compiled in: build with -tags raftorstages\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func startProfile(dir string, s load.Spec) (stop func(), err error) {
	stopTrace, err := startTrace(os.Getenv(traceEnv), s)
	if err != nil {
		return func() {}, err
	}
	if dir == "" {
		return stopTrace, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		stopTrace()
		return func() {}, err
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("raftor-%s-round%d.pprof", s.Mode, s.Round)))
	if err != nil {
		return func() {}, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		stopTrace()
		return func() {}, err
	}
	return func() { pprof.StopCPUProfile(); f.Close(); stopTrace() }, nil
}

func startTrace(dir string, s load.Spec) (stop func(), err error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return func() {}, err
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("raftor-%s-round%d.trace", s.Mode, s.Round)))
	if err != nil {
		return func() {}, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return func() {}, err
	}
	return func() { trace.Stop(); f.Close() }, nil
}
