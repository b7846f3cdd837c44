//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/raftor/raftor/cluster/history"
)

// Options configure one soak run.
type Options struct {
	// Duration is how long the client load runs. Faults stop a quiet
	// period before its end (a fifth of it, from 5 to 30 seconds).
	Duration time.Duration
	// Seed chooses the faults and the clients' operations.
	Seed uint64
	// Clients is the number of concurrent HTTP clients.
	Clients int
	// Dir receives the nodes' data directories (node-N), their logs
	// (logs/node-N.log), and on a failed check porcupine's view of the
	// history (history.html).
	Dir string
	// Binary is the kvstore program; empty builds it into Dir.
	Binary string
	// Faults are the enabled fault kinds.
	Faults faultSet
	// SnapshotEntries is the nodes' --snapshot-entries: small, so that
	// snapshots, log trimming and snapshot installs happen during the run.
	SnapshotEntries uint64
	// Verbose prints every fault and restart as it happens.
	Verbose bool
	// Out receives progress lines; nil discards them.
	Out io.Writer
	// ProgressEvery is the interval of progress lines (default 30s).
	ProgressEvery time.Duration
	// CheckTimeout bounds porcupine's search (default 10 minutes).
	CheckTimeout time.Duration
	// Stop, when closed, ends the load early; the checks still run.
	Stop <-chan struct{}

	// tamper, when set, runs after the load and before the checks. The
	// tests use it to change the cluster's data behind the history's
	// back, to prove that the checks notice.
	tamper func(ctx context.Context, c *procCluster, writes []onceWrite) error
}

// The nodes' Raft clock: heartbeats every 25ms, elections after 250 to
// 500ms of silence, as in kvstore's own process tests, so that a soak sees
// many elections. Requests wait up to 5s for a leader and a quorum.
var soakCluster = clusterConfig{
	size:           3,
	tick:           25 * time.Millisecond,
	electionTicks:  10,
	requestTimeout: 5 * time.Second,
	snapshotKeep:   200,
}

const (
	// formDeadline bounds the first election of a new cluster.
	formDeadline = 60 * time.Second
	// recoverDeadline bounds the time from the last fault to a leader all
	// nodes agree on and a write acknowledged through every node.
	recoverDeadline = 30 * time.Second
	// convergeDeadline bounds the time the applied indexes take to meet.
	convergeDeadline = 30 * time.Second
)

// Report is what a run did and found.
type Report struct {
	Options Options
	Started time.Time
	Elapsed time.Duration
	// LoadTime is how long the clients ran.
	LoadTime time.Duration

	Ops     [numClasses][3]int // by class and verdict
	Swapped int                // acknowledged compare-and-sets that swapped

	Faults      [numFaultKinds]int
	LeaderFault int // kills and pauses aimed at the leader
	// Behind counts restarts that came back behind the leader's trimmed
	// log and needed a snapshot (a lower bound).
	Behind int
	// CatchUps are the times single restarted nodes took to apply the
	// commit index the leader had when they came back.
	CatchUps []time.Duration
	FaultLog []faultEvent

	// Recovery is the time from the end of the last fault to a leader
	// and a write acknowledged through every node.
	Recovery time.Duration

	// Write-once puts by verdict, and how many of each were found.
	OnceAcked, OnceAckedFound     int
	OnceUnknown, OnceUnknownFound int
	OnceFailed, OnceFailedFound   int
	ReadNodes                     int // nodes each key was read from

	HistoryOps    int
	HistoryCounts history.Counts
	Linearizable  porcupine.CheckResult
	CheckTime     time.Duration
	Visualization string // porcupine's HTML view, when the check failed

	Applied uint64 // the index the nodes' applied indexes met at

	Failures []string // each a failed check, with its evidence
	Logs     []string // the nodes' log files
	PIDs     []int    // every process started
	Dir      string
}

// Passed reports whether every check passed.
func (r *Report) Passed() bool { return len(r.Failures) == 0 }

