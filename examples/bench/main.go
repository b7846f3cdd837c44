// Command bench runs one write workload on Raftor and on the Raft libraries
// it is measured against (hashicorp/raft, etcd-io/raft, dragonboat), each on
// a three-node cluster, and prints one table.
//
//	go run ./examples/bench                       # every system, both modes, 1 and 256 clients
//	go run ./examples/bench --systems raftor,etcd --modes durable --duration 10s --json out.json
//
// Every (system, mode) runs in a child process of its own, so that the CPU
// time and peak RSS in the table belong to that system alone; rounds
// alternate the systems (A B A B) so that a slow moment of the machine does
// not land on one system only. Run with --help for every flag, and read
// docs/benchmarks.md for what each system does in each mode.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/raftor/raftor/examples/bench/internal/load"
)

// roleEnv tells a child process of this program which worker to be.
const roleEnv = "RAFTOR_BENCH_ROLE"

var (
	allSystems = []string{"raftor", "hashicorp", "etcd", "dragonboat"}
	allModes   = []string{"durable", "minimal"}
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(workerMain(role, os.Stdin, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	systems      []string
	modes        []string
	clients      []int
	payload      int
	duration     time.Duration
	warmup       time.Duration
	rounds       int
	jsonPath     string
	dir          string
	floor        bool
	floorSamples int
	peersSrc     string
	verbose      bool
	args         []string // as given, for the report
}

const usageText = `bench runs one write workload on three-node clusters of Raftor and of the
Raft libraries it is compared with, and prints a table.

Each system runs in a child process of its own (CPU time and peak RSS are that
child's), the rounds alternate the systems (A B A B), and each client writes one
entry at a time: a write counts once it is committed by a quorum and applied.

Modes:
  durable   three nodes talking over loopback TCP, every entry fsynced to each
            node's log; a write counts once a quorum, leader included, has it
            on disk
  minimal   the protocol alone: in-memory logs, in-process delivery

Usage:
  go run ./examples/bench [flags]

Flags:
`

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	systems := fs.String("systems", strings.Join(allSystems, ","), "comma-separated systems to run, in this order: "+strings.Join(allSystems, ", "))
	modes := fs.String("modes", strings.Join(allModes, ","), "comma-separated modes: durable (loopback TCP, fsync on every node) and/or minimal (in memory, in process)")
	clients := fs.String("clients", "1,256", "comma-separated client counts; each client issues one write at a time, and each count is one row")
	fs.IntVar(&o.payload, "payload", 128, "bytes per write (at least 16: the first 16 carry the client and its sequence number)")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "measured time per client count, after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured writing before each measurement")
	fs.IntVar(&o.rounds, "rounds", 2, "times every (system, mode) runs, alternating systems; the table shows the mean of the rounds and the spread of writes/s")
	fs.StringVar(&o.jsonPath, "json", "", "also write every round's results and the aggregated rows to this file as JSON")
	fs.StringVar(&o.dir, "dir", "", "where the nodes keep their data (a subdirectory per run, removed after it); default a temporary directory, which should be on the disk you want to measure")
	fs.BoolVar(&o.floor, "floor", true, "measure the floor first: Pebble synced commit latency on --dir's disk and a protoactor remote round trip on loopback")
	fs.IntVar(&o.floorSamples, "floor-samples", 500, "samples for each floor measurement")
	fs.StringVar(&o.peersSrc, "peers-src", "", "directory of the peers' worker module (default: examples/bench/peers next to this program's source)")
	fs.BoolVar(&o.verbose, "v", false, "print each run's result as it finishes")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.systems, err = parseList(*systems, allSystems, "--systems"); err != nil {
		return o, err
	}
	if o.modes, err = parseList(*modes, allModes, "--modes"); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100000 {
			return o, fmt.Errorf("--clients: %q is not a client count from 1 to 100000", s)
		}
		o.clients = append(o.clients, n)
	}
	switch {
	case o.payload < 16 || o.payload > 1<<20:
		return o, fmt.Errorf("--payload: %d is not from 16 bytes to 1 MiB", o.payload)
	case o.duration <= 0:
		return o, fmt.Errorf("--duration: %v must be positive", o.duration)
	case o.warmup < 0:
		return o, fmt.Errorf("--warmup: %v must not be negative", o.warmup)
	case o.rounds < 1:
		return o, fmt.Errorf("--rounds: %d must be at least 1", o.rounds)
	case o.floorSamples < 10:
		return o, fmt.Errorf("--floor-samples: %d must be at least 10", o.floorSamples)
	}
	return o, nil
}

func parseList(s string, known []string, flagName string) ([]string, error) {
	var out []string
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(strings.ToLower(v))
		if !slices.Contains(known, v) {
			return nil, fmt.Errorf("%s: unknown value %q (known: %s)", flagName, v, strings.Join(known, ", "))
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out, nil
}

// run is the parent: it returns the exit code (2 for bad flags).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\nRun with --help for the flags.\n", err)
		return 2
	}
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// report is everything one invocation measured; --json writes it.
type report struct {
	Command []string      `json:"command"`
	Machine machine       `json:"machine"`
	Floor   *floorResult  `json:"floor,omitempty"`
	Runs    []load.Result `json:"runs"`
	Rows    []row         `json:"rows"`
	Missing []missing     `json:"missing,omitempty"`
}

// missing is a (system, mode) that produced no numbers, and why.
type missing struct {
	System string `json:"system"`
	Mode   string `json:"mode"`
	Reason string `json:"reason"`
}

