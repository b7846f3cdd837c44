package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Config configures one node of one Raft group. Only ClusterID and NodeID
// are required; every other zero value takes the default in its comment.
type Config struct {
	// ClusterID names the cluster; every wire message carries it and a node
	// drops messages of another cluster.
	ClusterID string
	// GroupID names the Raft group within the cluster (several groups may
	// share a store). Default 1.
	GroupID uint64
	// NodeID is this node's ID within the group; it must not be 0.
	NodeID uint64
	// Address is this node's remote address ("host:port"), used in leader
	// hints. Empty for nodes reached in-process only.
	Address string

	// TickInterval is RaftCore's logical clock period. Default 100ms.
	TickInterval time.Duration
	// ElectionTicks is the minimum election timeout in ticks (each timeout
	// is drawn from [ElectionTicks, 2*ElectionTicks)). Default 10, so 1s
	// with the default TickInterval.
	ElectionTicks int
	// HeartbeatTicks is the leader's heartbeat period in ticks; it must be
	// lower than ElectionTicks. Default 1.
	HeartbeatTicks int
	// DisablePreVote and DisableCheckQuorum turn off pre-vote and
	// check-quorum, which are on by default: without them a partitioned
	// node that comes back deposes a healthy leader.
	DisablePreVote     bool
	DisableCheckQuorum bool
	// LeaseRead answers linearizable reads from the leader's lease instead
	// of a heartbeat round. It relies on bounded clock drift.
	LeaseRead bool

	// MaxPendingWrites bounds the client writes a node holds (queued,
	// uncommitted or unapplied); beyond it writes fail with OVERLOADED
	// instead of growing memory. Default 10000.
	MaxPendingWrites int
	// MaxEntryBytes bounds one command; bigger writes fail with TOO_LARGE.
	// Default 1 MiB.
	MaxEntryBytes int
	// MaxAppendEntries and MaxAppendBytes bound one AppendEntries request.
	// Defaults 512 and 4 MiB.
	MaxAppendEntries int
	MaxAppendBytes   uint64
	// MaxInflightAppends bounds the appends a leader sends to one peer
	// before it waits for answers. Default 32.
	MaxInflightAppends int
	// ReplicationTimeout is how long a leader waits for the answer to an
	// append before it sends again (remote delivery is at most once).
	// Default 5 ticks.
	ReplicationTimeout time.Duration
	// SnapshotChunkBytes is the size of one InstallSnapshot chunk. Default
	// 1 MiB.
	SnapshotChunkBytes uint64
	// SnapshotEntries triggers a snapshot once this many entries were
	// applied since the last one; 0 disables automatic snapshots.
	// SnapshotTrailing entries stay in the log after it. Default 1024.
	SnapshotEntries  uint64
	SnapshotTrailing uint64
	// SnapshotBytes triggers a snapshot once the entries applied since the
	// last one add up to this many bytes (their encoded size), whichever of
	// SnapshotEntries and SnapshotBytes comes first; 0 disables it. Set it
	// when entries are large: it bounds the log's size on disk, where
	// SnapshotEntries bounds its length. The count restarts at zero when
	// the node restarts.
	SnapshotBytes uint64

	// RequestTimeout bounds a request that has no deadline of its own.
	// Default 10s.
	RequestTimeout time.Duration
	// MaxForwardHops bounds how often a request is forwarded between
	// nodes looking for the leader. Default 3.
	MaxForwardHops int

	// Clock is where every timer comes from. Default SystemClock.
	Clock Clock
	// Peers finds the RaftCore PID of another node. Default: the PID named
	// CoreName(...) at the node's address, or in this actor system when
	// the address is empty.
	Peers PeerResolver
	// Dispatcher runs the node's actors. Default: a pool of worker
	// goroutines of the node's own, which reuses a worker (and its grown
	// stack) for the next mailbox run where protoactor's default dispatcher
	// starts a goroutine per run. A simulator hands in a deterministic one.
	Dispatcher actor.Dispatcher
	// InlineStorage runs the storage actor's writes inside its own mailbox
	// runs instead of on a writer goroutine: appends queued in its mailbox
	// still share one Append, but reads wait behind writes. With it and a
	// deterministic Dispatcher and Clock, a node starts no goroutine of its
	// own (for simulators).
	InlineStorage bool
	// SharedWriter is the storage writer of the node's store when several
	// groups' nodes share that store: their appends then share batches and
	// fsyncs (see SharedWriter). It must write the store handed to Start.
	// Nil gives the node a writer of its own. Not with InlineStorage.
	SharedWriter *SharedWriter
	// Logger receives the node's log lines; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.GroupID == 0 {
		c.GroupID = 1
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.MaxPendingWrites == 0 {
		c.MaxPendingWrites = 10000
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = 1 << 20
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 512
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = 4 << 20
	}
	if c.MaxInflightAppends == 0 {
		c.MaxInflightAppends = 32
	}
	if c.ReplicationTimeout == 0 {
		c.ReplicationTimeout = 5 * c.TickInterval
	}
	if c.SnapshotChunkBytes == 0 {
		c.SnapshotChunkBytes = 1 << 20
	}
	if c.SnapshotTrailing == 0 {
		c.SnapshotTrailing = 1024
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxForwardHops == 0 {
		c.MaxForwardHops = 3
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every configuration error at once, with the defaults
// applied, so a caller fixes them in one go.
func (c Config) Validate() error {
	d := c.withDefaults()
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if d.ClusterID == "" {
		bad("ClusterID must not be empty")
	}
	if strings.ContainsAny(d.ClusterID, "/ ") {
		bad("ClusterID %q must not contain '/' or spaces (it is part of actor names)", d.ClusterID)
	}
	if d.NodeID == 0 {
		bad("NodeID must not be 0")
	}
	if d.TickInterval < time.Millisecond {
		bad("TickInterval %v must be at least 1ms", d.TickInterval)
	}
	if d.ElectionTicks < 2 {
		bad("ElectionTicks %d must be at least 2", d.ElectionTicks)
	}
	if d.HeartbeatTicks < 1 || d.HeartbeatTicks >= d.ElectionTicks {
		bad("HeartbeatTicks %d must be at least 1 and lower than ElectionTicks %d", d.HeartbeatTicks, d.ElectionTicks)
	}
	if d.MaxPendingWrites < 0 || d.MaxEntryBytes < 0 || d.MaxAppendEntries < 0 || d.MaxInflightAppends < 0 {
		bad("limits must not be negative")
	}
	if d.ReplicationTimeout < d.TickInterval {
		bad("ReplicationTimeout %v must be at least one TickInterval %v", d.ReplicationTimeout, d.TickInterval)
	}
	if d.MaxEntryBytes > 0 && uint64(d.MaxEntryBytes) > d.MaxAppendBytes {
		bad("MaxEntryBytes %d must not exceed MaxAppendBytes %d", d.MaxEntryBytes, d.MaxAppendBytes)
	}
	if d.RequestTimeout < 0 {
		bad("RequestTimeout must not be negative")
	}
	if d.InlineStorage && d.SharedWriter != nil {
		bad("InlineStorage and SharedWriter exclude each other (a shared writer runs on its own goroutine)")
	}
	if d.LeaseRead && d.DisableCheckQuorum {
		bad("LeaseRead requires check-quorum (DisableCheckQuorum is set)")
	}
	if len(errs) > 0 {
		return errors.New("raftor: invalid config: " + strings.Join(errs, "; "))
	}
	return nil
}

// electionTimeout is the minimum election timeout as a duration.
func (c Config) electionTimeout() time.Duration {
	return time.Duration(c.ElectionTicks) * c.TickInterval
}

// CoreName is the actor name of a node's RaftCore in its actor system. A
// PeerResolver that builds remote PIDs uses it.
func CoreName(clusterID string, groupID, nodeID uint64) string {
	return fmt.Sprintf("raftor/%s/%d/%d/core", clusterID, groupID, nodeID)
}

func actorName(clusterID string, groupID, nodeID uint64, part string) string {
	return fmt.Sprintf("raftor/%s/%d/%d/%s", clusterID, groupID, nodeID, part)
}

// PeerResolver finds the RaftCore actor of another node of the group.
type PeerResolver interface {
	// PeerPID returns the PID that wire messages for nodeID go to. address
	// is the node's address from the membership (may be empty).
	PeerPID(nodeID uint64, address string) *actor.PID
}

// PeerResolverFunc adapts a function to PeerResolver.
type PeerResolverFunc func(nodeID uint64, address string) *actor.PID

// PeerPID calls f.
func (f PeerResolverFunc) PeerPID(nodeID uint64, address string) *actor.PID {
	return f(nodeID, address)
}

// namedPeers is the default resolver: the peer's RaftCore by its
// well-known name, at its address or, when that is empty, in the local
// actor system.
type namedPeers struct {
	system    *actor.ActorSystem
	clusterID string
	groupID   uint64
}

func (p namedPeers) PeerPID(nodeID uint64, address string) *actor.PID {
	if address == "" {
		address = p.system.Address()
	}
	return actor.NewPID(address, CoreName(p.clusterID, p.groupID, nodeID))
}
