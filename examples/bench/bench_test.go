package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftor/raftor/examples/bench/internal/load"
)

// TestMain lets this test binary be the benchmark's child process: the
// parent runs os.Executable() with roleEnv set, as it does under go run.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(workerMain(role, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// The smoke test: one system end to end through child processes, the table
// and the JSON file, with numbers a reader can trust to be real.
func TestBenchPrintsTableAndJSON(t *testing.T) {
	modes, floor := "durable,minimal", "true"
	if raceEnabled {
		modes, floor = "minimal", "false"
	}
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	// etcd's worker cannot build from an empty directory: the program must
	// say so and still run Raftor.
	args := []string{"--systems", "raftor,etcd", "--peers-src", t.TempDir(), "--modes", modes, "--clients", "1,8", "--payload", "64",
		"--duration", "400ms", "--warmup", "100ms", "--rounds", "2", "--floor=" + floor, "--floor-samples", "50",
		"--dir", t.TempDir(), "--json", jsonPath}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	table := stdout.String()
	for _, want := range []string{"system", "writes/s", "p999", "CPU s/1k writes", "peak RSS", "entries/fsync", "raftor"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for _, mode := range strings.Split(modes, ",") {
		if !strings.Contains(table, "etcd "+mode+": not available: the peers' worker did not build") {
			t.Errorf("table does not say why etcd %s has no figures:\n%s", mode, table)
		}
	}
	if floor == "true" && !strings.Contains(table, "x the floor") {
		t.Errorf("table does not relate Raftor's latency to the floor:\n%s", table)
	}

	var rep report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v", err)
	}
	wantRows := 2 * len(strings.Split(modes, ","))
	if len(rep.Missing) != len(strings.Split(modes, ",")) {
		t.Errorf("missing = %+v, want etcd in every mode", rep.Missing)
	}
	if len(rep.Rows) != wantRows || len(rep.Runs) != 2*wantRows {
		t.Fatalf("%d rows and %d runs, want %d rows (mode x clients) of 2 rounds each", len(rep.Rows), len(rep.Runs), wantRows)
	}
	for _, r := range rep.Rows {
		if r.WritesPerSec <= 0 || r.P50Micros <= 0 || r.P50Micros > r.P999Micros || r.CPUPer1000 <= 0 || r.PeakRSSBytes < 1<<20 || r.Rounds != 2 {
			t.Errorf("implausible row %+v", r)
		}
		if durable := r.Mode == "durable"; durable != (r.FsyncsPerSec > 0) {
			t.Errorf("%s: fsyncs/s %v: want them counted in durable mode only", r.Mode, r.FsyncsPerSec)
		}
	}
	if floor == "true" && (rep.Floor == nil || rep.Floor.FsyncP50Micros <= 0 || rep.Floor.RTTP50Micros <= 0) {
		t.Errorf("floor missing or zero: %+v", rep.Floor)
	}
}

func TestBadFlagsExitTwoWithAMessage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--clients", "0"}, "--clients"},
		{[]string{"--clients", "1,x"}, "--clients"},
		{[]string{"--systems", "raftor,zookeeper"}, `"zookeeper"`},
		{[]string{"--modes", "fast"}, "--modes"},
		{[]string{"--payload", "8"}, "--payload"},
		{[]string{"--duration", "0s"}, "--duration"},
		{[]string{"--rounds", "0"}, "--rounds"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"stray"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("message %q does not name %s", stderr.String(), tt.want)
			}
		})
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exits %d", code)
	}
	for _, flag := range []string{"-systems", "-modes", "-clients", "-payload", "-duration", "-warmup", "-rounds", "-json", "-dir", "-floor", "-peers-src", "durable", "minimal"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
}