func bench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program's binary: %w", err)
	}
	base := o.dir
	if base == "" {
		if base, err = os.MkdirTemp("", "raftor-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(base)
	} else if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	binDir, err := os.MkdirTemp("", "raftor-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)

	rep := report{Command: append([]string{"bench"}, o.args...), Machine: describeMachine(base)}
	workers := map[string]string{"raftor": self}
	// unavailable holds, per system, why it cannot run at all; failed marks
	// the "system/mode" runs that failed, which later rounds skip.
	unavailable, failed := map[string]string{}, map[string]bool{}
	if peers := slices.DeleteFunc(slices.Clone(o.systems), func(s string) bool { return s == "raftor" }); len(peers) > 0 {
		fmt.Fprintf(stderr, "building the peers' worker (%s)...\n", strings.Join(peers, ", "))
		bin, err := buildPeers(ctx, o.peersSrc, binDir)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
		}
		for _, p := range peers {
			if err != nil {
				unavailable[p] = "the peers' worker did not build: " + firstLine(err.Error())
				continue
			}
			workers[p] = bin
		}
	}
	for _, system := range o.systems {
		if reason, ok := unavailable[system]; ok {
			for _, mode := range o.modes {
				rep.Missing = append(rep.Missing, missing{system, mode, reason})
			}
		}
	}

	if o.floor {
		fmt.Fprintf(stderr, "measuring the floor...\n")
		f, err := runFloor(ctx, self, base, o.floorSamples)
		if err != nil {
			fmt.Fprintf(stderr, "floor: %v\n", err)
		} else {
			rep.Floor = f
		}
	}

	for round := 1; round <= o.rounds; round++ {
		for _, mode := range o.modes {
			for _, system := range o.systems {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if _, ok := unavailable[system]; ok || failed[system+"/"+mode] {
					continue
				}
				spec := load.Spec{System: system, Mode: mode, Clients: o.clients, Payload: o.payload,
					Warmup: o.warmup, Duration: o.duration, Round: round,
					Dir: filepath.Join(base, fmt.Sprintf("%s-%s-%d", system, mode, round))}
				fmt.Fprintf(stderr, "round %d/%d: %s %s...\n", round, o.rounds, system, mode)
				results, err := runWorker(ctx, workers[system], system, spec)
				os.RemoveAll(spec.Dir)
				if err != nil {
					fmt.Fprintf(stderr, "  %s %s failed: %v\n", system, mode, err)
					failed[system+"/"+mode] = true
					rep.Missing = append(rep.Missing, missing{system, mode, fmt.Sprintf("round %d failed: %s", round, firstLine(err.Error()))})
					continue
				}
				if o.verbose {
					for _, r := range results {
						fmt.Fprintf(stderr, "  %d clients: %.0f writes/s, p50 %s\n", r.Clients, r.WritesPerSec, fmtMicros(r.P50Micros))
					}
				}
				rep.Runs = append(rep.Runs, results...)
			}
		}
	}

	rep.Rows = aggregate(rep.Runs, o.systems, o.modes)
	printReport(stdout, rep)
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	if len(rep.Rows) == 0 {
		return errors.New("no system produced results")
	}
	return nil
}

// runWorker runs one (system, mode) in a child process and returns its
// results, each with the child's peak RSS.
func runWorker(ctx context.Context, bin, system string, spec load.Spec) ([]load.Result, error) {
	per := spec.Warmup + spec.Duration
	ctx, cancel := context.WithTimeout(ctx, time.Duration(len(spec.Clients))*per*2+90*time.Second)
	defer cancel()
	in, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), roleEnv+"="+system)
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	var results []load.Result
	dec := json.NewDecoder(&out)
	for {
		var r load.Result
		if err := dec.Decode(&r); err != nil {
			break
		}
		results = append(results, r)
	}
	if runErr != nil || len(results) != len(spec.Clients) {
		msg := strings.TrimSpace(lastLines(errb.String(), 5))
		if runErr == nil {
			runErr = fmt.Errorf("%d results for %d client counts", len(results), len(spec.Clients))
		}
		if msg != "" {
			return nil, fmt.Errorf("%w: %s", runErr, msg)
		}
		return nil, runErr
	}
	rss := peakRSS(cmd.ProcessState)
	for i := range results {
		results[i].PeakRSSBytes = rss
		if results[i].Writes == 0 {
			return nil, fmt.Errorf("%d clients: no write succeeded (first error: %s)", results[i].Clients, results[i].FirstError)
		}
	}
	return results, nil
}

func peakRSS(ps *os.ProcessState) int64 {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss) // bytes there
	}
	return int64(ru.Maxrss) * 1024 // KiB on Linux
}

// buildPeers builds the peers' worker module into dir and returns the binary.
func buildPeers(ctx context.Context, src, dir string) (string, error) {
	if src == "" {
		var err error
		if src, err = findPeersSrc(); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(dir, "peers-worker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// findPeersSrc locates examples/bench/peers: next to this file's source when
// the build kept its path (go run, go test), else under the working
// directory or one of its parents.
func findPeersSrc() (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		tried = append(tried, filepath.Join(filepath.Dir(file), "peers"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			tried = append(tried, filepath.Join(d, "examples", "bench", "peers"), filepath.Join(d, "peers"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, p := range tried {
		if st, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("cannot find the peers' worker module (examples/bench/peers); pass --peers-src")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
