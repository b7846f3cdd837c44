package clustertest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/store"
)

// linearizabilityTimeout bounds porcupine's search.
const linearizabilityTimeout = 60 * time.Second

// CheckLinearizable checks the client history recorded so far with
// porcupine against the key-value model, and fails the test, with the path
// of porcupine's visualization, when it is not linearizable.
func (c *Cluster) CheckLinearizable() {
	c.t.Helper()
	res := c.hist.Check(linearizabilityTimeout)
	if err := res.Err(); err != nil {
		path := c.historyPath()
		if werr := res.WriteVisualization(path); werr != nil {
			path = fmt.Sprintf("(not written: %v)", werr)
		}
		c.t.Logf("clustertest: cluster state:\n%s\nclient history: %s", c.Dump(), path)
		c.t.Fatalf("clustertest: %v", err)
	}
}

// Check heals the network, resumes paused nodes, and then checks what the
// cluster's users rely on:
//   - a leader emerges and every running member applies everything it
//     committed, and all of them hold the same state;
//   - no node applied an entry that another applied differently at the
//     same index, and every acknowledged write is the entry at its index
//     (no acknowledged write was lost);
//   - after a final linearizable read of every key written, the client
//     history is linearizable.
//
// New's cleanup runs it when the test did not fail and did not call it.
func (c *Cluster) Check() {
	c.t.Helper()
	c.check(true)
}

func (c *Cluster) check(explicit bool) {
	c.t.Helper()
	c.mu.Lock()
	c.checked = true
	c.mu.Unlock()
	c.Heal()
	for _, id := range c.IDs() {
		c.Resume(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := c.Leader(ctx)
	if err != nil {
		c.Fatalf("final check: %v", err)
	}
	members := c.members(leader)
	// Converged: every running member applied the leader's commit index,
	// and their states are equal.
	var digests map[uint64]string
	err = c.waitCtx(ctx, func() bool {
		lm := c.Node(leader).Metrics()
		digests = map[uint64]string{}
		var applied uint64
		for i, id := range members {
			sm := c.Node(id).StateMachine()
			if sm == nil {
				continue
			}
			a, _ := sm.LastApplied()
			if a < lm.GetCommitIndex() || (i > 0 && a != applied) {
				return false
			}
			applied = a
			d, err := stateDigest(sm)
			if err != nil {
				return false
			}
			digests[id] = d
		}
		first := ""
		for _, d := range digests {
			if first == "" {
				first = d
			} else if d != first {
				return false
			}
		}
		return true
	})
	if err != nil {
		c.Fatalf("final check: running members %v did not converge on the leader's commit index with equal states (digests %v)", members, digests)
	}
	if v := c.safety.verify(); len(v) > 0 {
		c.Fatalf("final check: %d safety violation(s):\n  %s", len(v), strings.Join(v, "\n  "))
	}
	if c.opts.NewStateMachine == nil {
		for _, key := range c.writtenKeys() {
			if _, err := c.finalRead(ctx, leader, key); err != nil {
				c.Fatalf("final check: read %s: %v", key, err)
			}
		}
		c.CheckLinearizable()
	}
	if explicit {
		cnt := c.hist.Counts()
		c.t.Logf("clustertest: checked: %d members converged, %d operations linearizable (%d unknown, %d failed)",
			len(members), cnt.Ops, cnt.Unknown, cnt.Failed)
	}
}

// finalRead reads key, retrying while leadership settles.
func (c *Cluster) finalRead(ctx context.Context, leader uint64, key string) (history.Output, error) {
	for {
		out, err := c.Do(ctx, leader, history.Get(key))
		if err == nil || ctx.Err() != nil {
			return out, err
		}
		if l, lerr := c.Leader(ctx); lerr == nil {
			leader = l
		}
	}
}

// members returns the running voters and learners of the leader's
// configuration.
func (c *Cluster) members(leader uint64) []uint64 {
	m := c.Node(leader).Metrics().GetMembership()
	var ids []uint64
	for _, id := range slices.Concat(m.GetVoters(), m.GetVotersOutgoing(), m.GetLearners()) {
		if !slices.Contains(ids, id) && c.Node(id).IsUp() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// stateDigest hashes a state machine's snapshot: equal states at equal
// applied indexes give equal digests.
func stateDigest(sm store.StateMachine) (string, error) {
	snap, err := sm.Snapshot()
	if err != nil {
		return "", err
	}
	defer snap.Close()
	h := sha256.New()
	if _, err := snap.WriteTo(h); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x@%d", h.Sum(nil)[:8], snap.Index()), nil
}

func (c *Cluster) writtenKeys() []string {
	var keys []string
	for _, op := range c.hist.Operations() {
		in := op.Input.(history.Input)
		if in.Kind.IsWrite() && !slices.Contains(keys, in.Key) {
			keys = append(keys, in.Key)
		}
	}
	slices.Sort(keys)
	return keys
}

var unsafePath = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// historyPath is where a failed test's history goes: RAFTOR_HISTORY_DIR, or
// the system's temporary directory.
func (c *Cluster) historyPath() string {
	dir := os.Getenv("RAFTOR_HISTORY_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "raftor-clustertest")
	}
	name := unsafePath.ReplaceAllString(c.t.Name(), "_")
	return filepath.Join(dir, fmt.Sprintf("%s-%s.html", name, time.Now().Format("20060102-150405.000")))
}

// saveHistory writes porcupine's visualization of the history and returns
// its path ("" when there is no history).
func (c *Cluster) saveHistory() string {
	if c.hist.Len() == 0 {
		return ""
	}
	res := c.hist.Check(linearizabilityTimeout)
	path := c.historyPath()
	if err := res.WriteVisualization(path); err != nil {
		return fmt.Sprintf("(not written: %v)", err)
	}
	return path
}
