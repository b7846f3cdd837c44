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
// Each simulated Node is a core.Core with the parts a Raftor node has around
// it: a storage part over a simulated Disk (written versus synced, so that a
// crash loses what was not synced), an apply part with a small key-value
// state machine, and for each peer of a leader a replication.Peer and a
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
// Two parts of a real node are modelled rather than run: the protoactor
// actors and the Pebble store. Running the actors needs one actor system per
// node with a Dispatcher whose Schedule appends to a queue the simulator
// steps (and a very large Throughput), an address resolver that routes other
// nodes' PIDs into Network, and timers through the node's clock; running the
// Pebble store needs vfs.NewCrashableMem per node and a CrashClone on crash.
// Node is where both plug in: its mailboxes become actor runs and Disk
// becomes the store.
package sim