func (r *Report) failf(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// Run runs one soak: it starts the cluster, runs the load and the faults,
// checks, and kills every process it started before it returns, whatever
// happened. The error is set when the run could not be carried out (no
// binary, no cluster); a failed check is in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	r := &Report{Options: o, Started: time.Now(), Dir: o.Dir}
	defer func() { r.Elapsed = time.Since(r.Started) }()
	out := o.Out
	say := func(format string, args ...any) { fmt.Fprintf(out, "soak: "+format+"\n", args...) }
	verbose := func(string, ...any) {}
	if o.Verbose {
		verbose = say
	}

	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return r, err
	}
	bin := o.Binary
	if bin == "" {
		bin = filepath.Join(o.Dir, "kvstore")
		say("building kvstore into %s", bin)
		if err := buildBinary(ctx, bin); err != nil {
			return r, err
		}
	}
	cfg := soakCluster
	cfg.snapshotEntries = o.SnapshotEntries
	c, err := newProcCluster(bin, o.Dir, cfg, verbose)
	if err != nil {
		return r, err
	}
	for _, n := range c.nodes {
		r.Logs = append(r.Logs, n.logPath)
	}
	// Every way out of Run goes through here: no node outlives the run.
	defer func() {
		c.killAll()
		r.PIDs = c.startedPIDs()
	}()

	// Form the cluster: three nodes with the same --peers, in parallel.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = c.startNode(ctx, n) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return r, fmt.Errorf("starting the cluster: %w", err)
		}
	}
	if _, err := waitLeader(ctx, c, formDeadline); err != nil {
		return r, fmt.Errorf("the new cluster: %w", err)
	}
	say("cluster of %d nodes up (HTTP %s); seed %d, %d clients, faults %s, load for %v",
		len(c.nodes), nodeURLs(c), o.Seed, o.Clients, o.Faults, o.Duration)

	rec := history.NewRecorder()
	ld := newLoad(ctx, rec, c.nodes, o.Seed, o.Clients)
	defer ld.close()
	f := newFaulter(c, o.Seed, o.Faults, verbose)

	loadCtx, endLoad := context.WithTimeout(ctx, o.Duration)
	defer endLoad()
	go func() {
		select {
		case <-o.Stop:
			endLoad()
		case <-loadCtx.Done():
		}
	}()
	faultCtx, endFaults := context.WithTimeout(loadCtx, o.Duration-quietPeriod(o.Duration))
	defer endFaults()

	loadStart := time.Now()
	waitClients := ld.run(loadCtx, o.Clients)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(o.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-t.C:
				say("%s", progress(ctx, time.Since(loadStart), ld, f, c))
			}
		}
	}()

	faultErr := f.run(ctx, faultCtx)
	r.Faults, r.LeaderFault, r.Behind = f.tally()
	r.FaultLog = f.events()
	if faultErr != nil {
		r.failf("a node could not be restarted: %v", faultErr)
		endLoad() // the run has failed: check what there is now
	}
	// Whatever the fault loop left (it carries each fault through, but an
	// abort can cut it short): every node runs and none is paused.
	for _, n := range c.nodes {
		if n.isPaused() {
			c.resume(n)
		}
	}
	r.CatchUps = f.catchUpTimes()
	if ctx.Err() == nil {
		if !o.Faults.any() {
			say("no faults in this run (--faults none)")
		} else {
			say("faults over after %v: %d kills and %d pauses of one node (%d of them the leader), %d quorum losses, %d full crashes",
				time.Since(loadStart).Round(time.Second), r.Faults[faultKill], r.Faults[faultPause], r.LeaderFault, r.Faults[faultQuorum], r.Faults[faultAll])
		}
		r.Recovery, err = recoverCheck(ctx, c, rec)
		if err != nil {
			r.failf("no recovery within %v of the last fault: %v", recoverDeadline, err)
		} else {
			say("recovered: leader elected and a write acknowledged through every node %v after the last fault", r.Recovery.Round(time.Millisecond))
		}
	}

	<-loadCtx.Done()
	waitClients()
	<-progressDone
	r.LoadTime = time.Since(loadStart)
	r.Ops, r.Swapped = ld.stats.snapshot()
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	all, ok := ld.stats.total()
	say("load stopped after %v: %d operations, %d acknowledged; checking", r.LoadTime.Round(time.Second), all, ok)

	// Every node that is meant to be up must be up.
	for _, n := range c.nodes {
		if !n.isRunning() {
			r.failf("node %d is not running at the end (its log: %s)", n.id, n.logPath)
		}
	}
	if o.tamper != nil {
		if err := o.tamper(ctx, c, ld.onceWrites()); err != nil {
			return r, err
		}
	}
	readBack(ctx, c, rec, ld.onceWrites(), r)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	say("write-once keys read back from %d nodes: %d acknowledged, %d found", r.ReadNodes, r.OnceAcked, r.OnceAckedFound)

	checkStart := time.Now()
	res := rec.Check(o.CheckTimeout)
	r.CheckTime = time.Since(checkStart)
	r.Linearizable = res.Outcome
	r.HistoryCounts = rec.Counts()
	r.HistoryOps = r.HistoryCounts.Ops
	if err := res.Err(); err != nil {
		path := filepath.Join(o.Dir, "history.html")
		if werr := res.WriteVisualization(path); werr == nil {
			r.Visualization = path
		}
		r.failf("linearizability: %v", err)
	}

	applied, err := convergeCheck(ctx, c)
	r.Applied = applied
	if err != nil {
		r.failf("applied indexes: %v", err)
	} else if err := sameState(ctx, c, ld.sharedKeyNames(), applied); err != nil {
		r.failf("replicas differ: %v", err)
	}
	for _, e := range c.unexpectedExits() {
		r.failf("node %d (pid %d) exited on its own at +%v: %s (its log: %s)", e.node, e.pid,
			e.at.Round(time.Millisecond), e.state, c.nodes[e.node-1].logPath)
	}
	return r, nil
}

