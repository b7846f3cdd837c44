// Package cluster runs Raft groups inside a protoactor cluster and gives
// application actors one way to reach any of them by name.
//
// A Raft replica is never a cluster grain: grain placement may put two
// replicas of a group on one member, moves them when the topology changes
// and retries calls, and Raft accepts none of that. Replicas here are
// fixed, named RaftCore actors (actors.CoreName) on the members a
// Directory lists, addressed by plain remote PIDs. On top of them:
//
//   - Host runs the replicas of many groups on one member, all on one
//     store.Store (one Pebble database), and answers linearizable queries
//     for the groups it hosts.
//   - Directory names the groups and where their replicas live;
//     ReplicasFromMembers derives a group's replicas from the cluster's
//     members for users who want placement to follow the cluster.
//   - LeaderTable is a member's view of who leads each group, read from
//     the metrics of local replicas and corrected by not-leader hints.
//   - Client (an actor, with a Go API in GroupClient) sends a write to the
//     group's leader, follows hints, and retries a write under the same
//     RequestID (client ID, sequence), so a state machine that deduplicates
//     (store/kvsm) applies it once however often it was sent.
//   - Kind exposes the client as a stateless cluster kind, so that any
//     member reaches any group through protoactor's cluster API.
//
// docs/guide.md ("Raft groups in a protoactor cluster") walks through it.
package cluster
