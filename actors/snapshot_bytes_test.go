package actors

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// With SnapshotBytes set (and SnapshotEntries off) a node snapshots once
// the entries it applied add up to that many bytes, not before, and then
// purges its log down to SnapshotTrailing entries.
func TestSnapshotBytesPolicy(t *testing.T) {
	const (
		threshold = 8 << 10
		value     = 1 << 10
		trailing  = 2
	)
	tc := newTestCluster(t, func(id uint64) Config {
		c := testConfig(id)
		c.SnapshotEntries = 0
		c.SnapshotBytes = threshold
		c.SnapshotTrailing = trailing
		return c
	})
	tc.boot(1)
	l := tc.leader()
	// writes[i] is the index of the i-th write; each carries value bytes,
	// so a snapshot at s covers at most value*(writes at or below s)
	// bytes of payload plus a few bytes of framing per entry.
	var writes []uint64
	atOrBelow := func(s uint64) int {
		n := 0
		for _, w := range writes {
			if w <= s {
				n++
			}
		}
		return n
	}
	for i := 0; i < 24; i++ {
		res := write(t, l.node, fmt.Sprintf("%02d", i)+strings.Repeat("v", value-2))
		writes = append(writes, res.Index)
		// Checked after every write: a snapshot that came too early is
		// seen here before a later, legitimate one replaces it.
		if s := l.node.Metrics().GetSnapshotIndex(); s > 0 && atOrBelow(s)*(value+64) < threshold {
			t.Fatalf("snapshot at %d after only %d writes of %d bytes; the threshold is %d bytes", s, atOrBelow(s), value, threshold)
		}
	}
	waitFor(t, 20*time.Second, "a snapshot and a purged log", func() bool {
		m := l.node.Metrics()
		return m.GetSnapshotIndex() > 0 && m.GetFirstLogIndex() == m.GetSnapshotIndex()-trailing+1
	})
	m := l.node.Metrics()
	if s := m.GetSnapshotIndex(); atOrBelow(s) < threshold/(value+64) {
		t.Fatalf("snapshot at %d covers %d writes, fewer than %d bytes", s, atOrBelow(s), threshold)
	}
	st, err := l.st.Load(l.node.cfg.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSnapshot().GetIndex() == 0 || st.GetFirstIndex() <= 1 {
		t.Fatalf("store holds snapshot %d and log from %d: nothing was compacted", st.GetSnapshot().GetIndex(), st.GetFirstIndex())
	}
}
