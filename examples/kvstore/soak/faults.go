//go:build unix

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// faultKind is one kind of process-level fault.
type faultKind uint8

const (
	// faultKill: SIGKILL one node (often the leader), restart it on its
	// directory after a short random time.
	faultKill faultKind = iota
	// faultPause: SIGSTOP one node (often the leader), SIGCONT it after
	// 0.2 to 3 seconds: a stop-the-world pause, a VM migration.
	faultPause
	// faultQuorum: SIGKILL two of the three nodes, so that no quorum is
	// left, and restart them.
	faultQuorum
	// faultAll: SIGKILL all three nodes and restart them: a full-cluster
	// crash, as in a power cut.
	faultAll
	numFaultKinds
)

var faultNames = [numFaultKinds]string{"kill", "pause", "quorum", "all"}

func (k faultKind) String() string { return faultNames[k] }

// faultWeights say how often each enabled kind is chosen: single-node
// faults most, the loss of quorum sometimes, the full crash now and then.
var faultWeights = [numFaultKinds]int{faultKill: 4, faultPause: 4, faultQuorum: 2, faultAll: 1}

// faultSet is the set of enabled fault kinds.
type faultSet [numFaultKinds]bool

func allFaults() faultSet { return faultSet{true, true, true, true} }

// parseFaults parses a comma-separated list of fault kinds; "none" (or an
// empty list) enables none, for a run without faults.
func parseFaults(s string) (faultSet, error) {
	var set faultSet
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return set, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		i := slices.Index(faultNames[:], item)
		if i < 0 {
			return set, fmt.Errorf("--faults: unknown fault %q (use kill, pause, quorum, all, or none)", item)
		}
		set[i] = true
	}
	return set, nil
}

func (s faultSet) String() string {
	var names []string
	for k, on := range s {
		if on {
			names = append(names, faultNames[k])
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

func (s faultSet) any() bool { return slices.Contains(s[:], true) }

// faultEvent is one line of the fault log.
type faultEvent struct {
	at     time.Duration // since the cluster started
	action string
	nodes  []uint64
	note   string
}

func (e faultEvent) String() string {
	ids := make([]string, len(e.nodes))
	for i, id := range e.nodes {
		ids[i] = fmt.Sprint(id)
	}
	s := fmt.Sprintf("%9.3fs  %-8s node %s", e.at.Seconds(), e.action, strings.Join(ids, ","))
	if e.note != "" {
		s += "  (" + e.note + ")"
	}
	return s
}

// faulter runs the fault loop. Every choice (which fault, which node, how
// long) comes from one generator seeded with the soak's seed: a seed
// replays the same sequence of faults, though not the same timing of the
// processes around them.
type faulter struct {
	c       *procCluster
	rng     *rand.Rand
	kinds   []faultKind
	verbose func(format string, args ...any)

	// firstRound holds the kinds not yet injected: the first faults of a
	// run are one of each enabled kind, in seeded order, so that a short
	// run meets all of them; after that the weights decide.
	firstRound []faultKind

	mu          sync.Mutex
	log         []faultEvent
	counts      [numFaultKinds]int
	leaderFault int // kills and pauses that hit the leader
	// behind counts restarts whose log ended before the leader's first
	// log entry: the leader had to send them a snapshot.
	behind int
	// catchUps are the times restarted nodes took to apply the commit
	// index the leader had when they came back.
	catchUps []time.Duration
	watchers sync.WaitGroup
}

func newFaulter(c *procCluster, seed uint64, set faultSet, verbose func(string, ...any)) *faulter {
	f := &faulter{c: c, rng: rand.New(rand.NewPCG(seed, 0xfa17)), verbose: verbose}
	for k, on := range set {
		if on {
			f.firstRound = append(f.firstRound, faultKind(k))
			for range faultWeights[k] {
				f.kinds = append(f.kinds, faultKind(k))
			}
		}
	}
	f.rng.Shuffle(len(f.firstRound), func(i, j int) {
		f.firstRound[i], f.firstRound[j] = f.firstRound[j], f.firstRound[i]
	})
	return f
}

// nextKind chooses the next fault.
func (f *faulter) nextKind() faultKind {
	if len(f.firstRound) > 0 {
		k := f.firstRound[0]
		f.firstRound = f.firstRound[1:]
		return k
	}
	return f.kinds[f.rng.IntN(len(f.kinds))]
}

func (f *faulter) note(action string, nodes []uint64, note string) {
	e := faultEvent{at: f.c.since(), action: action, nodes: nodes, note: note}
	f.mu.Lock()
	f.log = append(f.log, e)
	f.mu.Unlock()
	f.verbose("fault %s", e)
}

func (f *faulter) events() []faultEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]faultEvent(nil), f.log...)
}

func (f *faulter) tally() (counts [numFaultKinds]int, onLeader, behind int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts, f.leaderFault, f.behind
}

// between returns a random duration in [lo, hi).
func (f *faulter) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(f.rng.Int64N(int64(hi-lo)))
}

