package actors

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// A snapshot lets the leader purge its log; a node that joins later gets
// the snapshot (in chunks) and then the entries after it.
func TestSnapshotAndLearnerCatchUpFromIt(t *testing.T) {
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.SnapshotTrailing = 2
		c.SnapshotChunkBytes = 64 // several chunks for a small state
		return c
	})
	tc.boot(3)
	l := tc.leader()
	var want []string
	for i := 0; i < 20; i++ {
		d := fmt.Sprintf("s%02d", i)
		write(t, l.node, d)
		want = append(want, d)
	}
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	meta, err := l.node.TriggerSnapshot(ctxT(t, 20*time.Second))
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if applied := l.node.Metrics().GetAppliedIndex(); meta.GetIndex() == 0 || meta.GetIndex() > applied || meta.GetSize() == 0 {
		t.Fatalf("snapshot meta %v with applied %d", meta, applied)
	}
	waitFor(t, 20*time.Second, "the leader to purge its log", func() bool {
		m := l.node.Metrics()
		return m.GetSnapshotIndex() >= meta.GetIndex() && m.GetFirstLogIndex() > 1
	})
	write(t, l.node, "after snapshot")
	want = append(want, "after snapshot")

	tc.start(4)
	if err := l.node.AddLearner(ctxT(t, 30*time.Second), 4, ""); err != nil {
		t.Fatalf("add learner: %v", err)
	}
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	if got := tc.nodes[4].sm.snapshotData(); !slices.Equal(got, want) {
		t.Errorf("learner holds %v, want %v", got, want)
	}
	if m := tc.nodes[4].node.Metrics(); m.GetSnapshotIndex() < meta.GetIndex() {
		t.Errorf("learner's snapshot index %d, want at least %d (it should have installed the snapshot)", m.GetSnapshotIndex(), meta.GetIndex())
	}
}
