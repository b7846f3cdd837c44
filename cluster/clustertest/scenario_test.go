//go:build !race

package clustertest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster/clustertest"
	"github.com/raftor/raftor/messages"
)

// Every scenario runs a real cluster: one actor system and one remote per
// node on loopback, Pebble on a crashable in-memory disk. Each has its own
// deadline, and each ends with clustertest's final check: the network
// healed, every running member converged on the same state, no entry
// applied differently anywhere, no acknowledged write lost, and the client
// history linearizable (porcupine).

// followsAll reports whether every running node follows leader l in its
// term.
func followsAll(c *clustertest.Cluster, l uint64) bool {
	term := c.Node(l).Metrics().GetTerm()
	for _, id := range c.Up() {
		if m := c.Node(id).Metrics(); m.GetLeaderId() != l || m.GetTerm() != term {
			return false
		}
	}
	return true
}

// A cluster of separate actor systems elects exactly one leader, which every
// node follows, and serves writes and linearizable reads through any node.
func TestInitialElection(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			ctx := bound(t, 30*time.Second)
			c := clustertest.New(t, clustertest.Options{Nodes: size})
			l := c.WaitLeader(10 * time.Second)
			c.Eventually(10*time.Second, "every node following the leader", func() bool { return followsAll(c, c.WaitLeader(time.Second)) })
			if ls := c.Leaders(); len(ls) != 1 {
				c.Fatalf("nodes that consider themselves leader: %v, want one", ls)
			}
			put(t, ctx, c, l, "x", "1")
			for _, id := range c.IDs() {
				if v, ok := get(t, ctx, c, id, "x"); !ok || v != "1" {
					c.Fatalf("node %d reads x=%q (found %v), want 1", id, v, ok)
				}
			}
		})
	}
}

// When the leader dies, the others elect a new one in a higher term; the old
// one comes back as a follower and catches up.
func TestReElectionAfterLeaderLoss(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	old := c.WaitLeader(10 * time.Second)
	oldTerm := c.Node(old).Metrics().GetTerm()
	put(t, ctx, c, old, "x", "before")
	c.Crash(old)
	l := c.WaitLeader(10 * time.Second)
	if l == old || c.Node(l).Metrics().GetTerm() <= oldTerm {
		c.Fatalf("leader after the crash is %d in term %d; want another node in a term above %d", l, c.Node(l).Metrics().GetTerm(), oldTerm)
	}
	put(t, ctx, c, l, "x", "after")
	c.Restart(old)
	c.Eventually(10*time.Second, fmt.Sprintf("node %d following again", old), func() bool {
		m := c.Node(old).Metrics()
		return m.GetRole() == messages.Role_ROLE_FOLLOWER && m.GetLeaderId() != 0
	})
	if v, _ := get(t, ctx, c, old, "x"); v != "after" {
		c.Fatalf("restarted old leader reads x=%q, want after", v)
	}
}

// Without a quorum no node becomes leader, for as long as the quorum is
// missing; with it back, one does.
func TestNoLeaderWithoutQuorum(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 5})
	l := c.WaitLeader(10 * time.Second)
	// The survivors must hold the configuration to be voters at all.
	c.WaitApplied(10 * time.Second)
	// Crash three nodes, the leader among them.
	down := []uint64{l}
	for _, id := range c.IDs() {
		if len(down) < 3 && id != l {
			down = append(down, id)
		}
	}
	for _, id := range down {
		c.Crash(id)
	}
	noLeader := func() bool { return len(c.Leaders()) == 0 }
	c.Eventually(5*time.Second, "no node leading", noLeader)
	c.Consistently(15*c.ElectionTimeout(), "no leader among two of five nodes", noLeader)
	c.Restart(down[1])
	c.WaitLeader(10 * time.Second)
}

