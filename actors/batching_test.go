package actors

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Writers answered together write again together, and RaftCore proposes
// their writes in one flush rather than one by one: the first write to
// arrive would otherwise be flushed (appended, replicated) alone while the
// other writers wait for the CPU behind it, and every write would pay for
// a storage append and a replication round of its own.
func TestWritersAnsweredTogetherShareAFlush(t *testing.T) {
	tc := newTestCluster(t, nil)
	tc.boot(1)
	n := tc.leader().node
	write(t, n, "first")
	before := n.StorageStats()
	const writers, rounds = 64, 20
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range rounds {
				if _, err := n.ClientWrite(ctxT(t, 20*time.Second), []byte(fmt.Sprintf("w%d.%d", i, j))); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	appends := n.StorageStats().Appends - before.Appends
	t.Logf("%d writes took %d storage appends from RaftCore", writers*rounds, appends)
	// Without the yield before a flush (raftCore.handle, *coreFlush) this
	// took 661 to 1045 appends in runs on a two-core machine, with it 73
	// to 246: RaftCore appends once per flush that proposes writes (and
	// for hard states), so a third of an append per write means writers
	// answered together were flushed one by one.
	if appends > writers*rounds/3 {
		t.Errorf("%d writes took %d storage appends: writers answered together did not share flushes", writers*rounds, appends)
	}
}
