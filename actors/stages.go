package actors

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/raftor/raftor/messages"
)

// Stage timing shows where one client's write spends its time: when
// RaftCore took it, when each stream sent it, when each node's storage
// append started and ended, when the answer left the apply actor. It is
// compiled in only with the build tag raftorstages (stagesOn is a
// constant, so without the tag every mark is removed by the compiler):
//
//	go run -tags raftorstages ./examples/bench --systems raftor --modes durable --clients 1
//
// Each mark names the entry index it concerns, and a write keeps, of each
// mark, the first one at or after its own index (or one without an index),
// so that the marks of the write before (its commit reaching the
// followers, say) do not count. Only one write is followed at a time: a
// write that starts while another is followed is not followed, which
// makes the figures those of single-client runs.

// stages is the process's one recorder: marks come from the actors of
// every node in the process.
var stages = newStageRecorder()

type stageKey struct {
	who  string // the actor that marked, by its PID's ID
	what string
}

type stageMark struct {
	key   stageKey
	index uint64
	at    time.Duration
}

type stageRecorder struct {
	mu        sync.Mutex
	following bool
	start     time.Time
	marks     []stageMark
	offsets   map[stageKey][]time.Duration
	writes    int
}

func newStageRecorder() *stageRecorder {
	return &stageRecorder{offsets: map[stageKey][]time.Duration{}}
}

// begin starts following a write, unless one is followed already; it
// reports whether it did.
func (s *stageRecorder) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.following {
		return false
	}
	s.following, s.start, s.marks = true, time.Now(), s.marks[:0]
	return true
}

// mark records what happened now; index is the entry index it concerns
// (0: the followed write's, whatever its index).
func (s *stageRecorder) mark(index uint64, who, what string) {
	now := time.Now()
	s.mu.Lock()
	if s.following {
		s.marks = append(s.marks, stageMark{key: stageKey{who, what}, index: index, at: now.Sub(s.start)})
	}
	s.mu.Unlock()
}

// end stops following the write, which got index (0: it failed, and its
// marks are dropped).
func (s *stageRecorder) end(index uint64) {
	took := time.Since(s.start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.following {
		return
	}
	s.following = false
	if index == 0 {
		return
	}
	seen := make(map[stageKey]bool, len(s.marks))
	for _, m := range s.marks {
		if (m.index != 0 && m.index < index) || seen[m.key] {
			continue
		}
		seen[m.key] = true
		s.offsets[m.key] = append(s.offsets[m.key], m.at)
	}
	end := stageKey{"client", "call returned"}
	s.offsets[end] = append(s.offsets[end], took)
	s.writes++
}

// report writes, for every mark seen in at least half of the followed
// writes, its median time after the call started, in the order of those
// medians.
func (s *stageRecorder) report(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	type row struct {
		key    stageKey
		median time.Duration
		n      int
	}
	var rows []row
	for k, v := range s.offsets {
		if 2*len(v) < s.writes {
			continue // a mark of some writes only (a heartbeat's, a retry's)
		}
		v = slices.Clone(v)
		slices.Sort(v)
		rows = append(rows, row{key: k, median: v[len(v)/2], n: len(v)})
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.median != b.median {
			return int(a.median - b.median)
		}
		return strings.Compare(a.key.who+a.key.what, b.key.who+b.key.what)
	})
	if _, err := fmt.Fprintf(w, "median time since the call started, of %d writes followed one at a time:\n", s.writes); err != nil {
		return err
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "%10.1fµs  %-24s %-40s (%d writes)\n",
			float64(r.median)/float64(time.Microsecond), r.key.who, r.key.what, r.n); err != nil {
			return err
		}
	}
	return nil
}

// WriteStageReport writes the stage timings of the writes this process
// followed (see the build tag raftorstages) and reports whether stage
// timing is compiled in; without the tag it writes nothing.
func WriteStageReport(w io.Writer) (bool, error) {
	if !stagesOn {
		return false, nil
	}
	return true, stages.report(w)
}

// stageWho names an actor in a stage report by the part of its PID's ID
// after the cluster and group: "2/core" for node 2's RaftCore.
func stageWho(id string) string {
	parts := strings.Split(id, "/")
	if len(parts) >= 5 && parts[0] == "raftor" {
		return strings.Join(parts[3:], "/")
	}
	return id
}

// lastIndex is the index of the last of entries (0: none).
func lastIndex(ents []*messages.Entry) uint64 {
	if len(ents) == 0 {
		return 0
	}
	return ents[len(ents)-1].GetIndex()
}

// markAppends marks what for each append of a storage batch, under the
// name of the actor that asked for it.
func markAppends(jobs []laneJob, what string) {
	for _, j := range jobs {
		if ents := j.job.append.GetEntries(); len(ents) > 0 {
			stages.mark(lastIndex(ents), stageWho(j.job.replyTo.GetId()), what)
		}
	}
}