// With one follower down, the others agree and commit; the follower comes
// back and catches up with everything.
func TestAgreementDespiteFailedFollower(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	l := c.WaitLeader(10 * time.Second)
	f := otherThan(c, l)[0]
	put(t, ctx, c, l, "a", "1")
	c.Crash(f)
	for i := 0; i < 10; i++ {
		put(t, ctx, c, l, "a", fmt.Sprint(i+2))
	}
	c.Restart(f)
	commit := c.Node(l).Metrics().GetCommitIndex()
	c.Eventually(10*time.Second, "the failed follower catching up", func() bool {
		return c.Node(f).Metrics().GetAppliedIndex() >= commit
	})
	if v, _ := get(t, ctx, c, f, "a"); v != "11" {
		c.Fatalf("rejoined follower reads a=%q, want 11", v)
	}
}

// Without a majority nothing commits: a write through the leader does not
// succeed and its commit index stands still. Once the majority is back the
// cluster commits again.
func TestNoAgreementWithoutMajority(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 5, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.DisableCheckQuorum = true // keep the lonely leader leading
	}})
	l := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, l, "k", "committed")
	followers := otherThan(c, l)
	for _, id := range followers[:3] {
		c.Crash(id)
	}
	commit := c.Node(l).Metrics().GetCommitIndex()
	wctx, cancel := context.WithTimeout(ctx, 10*c.ElectionTimeout())
	err := c.Put(wctx, l, "k", "without majority")
	cancel()
	if err == nil {
		c.Fatalf("a write committed with two of five nodes")
	}
	if got := c.Node(l).Metrics().GetCommitIndex(); got != commit {
		c.Fatalf("commit index moved from %d to %d without a majority", commit, got)
	}
	for _, id := range followers[:3] {
		c.Restart(id)
	}
	l = c.WaitLeader(10 * time.Second)
	put(t, ctx, c, l, "k", "with majority")
}

// Clients write and read concurrently through every node; the history is
// linearizable and the nodes converge.
func TestConcurrentWrites(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			c := clustertest.New(t, clustertest.Options{Nodes: size})
			c.WaitLeader(10 * time.Second)
			load := c.StartLoad(clustertest.LoadOptions{Clients: 6, Keys: 3})
			c.Eventually(20*time.Second, "300 operations answered", func() bool { return load.Stats().OK >= 300 })
			st := load.Stop()
			if st.Failed > st.OK/10 {
				c.Fatalf("%d of %d operations failed in a healthy cluster", st.Failed, st.OK+st.Failed)
			}
			c.Check()
		})
	}
}

// A leader cut off from the others keeps appending the writes it gets, which
// never commit; the majority elects a new leader and commits its own. When
// the old leader returns its uncommitted entries are replaced.
func TestRejoiningOldLeaderEntriesReplaced(t *testing.T) {
	ctx := bound(t, 60*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.DisableCheckQuorum = true // the isolated leader keeps taking writes
	}})
	old := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, old, "k", "base")
	c.Isolate(old)
	// Writes to the isolated leader: appended, never committed.
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, 10*c.ElectionTimeout())
			defer cancel()
			_ = c.Put(wctx, old, "k", fmt.Sprintf("lost-%d", i))
		}()
	}
	c.Eventually(10*time.Second, "the isolated leader appending the writes", func() bool {
		return c.Node(old).Metrics().GetLastLogIndex() >= c.Node(old).Metrics().GetCommitIndex()+5
	})
	oldLast := c.Node(old).Metrics().GetLastLogIndex()
	others := otherThan(c, old)
	c.Eventually(10*time.Second, "a new leader among the majority", func() bool {
		for _, id := range others {
			if c.Node(id).Metrics().GetRole() == messages.Role_ROLE_LEADER {
				return true
			}
		}
		return false
	})
	for i := 0; i < 8; i++ {
		put(t, ctx, c, others[0], "k", fmt.Sprintf("new-%d", i))
	}
	wg.Wait()
	c.Heal()
	l := c.WaitLeader(10 * time.Second)
	if l == old {
		c.Fatalf("the old leader with a stale log won again")
	}
	commit := c.Node(l).Metrics().GetCommitIndex()
	c.Eventually(10*time.Second, "the old leader's log replaced", func() bool {
		m := c.Node(old).Metrics()
		return m.GetAppliedIndex() >= commit && m.GetLastLogTerm() == c.Node(l).Metrics().GetLastLogTerm()
	})
	if commit <= oldLast {
		t.Logf("note: new commit index %d does not pass the old leader's last index %d", commit, oldLast)
	}
	if v, _ := get(t, ctx, c, old, "k"); v != "new-7" {
		c.Fatalf("old leader reads k=%q, want new-7: an uncommitted entry survived", v)
	}
}

