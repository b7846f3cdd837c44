package messages

// Mailbox priorities of the messages that the actors of one node exchange.
// The actors run on a priority mailbox that serves higher values first, so
// that the results of work already under way (storage, replication, apply)
// overtake new client requests queued behind them: a leader under a flood of
// writes still counts acknowledgements, advances its commit index and
// answers clients, instead of queueing more work it cannot finish.
//
// Requests sent with a sender (every client request and every wire request)
// travel inside an envelope that carries no priority, and so take the
// default level, PriorityNormal.
const (
	// PriorityLow is below every request: markers that must run after
	// everything queued before them.
	PriorityLow int8 = 1
	// PriorityNormal is the mailbox's default level.
	PriorityNormal int8 = 4
	// PriorityTimer is for clock ticks, so that elections and heartbeats
	// keep their pace however many requests are waiting.
	PriorityTimer int8 = 5
	// PriorityResult is for the results of work a node asked for.
	PriorityResult int8 = 6
)

// GetPriority implements the priority mailbox's PriorityMessage.
func (*Tick) GetPriority() int8 { return PriorityTimer }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StorageAppendResult) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StorageLoadResult) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StorageEntries) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StoragePurgeResult) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StorageSnapshotChunk) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StorageSnapshotChunkWritten) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*ReplicationReport) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*StreamFailure) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*ApplyResult) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*SnapshotBuilt) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*SnapshotRestored) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage. Replies
// from peers that arrive without an envelope overtake new requests too.
func (*AppendEntriesResponse) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*VoteResponse) GetPriority() int8 { return PriorityResult }

// GetPriority implements the priority mailbox's PriorityMessage.
func (*InstallSnapshotResponse) GetPriority() int8 { return PriorityResult }
