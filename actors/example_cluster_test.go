package actors_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// startNode starts node id of cluster "orders" in system.
func startNode(system *actor.ActorSystem, dir string, id uint64) (*actors.Node, func(), error) {
	quiet := slog.New(slog.DiscardHandler)
	st, err := store.NewMemStore(store.Options{ClusterID: "orders", NodeID: id})
	if err != nil {
		return nil, nil, err
	}
	sm, err := kvsm.Open(filepath.Join(dir, fmt.Sprint(id)), kvsm.Options{Logger: quiet})
	if err != nil {
		return nil, nil, err
	}
	node, err := actors.Start(system, actors.Config{ClusterID: "orders", NodeID: id, TickInterval: 20 * time.Millisecond}, sm, st)
	if err != nil {
		sm.Close()
		return nil, nil, err
	}
	return node, func() { node.Stop(); sm.Close() }, nil
}

// leaderOf polls the nodes' metrics until they agree on a leader. (Right
// after an election a follower may not know the leader yet, and answers
// NOT_LEADER without a hint instead of forwarding.)
func leaderOf(ctx context.Context, nodes map[uint64]*actors.Node) (*actors.Node, error) {
	for ctx.Err() == nil {
		id, _ := nodes[1].Leader()
		agreed := id != 0 && nodes[id] != nil && nodes[id].IsLeader()
		for _, n := range nodes {
			if l, _ := n.Leader(); l != id {
				agreed = false
			}
		}
		if agreed {
			return nodes[id], nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, ctx.Err()
}

// Membership and leadership, from Go: three voters form a cluster, a
// fourth node joins as a learner and is promoted, leadership moves to it,
// and a snapshot is taken.
func Example_cluster() {
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer system.Shutdown()
	dir, _ := os.MkdirTemp("", "raftor-example")
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nodes := map[uint64]*actors.Node{}
	for id := uint64(1); id <= 4; id++ {
		n, stop, err := startNode(system, dir, id)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer stop()
		nodes[id] = n
	}
	// Nodes 1-3 found the cluster; node 4 waits, empty, until it is added.
	if err := nodes[1].Initialize(ctx, &messages.Membership{Voters: []uint64{1, 2, 3}}); err != nil {
		fmt.Println(err)
		return
	}
	leader, err := leaderOf(ctx, map[uint64]*actors.Node{1: nodes[1], 2: nodes[2], 3: nodes[3]})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Any node takes writes: a follower forwards them to the leader.
	if _, err := nodes[2].ClientWriteCommand(ctx, kvsm.Put([]byte("a"), []byte("1"))); err != nil {
		fmt.Println(err)
		return
	}

	// A new node catches up as a learner, then becomes a voter.
	err = leader.AddLearner(ctx, 4, "")
	fmt.Println("learner added:", err == nil)
	err = leader.ChangeMembership(ctx, []uint64{1, 2, 3, 4})
	fmt.Println("promoted:", err == nil, slices.Contains(leader.Metrics().GetMembership().GetVoters(), 4))

	// Leadership moves to node 4.
	err = leader.TransferLeader(ctx, 4)
	fmt.Println("transferred:", err == nil)
	for !nodes[4].IsLeader() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}

	// The old leader refuses writes it is told not to forward, naming the
	// new leader.
	_, err = leader.Write(ctx, &messages.ClientWriteRequest{Data: []byte("x"), NoForward: true})
	var e *actors.Error
	fmt.Println("not leader:", errors.Is(err, actors.ErrNotLeader), errors.As(err, &e) && e.LeaderID == 4)

	// A snapshot of the state machine, taken once the new leader applied
	// what it committed (right after an election it may not have yet).
	if err := nodes[4].EnsureLinearizable(ctx); err != nil {
		fmt.Println(err)
		return
	}
	meta, err := nodes[4].TriggerSnapshot(ctx)
	fmt.Println("snapshot:", err == nil && meta.GetIndex() > 0)

	// Metrics: role, term, commit and applied indexes, per-peer progress.
	m := nodes[4].Metrics()
	fmt.Println("peers tracked by the leader:", len(m.GetPeers()))
	// Output:
	// learner added: true
	// promoted: true true
	// transferred: true
	// not leader: true true
	// snapshot: true
	// peers tracked by the leader: 3
}