// Fast backup: a leader and a follower cut off with many uncommitted
// entries, a majority that commits many others; after healing, the long
// divergent logs are repaired in bounded time.
func TestFastBackupOfLongDivergentLogs(t *testing.T) {
	ctx := bound(t, 90*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 5, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.DisableCheckQuorum = true
		cfg.MaxAppendEntries = 16 // many rounds if the leader backed up one entry at a time
	}})
	old := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, old, "k", "base")
	others := otherThan(c, old)
	minority := []uint64{old, others[0]}
	majority := others[1:]
	c.Split(minority, majority)
	writeMany(ctx, c, old, "minority", 150, 5*c.ElectionTimeout())
	l := c.WaitLeader(10 * time.Second)
	if !slices.Contains(majority, l) {
		c.Fatalf("leader %d is not in the majority %v", l, majority)
	}
	writeMany(ctx, c, l, "majority", 150, 20*c.ElectionTimeout())
	c.Heal()
	start := time.Now()
	c.Eventually(15*time.Second, "every node converging on the majority's log", func() bool {
		lm := c.Node(c.WaitLeader(5 * time.Second)).Metrics()
		for _, id := range c.IDs() {
			if m := c.Node(id).Metrics(); m.GetAppliedIndex() < lm.GetCommitIndex() || m.GetLastLogTerm() != lm.GetLastLogTerm() {
				return false
			}
		}
		return true
	})
	t.Logf("divergent logs repaired in %v", time.Since(start))
}

// Persistence: the whole cluster crashes, twice, losing everything unsynced;
// what was acknowledged survives and the cluster goes on.
func TestPersistenceAcrossFullClusterRestarts(t *testing.T) {
	ctx := bound(t, 60*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	for round := 0; round < 2; round++ {
		l := c.WaitLeader(10 * time.Second)
		for i := 0; i < 5; i++ {
			put(t, ctx, c, l, fmt.Sprintf("k%d", i), fmt.Sprintf("r%d", round))
		}
		for _, id := range c.IDs() {
			c.Crash(id)
		}
		for _, id := range c.IDs() {
			c.Restart(id)
		}
		l = c.WaitLeader(10 * time.Second)
		for i := 0; i < 5; i++ {
			if v, _ := get(t, ctx, c, l, fmt.Sprintf("k%d", i)); v != fmt.Sprintf("r%d", round) {
				c.Fatalf("round %d: k%d=%q after a full restart", round, i, v)
			}
		}
	}
}

// Figure 8 of the Raft paper, with an unreliable network: leaders crash
// shortly after appending, nodes come back, messages are lost, duplicated
// and reordered. A leader must never commit an entry of an older term by
// counting replicas, or an acknowledged write is lost.
func TestFigure8Unreliable(t *testing.T) {
	ctx := bound(t, 90*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 5})
	c.WaitLeader(10 * time.Second)
	c.Unreliable(0.1, 0.05, 3*c.Options().TickInterval)
	load := c.StartLoad(clustertest.LoadOptions{Clients: 3, Keys: 3})
	rng := newRand(c)
	for round := 0; round < 8 && ctx.Err() == nil; round++ {
		if l := c.Leaders(); len(l) > 0 {
			for id := range l {
				time.Sleep(time.Duration(rng.IntN(int(c.ElectionTimeout())))) // let it append a little
				c.Crash(id)
				break
			}
		}
		// Keep at least a majority running.
		for _, id := range c.IDs() {
			if !c.Node(id).IsUp() && (len(c.Up()) < 3 || rng.IntN(2) == 0) {
				c.Restart(id)
			}
		}
		waitProgress(c, 5*time.Second)
	}
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	load.Stop()
	c.Check()
}