func (o Options) withDefaults() Options {
	if o.Clients <= 0 {
		o.Clients = defaultClients
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 30 * time.Second
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = 10 * time.Minute
	}
	return o
}

// quietPeriod is how long before the end of the load the faults stop.
func quietPeriod(d time.Duration) time.Duration {
	return min(max(d/5, 5*time.Second), 30*time.Second)
}

func nodeURLs(c *procCluster) string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, n.httpAddr)
	}
	return strings.Join(urls, " ")
}

// progress is one progress line.
func progress(ctx context.Context, elapsed time.Duration, ld *load, f *faulter, c *procCluster) string {
	all, ok := ld.stats.total()
	n, _ := ld.stats.snapshot()
	var failed, unsure int
	for _, row := range n {
		failed += row[refused]
		unsure += row[unknown]
	}
	counts, _, _ := f.tally()
	faults := 0
	for _, k := range counts {
		faults += k
	}
	who := "no leader"
	if leader, st := c.leader(ctx); leader != nil {
		who = fmt.Sprintf("leader node %d term %d commit %d", leader.id, st.Term, st.Commit)
	}
	return fmt.Sprintf("%6v: %d operations (%d acked, %d failed, %d unknown), %d faults, %s",
		elapsed.Round(time.Second), all, ok, failed, unsure, faults, who)
}

