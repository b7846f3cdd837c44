// Package sim is Raftor's deterministic cluster simulator.
//
// A simulation runs a cluster of 1 to 7 nodes on one goroutine, in
// simulated time, with every choice (message delays, losses, duplicates,
// partitions, crashes, pauses, clock skew, the client workload, and the
// order in which the parts inside a node get to run) drawn from one seeded
// PCG generator. The same seed gives the same run, byte for byte: nothing in
// the simulated path reads the wall clock, starts a goroutine, or iterates
// over a map.
//
// In the core mode each simulated Node is a core.Core with the parts a
// Raftor node has around it: a storage part over a simulated Disk (written
// versus synced, so that a crash loses what was not synced), an apply part
// with a small key-value state machine, and for each peer of a leader a replication.Peer and a
// replication.Stream. Every part is a mailbox the simulator runs, the way
// protoactor runs an actor's mailbox on a dispatcher.
//
// After every step the Checker verifies Raft's safety properties over the
// nodes the step touched (election safety, leader append-only, log
// matching, leader completeness, state machine safety, monotonic commit and
// applied indexes, no acknowledged write lost). At the end of a run the
// client history is checked for linearizability (cluster/history) and the
// cluster must make progress within a bound of simulated time once faults
// stop.
//
// A failing run reports its seed and the command that replays it:
//
//	RAFTOR_SIM_SEED=<seed> go test ./cluster/sim -run TestSim -v
//
// With RAFTOR_SIM_TRACE=1 it also prints the last events (messages, state
// changes, faults) that led to the failure. RAFTOR_SIM_SEEDS=N runs N seeds.
// docs/testing.md describes the faults, the workload and the checks.
//
// # Two modes
//
// The core mode (Run, TestSim) models the actors: each simulated Node is a
// core.Core with the parts a Raftor node has around it, as mailboxes the
// simulator runs over a simulated Disk. It is fast (a few milliseconds a
// seed), reaches every interleaving of the parts of a node, and models a
// disk whose unsynced writes a crash loses.
//
// The actor mode (RunActors, TestActorSim) runs the real thing: each node is
// an actors.Node (RaftCore, the storage and apply actors, a
// ReplicationState and ReplicationStream per peer of a leader) started with
// actors.Start in an actor system of its own, over a store.MemStore and a
// key-value store.StateMachine. What makes it deterministic:
//
//   - the node's actors.Config.Dispatcher turns every mailbox run into an
//     event of the simulator's queue a seed-chosen moment away (and its
//     Throughput is unbounded, so a run never yields the goroutine): the
//     seed decides which runnable mailbox goes next;
//   - its actors.Config.Clock reads simulated time and fires AfterFunc
//     timers as queue events (clock skew changes its rate, a clock jump its
//     reading, firing the timers that fall due at once);
//   - InlineStorage runs the storage writer inside the storage actor's runs;
//   - the actor system's address is the node's name ("n2"), and an address
//     resolver sends every message for another node (requests, and the
//     replies RaftCore sends to the sender PID of a request) through the
//     simulated Network as bytes with the PIDs by value, as protoactor
//     remote would: a message that is not protobuf fails the run;
//   - clients are actors of one more actor system that send each attempt
//     with ctx.Request from a fresh actor, to any node, so followers forward
//     them; no future, no goroutine, no wall clock is involved;
//   - the actors walk maps in sorted order where they send while walking.
//
// A crash abandons the node's actor system (its queued runs and timers are
// dropped), crashes the MemStore (which keeps every write that returned:
// a crash loses the writes still queued in the storage actor's mailbox) and
// starts a new actor system and node on the reopened store; the state
// machine is durable as of each Apply, as store/kvsm with syncs is. The
// checker reads each node's log back from its store after every write
// (storeLog), its role and term from Node.Metrics, and its state machine
// directly.
//
// Replay a failing seed of the actor mode with
//
//	RAFTOR_SIM_SEED=<seed> go test ./cluster/sim -run '^TestActorSim$' -v
package sim
