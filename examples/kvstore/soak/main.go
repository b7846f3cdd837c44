//go:build unix

// Command soak runs a three-process kvstore cluster on loopback under a
// concurrent client load while it kills, pauses and restarts the
// processes, then checks that the cluster recovers, that every
// acknowledged write survived on every node, that the history of what the
// clients saw is linearizable, and that the nodes' applied indexes meet.
//
//	go run ./examples/kvstore/soak --duration 10m
//
// docs/testing.md ("Process-level faults and the soak") describes a run
// and its output; --help lists the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitPass    = 0
	exitFail    = 1 // a check failed, or the run could not be carried out
	exitBadFlag = 2
)

// run is the whole program.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, errHelp) {
		return exitPass
	}
	if err != nil {
		fmt.Fprintf(stderr, "soak: %v\nRun soak --help for the flags.\n", err)
		return exitBadFlag
	}

	// The first SIGINT or SIGTERM ends the load early and still runs the
	// checks; a second one aborts. Either way every node is killed.
	ctx, abort := context.WithCancel(context.Background())
	defer abort()
	stop := make(chan struct{})
	o.Stop = stop
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		fmt.Fprintln(stderr, "soak: interrupted: ending the load and checking (interrupt again to abort)")
		close(stop)
		<-sigs
		fmt.Fprintln(stderr, "soak: aborting")
		abort()
	}()

	tempDir := o.Dir == ""
	if tempDir {
		if o.Dir, err = os.MkdirTemp("", "raftor-soak-"); err != nil {
			fmt.Fprintf(stderr, "soak: %v\n", err)
			return exitFail
		}
	}
	o.Out = stdout
	rep, err := Run(ctx, o)
	printReport(stdout, rep, err)
	if err == nil && rep.Passed() {
		if tempDir {
			_ = os.RemoveAll(o.Dir)
		}
		return exitPass
	}
	fmt.Fprintf(stdout, "data and logs kept in %s\n", o.Dir)
	return exitFail
}

// Defaults of the flags that the replay command leaves out.
const (
	defaultClients         = 16
	defaultSnapshotEntries = 2000
)

// errHelp is returned by parseFlags for --help: the usage was printed.
var errHelp = errors.New("help requested")

const usageHead = `soak: process-level fault testing of a three-node kvstore cluster.

Usage:
  go run ./examples/kvstore/soak [flags]
  go run ./examples/kvstore/soak --duration 10m --seed 42

It starts three kvstore processes on free loopback ports (each with its own
data directory and log file), runs concurrent HTTP clients against all of
them (linearizable reads, puts, compare-and-sets and deletes on a few shared
keys, and write-once puts of unique keys), and meanwhile injects faults chosen
by the seed: SIGKILL of one node and restart, SIGSTOP and SIGCONT of one node,
SIGKILL of two nodes (no quorum) and of all three, then restart. The faults
stop before the end. Then it checks that a leader is elected and writes are
acknowledged through every node, that every acknowledged write-once key reads
back with its value on every node, that the clients' history is linearizable
(porcupine), and that the nodes' applied indexes meet.

Exit status: 0 when every check passed, 1 when one failed (or the run could
not be carried out), 2 for a bad flag. An interrupt ends the load early and
still checks; a second one aborts. No process outlives the run.

Flags:
`

// parseFlags parses args (without the program name) into Options.
func parseFlags(args []string, stdout io.Writer) (Options, error) {
	var (
		o      Options
		faults string
		seed   uint64
	)
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.DurationVar(&o.Duration, "duration", 10*time.Minute, "how long the client load runs; faults stop a fifth of it (5s to 30s) before the end")
	fs.Uint64Var(&seed, "seed", 0, "the seed that chooses the faults and the clients' operations (default: from the clock; printed at the end)")
	fs.IntVar(&o.Clients, "clients", defaultClients, "concurrent HTTP clients, 1 to 512")
	fs.StringVar(&o.Dir, "dir", "", "`directory` for the nodes' data and logs, new or empty; kept after the run (default: a temporary directory, removed when the run passes)")
	fs.StringVar(&o.Binary, "binary", "", "kvstore `program` to run (default: build ./examples/kvstore into the run's directory)")
	fs.StringVar(&faults, "faults", allFaults().String(), "fault kinds, comma-separated: kill (one node), pause (SIGSTOP one node), quorum (kill two), all (kill three); none for a run without faults")
	fs.Uint64Var(&o.SnapshotEntries, "snapshot-entries", defaultSnapshotEntries, "the nodes' --snapshot-entries: snapshot and trim the log every N applied `entries`, so that restarted nodes catch up from snapshots (0: never)")
	fs.BoolVar(&o.Verbose, "v", false, "print every fault and restart as it happens")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return o, errHelp
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if o.Duration < 10*time.Second {
		return o, fmt.Errorf("--duration %v: at least 10s (the faults stop 5s before the end)", o.Duration)
	}
	if o.Clients < 1 || o.Clients > 512 {
		return o, fmt.Errorf("--clients %d: from 1 to 512", o.Clients)
	}
	fset, err := parseFaults(faults)
	if err != nil {
		return o, err
	}
	o.Faults = fset
	o.Seed = seed
	if !set["seed"] {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Dir != "" {
		if strings.TrimSpace(o.Dir) == "" {
			return o, fmt.Errorf("--dir must not be blank")
		}
		if o.Dir, err = filepath.Abs(o.Dir); err != nil {
			return o, fmt.Errorf("--dir: %v", err)
		}
		entries, err := os.ReadDir(o.Dir)
		switch {
		case err == nil && len(entries) > 0:
			return o, fmt.Errorf("--dir %s is not empty: each run needs fresh data directories", o.Dir)
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return o, fmt.Errorf("--dir %s: %v", o.Dir, err)
		}
	}
	if o.Binary != "" {
		// An absolute path: exec would look a bare name up in $PATH.
		if o.Binary, err = filepath.Abs(o.Binary); err != nil {
			return o, fmt.Errorf("--binary: %v", err)
		}
		st, err := os.Stat(o.Binary)
		switch {
		case err != nil:
			return o, fmt.Errorf("--binary %s: %v", o.Binary, err)
		case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
			return o, fmt.Errorf("--binary %s is not an executable file", o.Binary)
		}
	}
	return o, nil
}