// waitLeader waits until every node names the same leader and that node
// says it leads.
func waitLeader(ctx context.Context, c *procCluster, d time.Duration) (*node, error) {
	deadline := time.Now().Add(d)
	for {
		var id uint64
		agreed := true
		for _, n := range c.nodes {
			st, err := c.status(ctx, n)
			if err != nil || st.Leader == 0 || (id != 0 && st.Leader != id) {
				agreed = false
				break
			}
			id = st.Leader
		}
		if agreed {
			leader := c.nodes[id-1]
			if st, err := c.status(ctx, leader); err == nil && st.Role == "leader" {
				return leader, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader all nodes agree on within %v: %s", d, c.describe(ctx))
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// recoverCheck waits for a leader all nodes agree on and then for a write
// acknowledged through every node (a probe key each, recorded in the
// history), and returns how long that took.
func recoverCheck(ctx context.Context, c *procCluster, rec *history.Recorder) (time.Duration, error) {
	start := time.Now()
	if _, err := waitLeader(ctx, c, recoverDeadline); err != nil {
		return time.Since(start), err
	}
	hc := c.http
	for _, n := range c.nodes {
		for attempt := 0; ; attempt++ {
			key := fmt.Sprintf("probe-%d-%d", n.id, attempt)
			in := history.Put(key, "up")
			id := rec.Invoke(900+int(n.id), in, now())
			code, body, err := httpDo(hc, "PUT", n.url()+"/kv/"+key, in.Value)
			v, out := classify(in, err, code, body)
			switch v {
			case acked:
				rec.Return(id, out, now())
			case refused:
				rec.Fail(id, now())
			default:
				rec.ReturnUnknown(id, now())
			}
			if v == acked {
				break
			}
			if time.Since(start) > recoverDeadline {
				return time.Since(start), fmt.Errorf("a write through node %d: %d %s %v; %s", n.id, code, strings.TrimSpace(body), err, c.describe(ctx))
			}
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return time.Since(start), ctx.Err()
			}
		}
	}
	return time.Since(start), nil
}

// readBack reads every write-once key through every node with a
// linearizable read, records the reads in the history, and checks that
// each acknowledged write is there with its value and that no write
// refused for certain is there at all.
func readBack(ctx context.Context, c *procCluster, rec *history.Recorder, writes []onceWrite, r *Report) {
	type job struct {
		w onceWrite
		n *node
	}
	var up []*node
	for _, n := range c.nodes {
		if n.isRunning() {
			up = append(up, n)
		}
	}
	r.ReadNodes = len(up)
	jobs := make(chan job)
	var (
		mu       sync.Mutex
		problems []string
		missing  int
		foundOn  = map[string]int{}
	)
	const workers = 12
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			client := 1000 + w
			for j := range jobs {
				in := history.Get(j.w.key)
				var (
					v    verdict
					out  history.Output
					code int
					err  error
				)
				// A read may meet an election: try again a few times.
				for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
					id := rec.Invoke(client, in, now())
					var body string
					code, body, err = httpDo(c.http, "GET", j.n.url()+"/kv/"+j.w.key, "")
					v, out = classify(in, err, code, body)
					if v == acked {
						rec.Return(id, out, now())
						break
					}
					rec.Fail(id, now())
					sleepCtx(ctx, 100*time.Millisecond)
				}
				mu.Lock()
				switch {
				case v != acked:
					problems = append(problems, fmt.Sprintf("node %d does not answer a read of %s: %d %v", j.n.id, j.w.key, code, err))
				case out.Found && out.Value != j.w.value:
					problems = append(problems, fmt.Sprintf("node %d reads %s=%q, the write was %q", j.n.id, j.w.key, out.Value, j.w.value))
				case !out.Found && j.w.verdict == acked:
					missing++
					problems = append(problems, fmt.Sprintf("acknowledged write %s=%q is absent on node %d", j.w.key, j.w.value, j.n.id))
				case out.Found && j.w.verdict == refused:
					problems = append(problems, fmt.Sprintf("write %s=%q failed for certain, yet node %d holds it", j.w.key, j.w.value, j.n.id))
				case out.Found:
					foundOn[j.w.key]++
				}
				mu.Unlock()
			}
		})
	}
	for _, w := range writes {
		switch w.verdict {
		case acked:
			r.OnceAcked++
		case unknown:
			r.OnceUnknown++
		default:
			r.OnceFailed++
		}
		for _, n := range up {
			select {
			case jobs <- job{w, n}:
			case <-ctx.Done():
			}
		}
	}
	close(jobs)
	wg.Wait()
	for _, w := range writes {
		if foundOn[w.key] != len(up) {
			continue
		}
		switch w.verdict {
		case acked:
			r.OnceAckedFound++
		case unknown:
			r.OnceUnknownFound++
		default:
			r.OnceFailedFound++
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		const shown = 20
		more := ""
		if len(problems) > shown {
			more = fmt.Sprintf("\n  ... and %d more", len(problems)-shown)
			problems = problems[:shown]
		}
		r.failf("write-once keys: %d problem(s), %d acknowledged reads missing:\n  %s%s",
			len(problems), missing, strings.Join(problems, "\n  "), more)
	}
}

// sameState compares the shared keys' values in every node's own state
// (stale reads, no leader involved) once all have applied the same index:
// replicas that applied the same log must hold the same data.
func sameState(ctx context.Context, c *procCluster, keys []string, applied uint64) error {
	var diffs []string
	for _, key := range keys {
		var first string
		for i, n := range c.nodes {
			code, body, err := httpDo(c.http, "GET", n.url()+"/kv/"+key+"?consistency=stale", "")
			if err != nil || (code != 200 && code != 404) {
				return fmt.Errorf("stale read of %s on node %d: %d %s %v", key, n.id, code, strings.TrimSpace(body), err)
			}
			got := "<absent>"
			if code == 200 {
				got = fmt.Sprintf("%q", body)
			}
			if i == 0 {
				first = got
			} else if got != first {
				diffs = append(diffs, fmt.Sprintf("%s: node %d holds %s, node %d holds %s", key, c.nodes[0].id, first, n.id, got))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("at applied index %d, %d shared key(s) differ:\n  %s", applied, len(diffs), strings.Join(diffs, "\n  "))
	}
	return nil
}

// convergeCheck waits until every node has applied the same index and
// that index is the commit index they all report.
func convergeCheck(ctx context.Context, c *procCluster) (uint64, error) {
	deadline := time.Now().Add(convergeDeadline)
	for {
		var applied uint64
		same := true
		for i, n := range c.nodes {
			st, err := c.status(ctx, n)
			if err != nil || st.Applied != st.Commit || (i > 0 && st.Applied != applied) {
				same = false
				break
			}
			applied = st.Applied
		}
		if same {
			return applied, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not equal within %v: %s", convergeDeadline, c.describe(ctx))
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
}
