// Package clustertest runs real Raftor clusters inside one test process and
// injects the faults that real clusters meet, for Raftor's own tests and for
// users who test their state machines on Raftor.
//
// Each node runs in its own protoactor actor system, talks to the others
// over protoactor remote on loopback, and keeps its log (store.PebbleStore)
// and its state machine (store/kvsm by default) on its own in-memory,
// crashable Pebble file system (or, with Options.Dir, on the real disk):
//
//	c := clustertest.New(t, clustertest.Options{Nodes: 3})
//	leader := c.WaitLeader(5 * time.Second)
//	err := c.Put(ctx, leader, "x", "1")          // recorded in the client history
//	v, ok, err := c.Get(ctx, 2, "x")            // linearizable read through node 2
//	c.Isolate(leader)                           // cut it off, both ways
//	c.Crash(2); c.Restart(2)                    // lose unsynced writes, come back
//	load := c.StartLoad(clustertest.LoadOptions{Clients: 4})
//	...
//	load.Stop()
//	c.Check()                                   // converged, safe, linearizable
//
// Faults:
//   - the network (Cut, Disconnect, Isolate, Split, Unreliable, Heal) is a
//     filter on every node's inbound messages (remote.Config.Inbound):
//     cutting A->B is B dropping what arrives from A's address; an
//     unreliable network drops, duplicates and delays (and so reorders) a
//     share of Raftor's messages, drawn from Options.Seed;
//   - Crash kills a node's actors and connections at once and keeps only
//     what its disk had synced (Pebble's vfs.MemFS CrashClone); Restart
//     brings it back on that disk and its old address; Stop is a clean stop;
//   - Pause freezes a node's mailboxes and timers (its dispatcher and clock
//     are the harness's) while messages keep queueing, and Resume lets it
//     run on what queued;
//   - AddNode, AddLearner, ChangeVoters, RemoveNode and TransferLeader change
//     the cluster through its leader.
//
// What is checked: every entry a node applies is compared with what any
// other node applied at that index (state machine safety), every
// acknowledged write must be the entry applied at its index, and every
// client operation goes into a history (cluster/history) that Check, after
// healing the cluster and reading every key, verifies with porcupine. When
// a test fails, the harness logs each node's metrics and the network, and
// writes the history as porcupine's HTML view to RAFTOR_HISTORY_DIR (or the
// temporary directory), printing its path.
//
// The pinned protoactor's remote writes gRPC's global logger when it
// starts, which the race detector reports as soon as two remotes run in one
// process: tests that start a cluster carry `//go:build !race`.
package clustertest
