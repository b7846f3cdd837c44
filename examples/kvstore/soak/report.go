//go:build unix

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"
)

// logTailLines is how much of each node's log a failure report shows.
const logTailLines = 40

// printReport prints what a run did and found; runErr is set when the run
// could not be carried out to its checks.
func printReport(w io.Writer, r *Report, runErr error) {
	o := r.Options
	fmt.Fprintln(w)
	fmt.Fprintf(w, "seed %d, %d clients, faults %s, load %v (asked %v)\n",
		o.Seed, o.Clients, o.Faults, r.LoadTime.Round(time.Millisecond), o.Duration)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operations\tacked\tfailed\tunknown\t")
	var total [3]int
	for c := range numClasses {
		name := classNames[c]
		if c == classCAS {
			name = fmt.Sprintf("cas (%d swapped)", r.Swapped)
		}
		row := r.Ops[c]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", name, row[acked], row[refused], row[unknown])
		for v := range total {
			total[v] += row[v]
		}
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t\n", total[acked], total[refused], total[unknown])
	_ = tw.Flush()

	if !o.Faults.any() {
		fmt.Fprintln(w, "faults: none")
	} else {
		fmt.Fprintf(w, "faults: %d kill, %d pause, %d quorum (two killed), %d all (three killed); %d of the kills and pauses hit the leader\n",
			r.Faults[faultKill], r.Faults[faultPause], r.Faults[faultQuorum], r.Faults[faultAll], r.LeaderFault)
		fmt.Fprintf(w, "snapshots: at least %d restarted nodes came back behind the leader's trimmed log and needed one\n", r.Behind)
		if len(r.CatchUps) > 0 {
			d := slices.Clone(r.CatchUps)
			slices.Sort(d)
			q := func(p float64) time.Duration { return d[int(float64(len(d)-1)*p)].Round(time.Millisecond) }
			fmt.Fprintf(w, "catch-up: a node restarted alone applied the leader's commit index of its restart in median %v, p90 %v, max %v (%d restarts)\n",
				q(0.5), q(0.9), q(1), len(d))
		}
	}
	if r.Recovery > 0 && o.Faults.any() {
		fmt.Fprintf(w, "recovery: a leader and a write acknowledged through every node %v after the last fault\n", r.Recovery.Round(time.Millisecond))
	}
	if r.ReadNodes > 0 {
		fmt.Fprintf(w, "write-once keys: %d acknowledged, %d of them found on all %d nodes; %d unknown (%d applied); %d failed (%d applied)\n",
			r.OnceAcked, r.OnceAckedFound, r.ReadNodes, r.OnceUnknown, r.OnceUnknownFound, r.OnceFailed, r.OnceFailedFound)
	}
	if r.HistoryOps > 0 {
		fmt.Fprintf(w, "linearizability: %s, %d operations (%d unknown outcome, %d failed), checked in %v\n",
			verdictText(r.Linearizable), r.HistoryOps, r.HistoryCounts.Unknown, r.HistoryCounts.Failed, r.CheckTime.Round(time.Millisecond))
	}
	if r.Applied > 0 {
		fmt.Fprintf(w, "applied indexes: all nodes at %d\n", r.Applied)
	}
	fmt.Fprintf(w, "elapsed: %v\n", r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "replay: %s\n", replayCommand(o))

	if runErr == nil && r.Passed() {
		fmt.Fprintf(w, "PASS (seed %d)\n", o.Seed)
		return
	}
	if runErr != nil {
		fmt.Fprintf(w, "\nthe run could not be completed: %v\n", runErr)
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "\nFAILED CHECKS:\n")
		for i, f := range r.Failures {
			fmt.Fprintf(w, "%d. %s\n", i+1, f)
		}
	}
	if r.Visualization != "" {
		fmt.Fprintf(w, "porcupine's view of the history: %s\n", r.Visualization)
	}
	fmt.Fprintf(w, "\nfault log (seconds since the cluster started):\n")
	if len(r.FaultLog) == 0 {
		fmt.Fprintln(w, "  (no faults)")
	}
	for _, e := range r.FaultLog {
		fmt.Fprintf(w, "  %s\n", e)
	}
	for _, path := range r.Logs {
		fmt.Fprintf(w, "\n%s, last %d lines:\n%s\n", path, logTailLines, indent(lastLines(path, logTailLines)))
	}
	fmt.Fprintf(w, "\nFAIL (seed %d)\n", o.Seed)
}

func verdictText(v porcupine.CheckResult) string {
	switch v {
	case porcupine.Ok:
		return "linearizable"
	case porcupine.Illegal:
		return "NOT linearizable"
	default:
		return "inconclusive (the check timed out)"
	}
}

// replayCommand is the command line that runs the same faults and client
// operations again.
func replayCommand(o Options) string {
	parts := []string{"go run ./examples/kvstore/soak", "--seed", fmt.Sprint(o.Seed), "--duration", o.Duration.String()}
	if o.Clients != defaultClients {
		parts = append(parts, "--clients", fmt.Sprint(o.Clients))
	}
	if o.Faults != allFaults() {
		parts = append(parts, "--faults", o.Faults.String())
	}
	if o.SnapshotEntries != defaultSnapshotEntries {
		parts = append(parts, "--snapshot-entries", fmt.Sprint(o.SnapshotEntries))
	}
	return strings.Join(parts, " ")
}