// Churn: nodes crash and restart under load, one or two at a time.
func TestChurnUnderLoad(t *testing.T) {
	ctx := bound(t, 90*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 5})
	c.WaitLeader(10 * time.Second)
	load := c.StartLoad(clustertest.LoadOptions{Clients: 4, Keys: 4})
	rng := newRand(c)
	for round := 0; round < 10 && ctx.Err() == nil; round++ {
		ids := c.IDs()
		victim := ids[rng.IntN(len(ids))]
		if c.Node(victim).IsUp() && len(c.Up()) > 3 {
			c.Crash(victim)
		} else {
			c.Restart(victim)
		}
		waitProgress(c, 5*time.Second)
	}
	for _, id := range c.IDs() {
		c.Restart(id)
	}
	st := load.Stop()
	if st.OK == 0 {
		c.Fatalf("no operation succeeded under churn")
	}
	c.Check()
}

// Snapshots: a follower far behind a compacted log gets a snapshot, over an
// unreliable network and through crashes of itself and of the leader; a
// learner that joins from scratch catches up by snapshot too.
//
// It once found a follower that restarted mid-transfer recording the same
// snapshot twice and then failing to open the first copy for its restore.
func TestSnapshotInstallUnreliableWithCrashes(t *testing.T) {
	ctx := bound(t, 90*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.SnapshotEntries, cfg.SnapshotTrailing = 20, 5
		cfg.SnapshotChunkBytes = 512 // several chunks per snapshot
	}})
	l := c.WaitLeader(10 * time.Second)
	f := otherThan(c, l)[0]
	c.Crash(f)
	for i := 0; i < 60; i++ {
		put(t, ctx, c, l, fmt.Sprintf("key-%02d", i%20), fmt.Sprintf("v%d", i))
	}
	c.Eventually(10*time.Second, "the leader compacting its log", func() bool {
		return c.Node(l).Metrics().GetFirstLogIndex() > 10
	})
	c.Unreliable(0.1, 0.05, 2*c.Options().TickInterval)
	c.Restart(f)
	// Crash it once more in the middle of catching up.
	c.Eventually(10*time.Second, "the follower starting to catch up", func() bool {
		return c.Node(f).Metrics().GetTerm() > 0
	})
	c.Crash(f)
	c.Restart(f)
	c.Eventually(20*time.Second, "the follower installing a snapshot and catching up", func() bool {
		m := c.Node(f).Metrics()
		return m.GetSnapshotIndex() > 0 && m.GetAppliedIndex() >= c.Node(c.WaitLeader(5*time.Second)).Metrics().GetCommitIndex()
	})
	c.Heal()
	learner, err := c.AddNode(ctx)
	if err != nil {
		c.Fatalf("add a node: %v", err)
	}
	if m := c.Node(learner).Metrics(); m.GetSnapshotIndex() == 0 {
		c.Fatalf("the new node caught up without a snapshot (first log index of the leader %d)", c.Node(c.WaitLeader(5*time.Second)).Metrics().GetFirstLogIndex())
	}
	for i := 0; i < 20; i++ {
		if v, _ := get(t, ctx, c, learner, fmt.Sprintf("key-%02d", i)); v != fmt.Sprintf("v%d", 40+i) {
			c.Fatalf("new node reads key-%02d=%q, want v%d", i, v, 40+i)
		}
	}
}

