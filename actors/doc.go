// Package actors runs a Raftor node as protoactor actors, and holds the
// public Node API that applications use.
//
// A node is a RaftCore actor (core.Core's decisions), a storage actor (the
// node's store.Store, with a writer goroutine for group commit, shared by
// every group on the store through a SharedWriter), an apply
// actor (the user's store.StateMachine) and, while the node leads, one
// ReplicationState and one ReplicationStream actor per peer (the decisions
// of replication.Peer and replication.Stream). They exchange the protobuf
// messages of package messages and never block a mailbox on I/O or on a
// future: every request is a message and every answer another one.
//
// Start runs a node in an actor system the application owns:
//
//	node, err := actors.Start(system, actors.Config{ClusterID: "orders", NodeID: 1}, sm, st)
//	err = node.Initialize(ctx, &messages.Membership{Voters: []uint64{1, 2, 3}})
//	res, err := node.ClientWrite(ctx, cmd)
//	err = node.EnsureLinearizable(ctx)
//	node.Stop()
//
// Application actors send the requests of messages/client.proto to
// node.PID() instead, and receive the responses as messages; a request to a
// follower is forwarded to the leader, which answers the caller directly.
//
// docs/guide.md walks through every part of the API.
//
// # Design notes
//
//   - Batching: RaftCore carries out the core's Ready once per mailbox
//     batch (a flush message it sends itself), so every write queued in its
//     mailbox goes into one ProposeBatch, one StorageAppend and one
//     notification per peer. The storage writer then shares one fsync
//     among every append waiting; the apply actor applies everything
//     committed in one call.
//   - Priorities: RaftCore runs on a priority mailbox (messages/priority.go):
//     results of storage, replication and apply overtake new client
//     requests, and ticks overtake both, so a flood of writes neither stalls
//     commits nor delays heartbeats.
//   - Stale replies: replication actors belong to one term and are stopped
//     when it ends; RaftCore drops reports of a term it no longer runs, and
//     the core drops results whose term or sequence is not outstanding. A
//     restarted RaftCore loads its state through the storage writer's queue,
//     behind every append of its previous incarnation.
//   - Time: every timer goes through Config.Clock. RaftCore has one tick
//     timer and forwards ticks to its replication actors.
//   - Supervision: a panic in a ReplicationStream restarts that stream
//     (its in-flight requests are failed and retried); a panic in the apply
//     actor restarts it from the state machine's LastApplied; a panic in
//     RaftCore restarts it from storage. Waiters whose requests died are
//     answered UNKNOWN_OUTCOME (writes) or NOT_LEADER (the rest).
//   - Stop answers every waiter, including requests still queued in
//     RaftCore's mailbox (a stopped protoactor actor drops those silently).
package actors