// run injects faults until stop ends, one at a time with random gaps.
// Each fault is carried through (the nodes it took down are restarted,
// the node it paused resumed) before run returns, unless ctx ends, which
// aborts the whole soak. An error is a node that could not be restarted.
func (f *faulter) run(ctx, stop context.Context) error {
	if len(f.kinds) == 0 {
		<-stop.Done()
		return nil
	}
	for {
		if !sleepCtx(stop, f.between(500*time.Millisecond, 3*time.Second)) {
			return nil
		}
		kind := f.nextKind()
		if err := f.inject(ctx, kind); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// target picks one node: the leader with probability pLeader (when there
// is one), else any node. It also says whether it picked the leader.
func (f *faulter) target(ctx context.Context, pLeader float64) (*node, string, bool) {
	wantLeader := f.rng.Float64() < pLeader
	pick := f.c.nodes[f.rng.IntN(len(f.c.nodes))]
	leader, st := f.c.leader(ctx)
	switch {
	case leader == nil:
		return pick, "no leader", false
	case wantLeader || pick == leader:
		return leader, fmt.Sprintf("leader, term %d", st.Term), true
	}
	return pick, fmt.Sprintf("follower; node %d leads term %d", leader.id, st.Term), false
}

func (f *faulter) inject(ctx context.Context, kind faultKind) error {
	f.mu.Lock()
	f.counts[kind]++
	f.mu.Unlock()
	switch kind {
	case faultKill:
		n, note, isLeader := f.target(ctx, 0.6)
		down := f.between(200*time.Millisecond, 3*time.Second)
		f.countLeader(isLeader)
		f.c.kill(n)
		f.note("kill", []uint64{n.id}, joinNotes(note, "down "+down.Round(time.Millisecond).String()))
		sleepCtx(ctx, down)
		return f.restart(ctx, n)
	case faultPause:
		n, note, isLeader := f.target(ctx, 0.5)
		paused := f.between(200*time.Millisecond, 3*time.Second)
		f.countLeader(isLeader)
		f.c.pause(n)
		f.note("pause", []uint64{n.id}, joinNotes(note, "for "+paused.Round(time.Millisecond).String()))
		sleepCtx(ctx, paused)
		f.c.resume(n)
		f.note("resume", []uint64{n.id}, "")
		return nil
	case faultQuorum:
		// Two distinct nodes; the one left running cannot make progress.
		perm := f.rng.Perm(len(f.c.nodes))
		victims := []*node{f.c.nodes[perm[0]], f.c.nodes[perm[1]]}
		down := f.between(500*time.Millisecond, 4*time.Second)
		f.killAll(victims, "quorum lost, down "+down.Round(time.Millisecond).String())
		sleepCtx(ctx, down)
		return f.restart(ctx, victims...)
	default:
		down := f.between(200*time.Millisecond, 3*time.Second)
		f.killAll(f.c.nodes, "full-cluster crash, down "+down.Round(time.Millisecond).String())
		sleepCtx(ctx, down)
		return f.restart(ctx, f.c.nodes...)
	}
}

func (f *faulter) countLeader(isLeader bool) {
	if isLeader {
		f.mu.Lock()
		f.leaderFault++
		f.mu.Unlock()
	}
}

// killAll kills ns at once, as a power cut would.
func (f *faulter) killAll(ns []*node, note string) {
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Go(func() { f.c.kill(n) })
	}
	wg.Wait()
	f.note("kill", ids(ns), note)
}

// restart starts ns again on their directories, in parallel, and waits
// until each serves HTTP.
func (f *faulter) restart(ctx context.Context, ns ...*node) error {
	if ctx.Err() != nil {
		return nil
	}
	f.note("restart", ids(ns), "")
	errs := make([]error, len(ns))
	var wg sync.WaitGroup
	for i, n := range ns {
		wg.Go(func() { errs[i] = f.c.startNode(ctx, n) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	f.countBehind(ctx, ns)
	if len(ns) == 1 {
		f.watchCatchUp(ctx, ns[0])
	}
	return nil
}

// watchCatchUp measures, in the background, how long restarted node n
// takes to apply the commit index the leader had when n came back. The
// measurement is dropped when n is killed again first.
func (f *faulter) watchCatchUp(ctx context.Context, n *node) {
	start := time.Now()
	leader, st := f.c.leader(ctx)
	if leader == nil || leader == n {
		return
	}
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	f.watchers.Go(func() {
		for time.Since(start) < time.Minute {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			default:
			}
			if ns, err := f.c.status(ctx, n); err == nil && ns.Applied >= st.Commit {
				f.mu.Lock()
				f.catchUps = append(f.catchUps, time.Since(start))
				f.mu.Unlock()
				return
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
	})
}

// catchUpTimes waits for the measurements in flight and returns them all.
func (f *faulter) catchUpTimes() []time.Duration {
	f.watchers.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.catchUps...)
}

// countBehind notes which of the restarted nodes ns came back with a log
// that ends before the leader's log starts (the leader trimmed it after a
// snapshot), so that only a snapshot can bring them up to date. A node
// that is quick to catch up may be missed: the count is a lower bound.
func (f *faulter) countBehind(ctx context.Context, ns []*node) {
	leader, _ := f.c.leader(ctx)
	if leader == nil {
		return
	}
	lm, err := f.c.gauges(ctx, leader, "raftor_first_log_index")
	if err != nil {
		return
	}
	for _, n := range ns {
		if n == leader {
			continue
		}
		m, err := f.c.gauges(ctx, n, "raftor_last_log_index")
		if err == nil && m["raftor_last_log_index"]+1 < lm["raftor_first_log_index"] {
			f.mu.Lock()
			f.behind++
			f.mu.Unlock()
			f.note("behind", []uint64{n.id}, fmt.Sprintf("log ends at %d, the leader's starts at %d: needs a snapshot",
				m["raftor_last_log_index"], lm["raftor_first_log_index"]))
		}
	}
}

func ids(ns []*node) []uint64 {
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = n.id
	}
	return out
}

func joinNotes(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}