// Membership changes under load and during a partition: a node is added and
// promoted, a follower is cut off, the leader removes itself and a new node
// takes its place.
func TestMembershipChangeDuringPartition(t *testing.T) {
	ctx := bound(t, 90*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	l := c.WaitLeader(10 * time.Second)
	load := c.StartLoad(clustertest.LoadOptions{Clients: 3, Keys: 3})
	n4, err := c.AddNode(ctx)
	if err != nil {
		c.Fatalf("add node: %v", err)
	}
	// Cut a follower off: 3 of 4 voters remain, still a quorum.
	cut := otherThan(c, l)[0]
	if cut == n4 {
		cut = otherThan(c, l)[1]
	}
	c.Isolate(cut)
	// Replace the leader: remove it, add node 5.
	if err := c.RemoveNode(ctx, l); err != nil {
		c.Fatalf("remove the leader %d: %v", l, err)
	}
	nl := c.WaitLeader(10 * time.Second)
	if nl == l {
		c.Fatalf("the removed leader still leads")
	}
	c.Heal()
	n5, err := c.AddNode(ctx)
	if err != nil {
		c.Fatalf("add node: %v", err)
	}
	voters, err := c.Voters(ctx)
	if err != nil {
		c.Fatalf("voters: %v", err)
	}
	slices.Sort(voters)
	want := []uint64{1, 2, 3, n4, n5}
	want = slices.DeleteFunc(want, func(id uint64) bool { return id == l })
	slices.Sort(want)
	if !slices.Equal(voters, want) {
		c.Fatalf("voters %v, want %v", voters, want)
	}
	load.Stop()
	c.Check()
}

// Leadership moves to each follower in turn while clients write.
func TestLeaderTransferUnderLoad(t *testing.T) {
	ctx := bound(t, 60*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	c.WaitLeader(10 * time.Second)
	load := c.StartLoad(clustertest.LoadOptions{Clients: 4, Keys: 3})
	for i := 0; i < 3; i++ {
		done := load.Stats().OK
		c.Eventually(20*time.Second, "clients making progress", func() bool { return load.Stats().OK >= done+20 })
		l := c.WaitLeader(10 * time.Second)
		target := otherThan(c, l)[i%2]
		if err := c.TransferLeader(ctx, target); err != nil {
			c.Fatalf("transfer %d -> %d: %v", l, target, err)
		}
		c.Eventually(10*time.Second, fmt.Sprintf("node %d leading", target), func() bool { return c.WaitLeader(5*time.Second) == target })
	}
	if st := load.Stop(); st.OK == 0 {
		c.Fatalf("no operation succeeded during transfers")
	}
	c.Check()
}

// A node cut off for many election timeouts returns without deposing the
// healthy leader: pre-vote keeps its term from growing, check-quorum keeps
// the others from listening to it.
func TestPartitionedNodeReturnsWithoutDisturbing(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	l := c.WaitLeader(10 * time.Second)
	c.Eventually(10*time.Second, "every node following", func() bool { return followsAll(c, l) })
	term := c.Node(l).Metrics().GetTerm()
	f := otherThan(c, l)[0]
	c.Isolate(f)
	c.Consistently(10*c.ElectionTimeout(), "the leader and term while a node is cut off", func() bool {
		m := c.Node(l).Metrics()
		return m.GetRole() == messages.Role_ROLE_LEADER && m.GetTerm() == term
	})
	if ft := c.Node(f).Metrics().GetTerm(); ft != term {
		c.Fatalf("the cut-off node's term grew from %d to %d despite pre-vote", term, ft)
	}
	c.Heal()
	c.Eventually(10*time.Second, "the returning node following the same leader", func() bool { return followsAll(c, l) })
	c.Consistently(5*c.ElectionTimeout(), "the leader and term after the node returned", func() bool {
		m := c.Node(l).Metrics()
		return m.GetRole() == messages.Role_ROLE_LEADER && m.GetTerm() == term
	})
	put(t, ctx, c, l, "k", "v")
}

// A leader cut off with a minority, which still believes it leads, serves no
// linearizable read: the majority has moved on.
func TestMinorityLeaderServesNoLinearizableRead(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 5, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.DisableCheckQuorum = true // the minority leader keeps believing
	}})
	old := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, old, "k", "old")
	others := otherThan(c, old)
	c.Split([]uint64{old, others[0]}, others[1:])
	l := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, l, "k", "new")
	if m := c.Node(old).Metrics(); m.GetRole() != messages.Role_ROLE_LEADER {
		t.Logf("note: the old leader stepped down (role %v)", m.GetRole())
	}
	for _, via := range []uint64{old, others[0]} {
		rctx, cancel := context.WithTimeout(ctx, 5*c.ElectionTimeout())
		v, found, err := c.Get(rctx, via, "k")
		cancel()
		if err == nil && (!found || v != "new") {
			c.Fatalf("node %d in the minority served a stale read k=%q", via, v)
		}
	}
}

