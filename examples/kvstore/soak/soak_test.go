//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftor/raftor/cluster/history"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// testBinary builds the kvstore binary once per test run, without the race
// detector: the soak's own side (clients, recorder, fault loop) runs under
// it in the test binary.
func testBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "raftor-soak-bin-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kvstore")
		buildErr = buildBinary(context.Background(), binPath)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestProcessFaults is the soak in short: three kvstore processes under 16
// clients for about 40 seconds while one node at a time is killed or
// paused, two are killed (no quorum) and all three are killed (the first
// faults of a run are one of each kind), then every check of the soak
// command. RAFTOR_SOAK_DURATION=10m runs it longer, RAFTOR_SOAK_SEED=N
// replays a seed's faults, RAFTOR_SOAK_DIR=D keeps the nodes' data and
// logs in D.
func TestProcessFaults(t *testing.T) {
	duration := 40 * time.Second
	if v := os.Getenv("RAFTOR_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("RAFTOR_SOAK_DURATION=%q: want a duration of 10s or more", v)
		}
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("RAFTOR_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RAFTOR_SOAK_SEED=%q: want a number", v)
		}
		seed = s
	}
	dir := os.Getenv("RAFTOR_SOAK_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	bin := testBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Logf("seed %d, %v (replay: RAFTOR_SOAK_SEED=%d go test -run TestProcessFaults ./examples/kvstore/soak)", seed, duration, seed)

	rep, err := Run(ctx, Options{
		Duration:        duration,
		Seed:            seed,
		Clients:         16,
		Dir:             dir,
		Binary:          bin,
		Faults:          allFaults(),
		SnapshotEntries: defaultSnapshotEntries,
		Out:             testWriter{t},
		ProgressEvery:   10 * time.Second,
		CheckTimeout:    2 * time.Minute,
	})
	var out bytes.Buffer
	printReport(&out, rep, err)
	t.Logf("%s", out.String())

	// No process outlives the run, passed or not.
	for _, pid := range rep.PIDs {
		if !processGone(pid) {
			t.Errorf("kvstore process %d still exists after the run", pid)
		}
	}
	if len(rep.PIDs) < 3 {
		t.Errorf("the run started %d processes, want at least the three nodes", len(rep.PIDs))
	}
	if err != nil || !rep.Passed() {
		t.Fatalf("the soak failed (seed %d); the report above has the failed checks, the fault log and the nodes' logs", seed)
	}
	// A pass must mean something: the faults happened, and clients got
	// answers before and after them.
	for k := range numFaultKinds {
		if rep.Faults[k] == 0 {
			t.Errorf("no %s fault was injected", k)
		}
	}
	if rep.OnceAcked < 100 || rep.OnceAckedFound != rep.OnceAcked {
		t.Errorf("%d write-once keys acknowledged, %d found on every node; want at least 100, all found", rep.OnceAcked, rep.OnceAckedFound)
	}
	var acknowledged int
	for _, row := range rep.Ops {
		acknowledged += row[acked]
	}
	if acknowledged < 500 {
		t.Errorf("only %d operations acknowledged", acknowledged)
	}
	if rep.Swapped == 0 {
		t.Errorf("no compare-and-set swapped: the history tests too little")
	}
}