// The workload exists in two modules; both copies must be the same file.
func TestLoadCopiesAreIdentical(t *testing.T) {
	a, err := os.ReadFile(filepath.Join("internal", "load", "load.go"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("peers", "internal", "load", "load.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("examples/bench/internal/load/load.go and examples/bench/peers/internal/load/load.go differ: copy one over the other")
	}
}

func TestAggregateAveragesRoundsAndKeepsWhatIsVisible(t *testing.T) {
	runs := []load.Result{
		{System: "etcd", Mode: "durable", Clients: 1, Payload: 128, Round: 1, Writes: 100, Seconds: 1, WritesPerSec: 100,
			P50Micros: 1000, P99Micros: 2000, P999Micros: 3000, CPUSeconds: 0.1, Fsyncs: 300, SyncedEntries: 300, PeakRSSBytes: 10 << 20},
		{System: "etcd", Mode: "durable", Clients: 1, Payload: 128, Round: 2, Writes: 300, Seconds: 1, WritesPerSec: 300,
			P50Micros: 3000, P99Micros: 4000, P999Micros: 5000, CPUSeconds: 0.3, Fsyncs: 100, SyncedEntries: 500, PeakRSSBytes: 20 << 20},
		{System: "dragonboat", Mode: "durable", Clients: 1, Payload: 128, Round: 1, Writes: 50, Seconds: 1, WritesPerSec: 50,
			P50Micros: 10, P99Micros: 20, P999Micros: 30, CPUSeconds: 0.05, Fsyncs: -1, SyncedEntries: -1},
		{System: "raftor", Mode: "minimal", Clients: 1, Payload: 128, Round: 1, Writes: 10, Seconds: 1, WritesPerSec: 10, Fsyncs: -1, SyncedEntries: -1},
	}
	rows := aggregate(runs, []string{"raftor", "etcd", "dragonboat"}, []string{"durable", "minimal"})
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	// Ordered by mode, then clients, then the --systems order.
	if rows[0].System != "etcd" || rows[1].System != "dragonboat" || rows[2].Mode != "minimal" {
		t.Fatalf("rows out of order: %+v", rows)
	}
	e := rows[0]
	if e.Rounds != 2 || e.WritesPerSec != 200 || e.P50Micros != 2000 || e.Spread != 1 {
		t.Errorf("etcd row %+v: want the mean of the rounds (200 writes/s, p50 2ms) and spread (300-100)/200", e)
	}
	if e.CPUPer1000 != 1 || e.PeakRSSBytes != 20<<20 || e.FsyncsPerSec != 200 || e.EntriesPerFsync != 2 {
		t.Errorf("etcd row %+v: want 1 CPU s/1k writes, the larger RSS, 200 fsyncs/s and 2 entries per fsync", e)
	}
	if d := rows[1]; d.FsyncsPerSec != -1 || d.EntriesPerFsync != -1 {
		t.Errorf("dragonboat row %+v: invisible fsyncs must stay unknown (-1), not 0", d)
	}
}

func TestLogWritesPrintedBesideTheClientsTail(t *testing.T) {
	runs := []load.Result{
		{System: "raftor", Mode: "durable", Clients: 256, Payload: 128, Round: 1, Writes: 100, Seconds: 1, WritesPerSec: 100,
			P99Micros: 20000, P999Micros: 60000, LogWriteP50Micros: 500, LogWriteP99Micros: 4000, LogWriteMaxMicros: 50000,
			WriteStalls: 1, WriteStallMicros: 30000},
		{System: "raftor", Mode: "durable", Clients: 256, Payload: 128, Round: 2, Writes: 100, Seconds: 1, WritesPerSec: 100,
			P99Micros: 20000, P999Micros: 60000, LogWriteP50Micros: 700, LogWriteP99Micros: 6000, LogWriteMaxMicros: 70000,
			WriteStalls: 2, WriteStallMicros: 20000},
		// A system that does not time its log writes gets no line.
		{System: "etcd", Mode: "durable", Clients: 256, Payload: 128, Round: 1, Writes: 100, Seconds: 1, WritesPerSec: 100},
	}
	rows := aggregate(runs, []string{"raftor", "etcd"}, []string{"durable"})
	var out bytes.Buffer
	printLogWrites(&out, rows)
	want := "raftor durable, 256 clients: log write p50 600µs, p99 5.00ms, longest 60.0ms; client write p99 20.0ms, p999 60.0ms; 3 write stalls (50.0ms in all, 2 rounds)"
	if !strings.Contains(out.String(), want) {
		t.Errorf("log writes printed as\n%s\nwant a line\n%s", out.String(), want)
	}
	if strings.Contains(out.String(), "etcd") {
		t.Errorf("a system without timed log writes got a line:\n%s", out.String())
	}
}
