// Package remote wires protoactor remote between Raftor nodes: node IDs to
// addresses and RaftCore PIDs, TLS, transport limits, and the validation of
// every message that arrives from another node.
//
// The package is being built; it has no API yet.
package remote
