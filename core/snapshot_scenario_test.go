package core_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/core/coretest"
)

// With only the byte policy on, large writes make the leader snapshot and
// purge its log; a follower that was cut off meanwhile catches up from the
// snapshot and ends up with the same data.
func TestScenarioSnapshotBytesCatchUp(t *testing.T) {
	opts := robust
	opts.SnapshotTrailing = 1
	opts.Replication.SnapshotChunkBytes = 256
	opts.Tweak = func(c *core.Config) { c.SnapshotEntries, c.SnapshotBytes = 0, 1024 }
	net := coretest.New(t, opts, 1, 2, 3)
	net.Elect(1)
	net.Isolate(3)
	var want []string
	for i := range 6 {
		d := fmt.Sprintf("%c%s", 'a'+i, strings.Repeat(".", 299))
		want = append(want, d)
		mustWrite(t, net, 1, d)
	}
	// 1,800 bytes of commands: one snapshot past 1,024 bytes, none before.
	st := net.Node(1).Status()
	if st.SnapshotIndex == 0 || st.FirstIndex <= 3 {
		t.Fatalf("leader did not snapshot and purge on bytes: %+v", st)
	}
	if st.SnapshotIndex < 6 {
		t.Fatalf("snapshot at %d covers fewer than 1024 bytes of writes", st.SnapshotIndex)
	}
	net.Heal()
	net.RunUntil(200, "node 3 caught up", func() bool {
		return net.Node(3).Status().Applied == net.Node(1).Status().Commit
	})
	if got := net.Node(3).AppliedData(); !slices.Equal(got, want) {
		t.Fatalf("node 3 applied %v, want %v", got, want)
	}
	if net.Node(3).Status().SnapshotIndex == 0 {
		t.Fatal("node 3 caught up without a snapshot")
	}
}
