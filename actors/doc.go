// Package actors runs Raftor's decision code (core/, replication/) and its
// storage (store/) as protoactor actors: RaftCore, one ReplicationState and
// one ReplicationStream per peer, the storage actor and the apply actor. It
// also holds the public Node API that applications use.
//
// The package is being built; it has no API yet.
package actors