// A leader that is paused (a long GC pause, SIGSTOP) and resumes after the
// others elected a new leader must not answer reads from its stale state.
func TestPausedLeaderResumesWithoutStaleReads(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	old := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, old, "k", "old")
	c.Pause(old)
	l := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, l, "k", "new")
	c.Resume(old)
	if v, _ := get(t, ctx, c, old, "k"); v != "new" {
		c.Fatalf("the resumed old leader read k=%q, want new", v)
	}
}

// An unreachable peer shows in the leader's metrics, its in-flight window
// stays bounded while it is away, and replication resumes by itself when it
// returns.
func TestUnreachablePeerInMetrics(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3})
	l := c.WaitLeader(10 * time.Second)
	f := otherThan(c, l)[0]
	peer := func() *messages.PeerMetrics {
		for _, p := range c.Node(l).Metrics().GetPeers() {
			if p.GetNodeId() == f {
				return p
			}
		}
		return nil
	}
	c.Crash(f)
	load := c.StartLoad(clustertest.LoadOptions{Clients: 2, Keys: 2, Via: func(*rand.Rand) uint64 { return l }})
	c.Eventually(10*time.Second, fmt.Sprintf("node %d unreachable in the leader's metrics", f), func() bool {
		p := peer()
		return p != nil && !p.GetReachable()
	})
	c.Eventually(10*time.Second, "writes committing without the peer", func() bool { return load.Stats().OK >= 50 })
	if p := peer(); p.GetInflightEntries() > uint64(actorsDefaultInflight*actorsDefaultAppendEntries) {
		c.Fatalf("%d entries in flight to an unreachable peer", p.GetInflightEntries())
	}
	c.Restart(f)
	c.Eventually(10*time.Second, "the peer reachable and caught up", func() bool {
		p := peer()
		return p != nil && p.GetReachable() && p.GetLag() < 20
	})
	load.Stop()
	_ = ctx
}

const (
	actorsDefaultInflight      = 32
	actorsDefaultAppendEntries = 512
)