// The checks are not vacuous: a cluster whose data changes behind the
// clients' backs (an acknowledged write deleted, another overwritten,
// neither recorded) fails the read-back and the linearizability check, and
// the report names the keys, the seed and the nodes' logs.
func TestChecksCatchLostAndChangedWrites(t *testing.T) {
	bin := testBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lost, changed onceWrite
	rep, err := Run(ctx, Options{
		Duration: 10 * time.Second,
		Seed:     99,
		Clients:  4,
		Dir:      t.TempDir(),
		Binary:   bin,
		Out:      testWriter{t},
		tamper: func(ctx context.Context, c *procCluster, writes []onceWrite) error {
			var ackedWrites []onceWrite
			for _, w := range writes {
				if w.verdict == acked {
					ackedWrites = append(ackedWrites, w)
				}
			}
			if len(ackedWrites) < 2 {
				return fmt.Errorf("only %d acknowledged write-once puts", len(ackedWrites))
			}
			lost, changed = ackedWrites[0], ackedWrites[len(ackedWrites)-1]
			hc := &http.Client{Timeout: 10 * time.Second}
			if code, body, err := httpDo(hc, http.MethodDelete, c.nodes[0].url()+"/kv/"+lost.key, ""); err != nil || code != 200 {
				return fmt.Errorf("delete %s: %d %s %v", lost.key, code, body, err)
			}
			if code, body, err := httpDo(hc, http.MethodPut, c.nodes[1].url()+"/kv/"+changed.key, "forged"); err != nil || code != 200 {
				return fmt.Errorf("put %s: %d %s %v", changed.key, code, body, err)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatalf("the run did not reach its checks: %v", err)
	}
	var out bytes.Buffer
	printReport(&out, rep, nil)
	report := out.String()
	t.Logf("the report of the tampered run:\n%s", report)
	if rep.Passed() {
		t.Fatalf("the checks passed a cluster that lost and changed acknowledged writes:\n%s", report)
	}
	for _, want := range []string{
		fmt.Sprintf("acknowledged write %s=%q is absent on node", lost.key, lost.value),
		fmt.Sprintf("reads %s=\"forged\", the write was %q", changed.key, changed.value),
		"history is not linearizable on key(s)",
		lost.key,
		"FAILED CHECKS",
		"fault log",
		rep.Logs[0],
		"FAIL (seed 99)",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the failure report lacks %q:\n%s", want, report)
		}
	}
	if rep.Linearizable != porcupine.Illegal || rep.Visualization == "" {
		t.Errorf("no porcupine view of the bad history was written")
	}
	for _, pid := range rep.PIDs {
		if !processGone(pid) {
			t.Errorf("kvstore process %d still exists after a failed run", pid)
		}
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The command line: defaults, every flag, and a message that names the
// flag at fault.
func TestParseFlags(t *testing.T) {
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(t.TempDir(), "kvstore")
	if err := os.WriteFile(notExec, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "new")

	cases := []struct {
		name    string
		args    []string
		wantErr string // a substring; empty for success
		check   func(t *testing.T, o Options)
	}{
		{name: "defaults", check: func(t *testing.T, o Options) {
			if o.Duration != 10*time.Minute || o.Clients != 16 || o.Faults != allFaults() || o.Dir != "" ||
				o.Binary != "" || o.SnapshotEntries != 2000 || o.Verbose {
				t.Fatalf("defaults: %+v", o)
			}
		}},
		{name: "every flag", args: []string{"--duration", "90s", "--seed", "42", "--clients", "4", "--dir", fresh,
			"--binary", exe, "--faults", "pause,quorum", "--snapshot-entries", "0", "-v"},
			check: func(t *testing.T, o Options) {
				if o.Duration != 90*time.Second || o.Seed != 42 || o.Clients != 4 || o.Dir != fresh || o.Binary != exe ||
					o.Faults != (faultSet{faultPause: true, faultQuorum: true}) || o.SnapshotEntries != 0 || !o.Verbose {
					t.Fatalf("parsed %+v", o)
				}
			}},
		{name: "seed zero is a seed", args: []string{"--seed", "0"}, check: func(t *testing.T, o Options) {
			if o.Seed != 0 {
				t.Fatalf("seed %d, want 0", o.Seed)
			}
		}},
		{name: "no faults", args: []string{"--faults", "none"}, check: func(t *testing.T, o Options) {
			if o.Faults.any() {
				t.Fatalf("faults %v, want none", o.Faults)
			}
		}},
		{name: "faults with spaces", args: []string{"--faults", "kill, all"}, check: func(t *testing.T, o Options) {
			if o.Faults != (faultSet{faultKill: true, faultAll: true}) {
				t.Fatalf("faults %v", o.Faults)
			}
		}},
		{name: "too short", args: []string{"--duration", "5s"}, wantErr: "--duration"},
		{name: "not a duration", args: []string{"--duration", "ten"}, wantErr: "-duration"},
		{name: "no clients", args: []string{"--clients", "0"}, wantErr: "--clients"},
		{name: "too many clients", args: []string{"--clients", "10000"}, wantErr: "--clients"},
		{name: "unknown fault", args: []string{"--faults", "kill,flood"}, wantErr: `--faults: unknown fault "flood"`},
		{name: "dir with data", args: []string{"--dir", nonEmpty}, wantErr: "--dir " + nonEmpty + " is not empty"},
		{name: "missing binary", args: []string{"--binary", filepath.Join(fresh, "nope")}, wantErr: "--binary"},
		{name: "binary not executable", args: []string{"--binary", notExec}, wantErr: "not an executable"},
		{name: "unknown flag", args: []string{"--nodes", "5"}, wantErr: "-nodes"},
		{name: "stray argument", args: []string{"10m"}, wantErr: `unexpected argument "10m"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseFlags(c.args, io.Discard)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("parseFlags(%q) = %v, want an error containing %q", c.args, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", c.args, err)
			}
			c.check(t, o)
		})
	}
}

// --help explains every flag and exits 0; a bad flag exits 2 with a
// message naming it, before anything starts.
func TestExitStatusOfTheCommandLine(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != exitPass {
		t.Fatalf("--help: exit %d, want 0", code)
	}
	for _, flag := range []string{"-duration", "-seed", "-clients", "-dir", "-binary", "-faults", "-snapshot-entries", "-v"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help does not explain %s:\n%s", flag, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"--faults", "flood"}, &out, &errOut); code != exitBadFlag {
		t.Fatalf("bad --faults: exit %d, want %d", code, exitBadFlag)
	}
	if !strings.Contains(errOut.String(), "--faults") || out.Len() != 0 {
		t.Fatalf("bad --faults: stderr %q, stdout %q", errOut.String(), out.String())
	}
}

// How the history records what a client saw: only an answer proves an
// outcome, and only a connection never made or a 4xx proves that nothing
// happened. Errors come from real HTTP exchanges where the shape of Go's
// errors matters.
func TestClassifyHTTPOutcomes(t *testing.T) {
	refusedErr := dialClosedPort(t)
	brokenErr := brokenAfterRequest(t)
	timeoutErr := timedOut(t)

	get, put, del := history.Get("k"), history.Put("k", "v"), history.Delete("k")
	cas := history.CAS("k", "a", "b")
	cases := []struct {
		name string
		in   history.Input
		err  error
		code int
		body string
		want verdict
		out  history.Output
	}{
		{"get finds a value", get, nil, 200, "v1", acked, history.Output{Found: true, Value: "v1"}},
		{"get finds an empty value", get, nil, 200, "", acked, history.Output{Found: true}},
		{"get: key not found", get, nil, 404, `{"error":"key not found","leader":1}`, acked, history.Output{}},
		{"get: no such endpoint is not absence", get, nil, 404, `{"error":"no such endpoint: GET /x","leader":1}`, refused, history.Output{}},
		{"get: no leader in time", get, nil, 503, `{"error":"timeout","leader":0}`, unknown, history.Output{}},
		{"get: node down", get, refusedErr, 0, "", refused, history.Output{}},
		{"put committed", put, nil, 200, `{"index":7}`, acked, history.Output{}},
		{"put: 503 may have been applied", put, nil, 503, `{"error":"unknown outcome","leader":2}`, unknown, history.Output{}},
		{"put: storage failed", put, nil, 500, `{"error":"storage failed","leader":2}`, unknown, history.Output{}},
		{"put: value too large", put, nil, 413, `{"error":"too large","leader":2}`, refused, history.Output{}},
		{"put: bad input", put, nil, 400, `{"error":"empty key","leader":2}`, refused, history.Output{}},
		{"put: connection refused", put, refusedErr, 0, "", refused, history.Output{}},
		{"put: connection broken after sending", put, brokenErr, 0, "", unknown, history.Output{}},
		{"put: client timeout", put, timeoutErr, 0, "", unknown, history.Output{}},
		{"put: an answer cut short", put, io.ErrUnexpectedEOF, 0, "", unknown, history.Output{}},
		{"put: an undocumented status", put, nil, 502, "bad gateway", unknown, history.Output{}},
		{"delete applied", del, nil, 200, `{"index":9}`, acked, history.Output{}},
		{"delete: 503", del, nil, 503, `{"error":"no quorum","leader":0}`, unknown, history.Output{}},
		{"cas swapped", cas, nil, 200, `{"ok":true}`, acked, history.Output{Swapped: true}},
		{"cas did not match", cas, nil, 409, `{"ok":false,"current":"x"}`, acked, history.Output{}},
		{"cas did not match an absent key", cas, nil, 409, `{"ok":false,"current":null}`, acked, history.Output{}},
		{"cas: 409 of another kind", cas, nil, 409, `{"error":"membership change in progress","leader":1}`, refused, history.Output{}},
		{"cas: 200 without an answer", cas, nil, 200, `garbage`, unknown, history.Output{}},
		{"cas: 503", cas, nil, 503, `{"error":"timeout","leader":0}`, unknown, history.Output{}},
		{"cas: connection broken after sending", cas, brokenErr, 0, "", unknown, history.Output{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, out := classify(c.in, c.err, c.code, c.body)
			if v != c.want || out != c.out {
				t.Fatalf("classify(%v, %v, %d, %q) = %v %+v, want %v %+v", c.in, c.err, c.code, c.body, v, out, c.want, c.out)
			}
		})
	}
}

// dialClosedPort returns the error of a request to a port nobody listens on.
func dialClosedPort(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, _, err = httpDo(&http.Client{Timeout: 5 * time.Second}, http.MethodPut, "http://"+addr+"/kv/k", "v")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("request to a closed port: %v, want connection refused", err)
	}
	return err
}

// brokenAfterRequest returns the error of a request whose server read it
// and then dropped the connection, as a node killed mid-request does.
func brokenAfterRequest(t *testing.T) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer srv.Close()
	_, _, err := httpDo(&http.Client{Timeout: 5 * time.Second}, http.MethodPut, srv.URL+"/kv/k", "v")
	if err == nil {
		t.Fatal("a dropped connection gave no error")
	}
	return err
}

// timedOut returns the error of a request that got no answer in time, as
// with a paused node.
func timedOut(t *testing.T) error {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	_, _, err := httpDo(&http.Client{Timeout: 100 * time.Millisecond}, http.MethodPut, srv.URL+"/kv/k", "v")
	var ue *url.Error
	if !errors.As(err, &ue) || !ue.Timeout() {
		t.Fatalf("a request without an answer: %v, want a timeout", err)
	}
	return err
}

// The first faults of a run are one of each enabled kind, in an order the
// seed chooses; a seed gives the same sequence every time.
func TestFaultSequence(t *testing.T) {
	cases := []struct {
		set  faultSet
		seed uint64
	}{
		{allFaults(), 1},
		{allFaults(), 2},
		{faultSet{faultKill: true, faultAll: true}, 3},
		{faultSet{faultPause: true}, 4},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%v seed %d", c.set, c.seed), func(t *testing.T) {
			seq := func() []faultKind {
				f := newFaulter(&procCluster{}, c.seed, c.set, func(string, ...any) {})
				var out []faultKind
				for range 30 {
					out = append(out, f.nextKind())
				}
				return out
			}
			a, b := seq(), seq()
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("seed %d gave %v, then %v", c.seed, a, b)
			}
			var enabled int
			first := map[faultKind]bool{}
			for _, on := range c.set {
				if on {
					enabled++
				}
			}
			for _, k := range a[:enabled] {
				first[k] = true
			}
			for _, k := range a {
				if !c.set[k] {
					t.Fatalf("fault %v is not enabled in %v", k, c.set)
				}
			}
			if len(first) != enabled {
				t.Fatalf("the first %d faults %v are not one of each kind of %v", enabled, a[:enabled], c.set)
			}
		})
	}
}
