package core

import (
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// Handle names whoever waits for the answer to a client request. It is
// opaque to the core: the actor layer maps it to a PID, a future or a
// channel. The core never reuses or interprets it.
type Handle uint64

// Response is the answer to the client request made with Handle. Msg is one
// of *messages.ClientWriteResponse, *messages.ReadIndexResponse,
// *messages.InitializeResponse, *messages.MembershipChangeResponse,
// *messages.TransferLeaderResponse or *messages.TriggerSnapshotResponse.
//
// Successful writes are not answered here: the apply actor answers them with
// the state machine's result, using the waiters of ApplyCommitted.
type Response struct {
	Handle Handle
	Msg    proto.Message
}

// SoftState is the volatile part of a node's state that observers care
// about. Ready carries it only when it changed.
type SoftState struct {
	Role   messages.Role
	Term   uint64
	Leader uint64
}

// Ready is everything the core asks its caller to do. The caller executes the
// lists in this order and may run them in parallel where noted:
//
//   - Persist: hand to the storage actor, in order. Each is answered by a
//     StorageAppendResult with the same Seq, stepped back into the core. The
//     core never emits anything that depends on an unpersisted append
//     before that result arrives (wire replies, client answers, applies).
//   - Storage: other storage requests, in order (*messages.StoragePurge,
//     *messages.StorageWriteSnapshotChunk).
//   - Send: wire messages; Header.To names the receiving node. They may be
//     sent in parallel with Persist: anything in Send is already safe.
//   - Replicate: commands for the leader's replication actors, in order:
//     *messages.ReplicationStart (spawn a ReplicationState for Peer in Term),
//     *messages.ReplicationStop (stop Peer of Term, or all of Term when Peer
//     is 0) and *messages.ReplicationNotify (broadcast to every running
//     ReplicationState of its Term). They may run in parallel with Persist
//     (the leader's fsync overlaps sending; it counts itself toward a quorum
//     only up to its durable index).
//   - Apply: requests for the apply actor, in order: *messages.ApplyCommitted,
//     *messages.BuildSnapshot, *messages.RestoreSnapshot.
//   - Responses: answers to client requests.
//   - SoftState: set when role, term or leader changed.
type Ready struct {
	Persist   []*messages.StorageAppend
	Storage   []proto.Message
	Send      []proto.Message
	Replicate []proto.Message
	Apply     []proto.Message
	Responses []Response
	SoftState *SoftState
}

// IsEmpty reports whether there is nothing to do.
func (rd *Ready) IsEmpty() bool {
	return len(rd.Persist) == 0 && len(rd.Storage) == 0 && len(rd.Send) == 0 &&
		len(rd.Replicate) == 0 && len(rd.Apply) == 0 && len(rd.Responses) == 0 &&
		rd.SoftState == nil
}

// Ready returns what accumulated since the last call and clears it.
func (c *Core) Ready() Ready {
	rd := c.rd
	c.rd = Ready{}
	return rd
}

// HasReady reports whether Ready would return anything.
func (c *Core) HasReady() bool { return !c.rd.IsEmpty() }