// A follower cut off while the others compact their logs installs a
// snapshot over an unreliable network, and through the crash of the leader
// that was sending it: the next leader sends it again.
func TestSnapshotInstallUnreliableLeaderCrash(t *testing.T) {
	ctx := bound(t, 60*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.SnapshotEntries, cfg.SnapshotTrailing = 20, 5
		cfg.SnapshotChunkBytes = 512 // several chunks per snapshot
	}})
	l := c.WaitLeader(10 * time.Second)
	f := otherThan(c, l)[0]
	c.Isolate(f)
	for i := 0; i < 60; i++ {
		put(t, ctx, c, l, fmt.Sprintf("key-%02d", i%20), fmt.Sprintf("v%d", i))
	}
	c.Eventually(10*time.Second, "the leader compacting its log", func() bool {
		return c.Node(l).Metrics().GetFirstLogIndex() > 10
	})
	c.Heal()
	c.Unreliable(0.1, 0.05, 2*c.Options().TickInterval)
	c.Eventually(10*time.Second, "the leader sending a snapshot", func() bool {
		for _, p := range c.Node(l).Metrics().GetPeers() {
			if p.GetNodeId() == f && p.GetMode() == messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT {
				return true
			}
		}
		return c.Node(f).Metrics().GetSnapshotIndex() > 0
	})
	c.Crash(l)
	nl := c.WaitLeader(10 * time.Second)
	put(t, ctx, c, nl, "key-00", "after the crash")
	c.Eventually(20*time.Second, "the follower installing a snapshot and catching up", func() bool {
		m := c.Node(f).Metrics()
		return m.GetSnapshotIndex() > 0 && m.GetAppliedIndex() >= c.Node(nl).Metrics().GetCommitIndex()
	})
	c.Heal()
	if v, _ := get(t, ctx, c, f, "key-00"); v != "after the crash" {
		c.Fatalf("the follower reads key-00=%q, want the write after the crash", v)
	}
	if v, _ := get(t, ctx, c, f, "key-19"); v != "v59" {
		c.Fatalf("the follower reads key-19=%q, want v59", v)
	}
}

// A learner that joins an empty node to a cluster whose log was compacted
// catches up by snapshot.
func TestLearnerJoinsFromScratchBySnapshot(t *testing.T) {
	ctx := bound(t, 40*time.Second)
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Configure: func(_ uint64, cfg *actors.Config) {
		cfg.SnapshotEntries, cfg.SnapshotTrailing = 20, 5
	}})
	l := c.WaitLeader(10 * time.Second)
	for i := 0; i < 40; i++ {
		put(t, ctx, c, l, fmt.Sprintf("key-%02d", i%10), fmt.Sprintf("v%d", i))
	}
	c.Eventually(10*time.Second, "the leader compacting its log", func() bool {
		return c.Node(l).Metrics().GetFirstLogIndex() > 10
	})
	n, err := c.AddNode(ctx)
	if err != nil {
		c.Fatalf("add a node: %v", err)
	}
	if m := c.Node(n).Metrics(); m.GetSnapshotIndex() == 0 {
		c.Fatalf("the new node caught up without a snapshot")
	}
	if v, _ := get(t, ctx, c, n, "key-09"); v != "v39" {
		c.Fatalf("the new node reads key-09=%q, want v39", v)
	}
}

// otherThan returns every node but id.
func otherThan(c *clustertest.Cluster, id uint64) []uint64 {
	return slices.DeleteFunc(c.IDs(), func(x uint64) bool { return x == id })
}

// writeMany sends n writes through via concurrently, each bounded by d, and
// returns when all returned (acknowledged or not).
func writeMany(ctx context.Context, c *clustertest.Cluster, via uint64, prefix string, n int, d time.Duration) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			wctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			_ = c.Put(wctx, via, fmt.Sprintf("k%d", i%4), fmt.Sprintf("%s-%d", prefix, i))
		}()
	}
	wg.Wait()
}

// waitProgress waits, up to d, for a leader to commit something new; a
// round of faults may leave none for a while, which is not a failure.
func waitProgress(c *clustertest.Cluster, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	l, err := c.Leader(ctx)
	if err != nil {
		return
	}
	start := c.Node(l).Metrics().GetCommitIndex()
	for ctx.Err() == nil {
		if c.Node(l).Metrics().GetCommitIndex() > start {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newRand is the scenario's own source of fault choices, from the cluster's
// seed, so that a logged seed repeats the choices.
func newRand(c *clustertest.Cluster) *rand.Rand {
	return rand.New(rand.NewPCG(c.Options().Seed, 0x5eed))
}
