package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// HostConfig configures the Raft groups one member runs.
type HostConfig struct {
	// ClusterID is the Raft cluster ID of every group (Directory.ClusterID).
	ClusterID string
	// NodeID is this member's node ID in every group it hosts. Its groups
	// share Store, whose identity is (ClusterID, NodeID).
	NodeID uint64
	// Address is this member's remote address as the directory lists it.
	// Default: the actor system's address.
	Address string
	// Store holds the logs of every group on this member. The host writes
	// it through one actors.SharedWriter, so the appends of all its groups
	// share batches and fsyncs. The host does not close the store.
	Store store.Store
	// StateMachine returns the state machine of a group this member hosts.
	// The host closes it on Stop when it is an io.Closer.
	StateMachine func(g Group) (store.StateMachine, error)
	// Query answers a GroupQueryRequest against a group's state machine,
	// once the replica confirmed it leads and applied the read index. It
	// runs in the host actor, which serves every group of the member: keep
	// it a local read. Nil refuses queries.
	Query func(g Group, sm store.StateMachine, query []byte) ([]byte, error)
	// Node is the template of every replica's configuration (timers,
	// limits, logger); ClusterID, GroupID, NodeID and Address are set per
	// group. Node.SharedWriter, when set, is the writer of Store that the
	// replicas use (the host does not close it); nil makes the host one of
	// its own. With Node.InlineStorage, each replica keeps a writer of its
	// own instead.
	Node actors.Config
	// Leaders is the member's leader table; NewHost makes one when nil.
	// Clients on this member share it (Host.Leaders).
	Leaders *LeaderTable
}

// Host runs the replicas of many groups on one member of a protoactor
// cluster. Every group is a full Raftor node (RaftCore, storage and apply
// actors) on the shared store, and every group writes through the host's
// one storage writer, so busy groups share fsyncs. The host adds one
// actor, which answers the queries of every group it hosts.
type Host struct {
	cfg    HostConfig
	system *actor.ActorSystem
	pid    *actor.PID
	writer *actors.SharedWriter // nil with Node.InlineStorage
	// ownsWriter is set when the host made the writer and closes it.
	ownsWriter bool
	// pool runs the actors of every group here when HostConfig.Node has no
	// Dispatcher; the host made it and closes it.
	pool *actors.WorkerPool

	mu     sync.Mutex
	groups map[uint64]*hosted
	closed bool
}

type hosted struct {
	group Group
	node  *actors.Node
	sm    store.StateMachine
}

// HostName is the actor name of a member's host actor for cluster ID
// clusterID; clients address queries to it.
func HostName(clusterID string) string { return "raftor/" + clusterID + "/host" }

// NewHost starts the host actor of cfg.ClusterID in system. Groups are
// started with StartGroup.
func NewHost(system *actor.ActorSystem, cfg HostConfig) (*Host, error) {
	switch {
	case system == nil:
		return nil, errors.New("raftor: NewHost needs an actor system")
	case cfg.ClusterID == "":
		return nil, errors.New("raftor: HostConfig.ClusterID is empty")
	case cfg.NodeID == 0:
		return nil, errors.New("raftor: HostConfig.NodeID must not be 0")
	case cfg.Store == nil || cfg.StateMachine == nil:
		return nil, errors.New("raftor: HostConfig needs a Store and a StateMachine function")
	}
	if id := cfg.Store.Identity(); id != nil && (id.GetClusterId() != cfg.ClusterID || id.GetNodeId() != cfg.NodeID) {
		return nil, fmt.Errorf("raftor: the store belongs to cluster %q node %d, not cluster %q node %d",
			id.GetClusterId(), id.GetNodeId(), cfg.ClusterID, cfg.NodeID)
	}
	if cfg.Address == "" {
		cfg.Address = system.Address()
	}
	if cfg.Leaders == nil {
		cfg.Leaders = NewLeaderTable()
	}
	h := &Host{cfg: cfg, system: system, groups: map[uint64]*hosted{}}
	switch {
	case cfg.Node.SharedWriter != nil:
		// actors.Start refuses it for each group if it writes another store.
		h.writer = cfg.Node.SharedWriter
	case !cfg.Node.InlineStorage:
		w, err := actors.NewSharedWriter(cfg.Store, actors.WriterOptions{Logger: cfg.Node.Logger})
		if err != nil {
			return nil, err
		}
		h.writer, h.ownsWriter = w, true
	}
	if cfg.Node.Dispatcher == nil {
		h.pool = actors.NewWorkerPool()
	}
	pid, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &hostActor{h: h} }), HostName(cfg.ClusterID))
	if err != nil {
		if h.ownsWriter {
			_ = h.writer.Close()
		}
		if h.pool != nil {
			h.pool.Close()
		}
		return nil, fmt.Errorf("raftor: spawn host actor: %w", err)
	}
	h.pid = pid
	return h, nil
}

// Leaders is the member's leader table, for the clients on this member.
func (h *Host) Leaders() *LeaderTable { return h.cfg.Leaders }

// PID is the host actor.
func (h *Host) PID() *actor.PID { return h.pid }

// StorageStats counts the work of the member's storage writer over all its
// groups: Batches is the LogStore.Append calls (one fsync each), Appends
// the appends of every group they carried. With Node.InlineStorage (a
// writer per replica) it adds up the replicas' own counters.
func (h *Host) StorageStats() actors.StorageStats {
	if h.writer != nil {
		return h.writer.Stats()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var s actors.StorageStats
	for _, g := range h.groups {
		if g != nil {
			gs := g.node.StorageStats()
			s.Batches += gs.Batches
			s.Appends += gs.Appends
			s.Failed = s.Failed || gs.Failed
		}
	}
	return s
}

// StartGroup starts this member's replica of g. It is an error when g does
// not list this member (by node ID, at this member's address) or already
// runs here. A replica with an empty log waits to be initialized
// (Initialize) or to hear from the group's leader.
func (h *Host) StartGroup(g Group) (*actors.Node, error) {
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("raftor: %w", err)
	}
	self, ok := g.replica(h.cfg.NodeID)
	if !ok {
		return nil, fmt.Errorf("raftor: group %q does not list node %d", g.Name, h.cfg.NodeID)
	}
	if self.Address != h.cfg.Address {
		return nil, fmt.Errorf("raftor: group %q lists node %d at %s, this member is at %s", g.Name, h.cfg.NodeID, self.Address, h.cfg.Address)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, actors.ErrStopped
	}
	if _, dup := h.groups[g.ID]; dup {
		h.mu.Unlock()
		return nil, fmt.Errorf("raftor: group %q (%d) already runs on this member", g.Name, g.ID)
	}
	// Reserve the slot so that a concurrent StartGroup of the same group
	// fails instead of racing for the actor names.
	h.groups[g.ID] = nil
	h.mu.Unlock()

	n, sm, err := h.start(g)
	h.mu.Lock()
	if err == nil && h.closed {
		// Stop ran meanwhile and did not see this replica (its slot was
		// still empty): it must not outlive the host and its writer.
		delete(h.groups, g.ID)
		h.mu.Unlock()
		_ = n.Stop()
		closeSM(sm)
		return nil, actors.ErrStopped
	}
	defer h.mu.Unlock()
	if err != nil {
		delete(h.groups, g.ID)
		return nil, err
	}
	h.groups[g.ID] = &hosted{group: g, node: n, sm: sm}
	h.cfg.Leaders.addLocal(g.ID, n)
	return n, nil
}

func (h *Host) start(g Group) (*actors.Node, store.StateMachine, error) {
	sm, err := h.cfg.StateMachine(g)
	if err != nil {
		return nil, nil, fmt.Errorf("raftor: state machine of group %q: %w", g.Name, err)
	}
	cfg := h.cfg.Node
	cfg.ClusterID, cfg.GroupID, cfg.NodeID, cfg.Address = h.cfg.ClusterID, g.ID, h.cfg.NodeID, h.cfg.Address
	cfg.SharedWriter = h.writer
	if h.pool != nil {
		cfg.Dispatcher = h.pool
	}
	n, err := actors.Start(h.system, cfg, sm, h.cfg.Store)
	if err != nil {
		closeSM(sm)
		return nil, nil, err
	}
	return n, sm, nil
}

// Initialize forms group g with its replicas as voters, through this
// member's replica. Call it once per group, on one member, when the group
// is new; a group that already has a log answers nil. Never call it for a
// group whose replica here lost its disk: that would found a second group
// under the same name.
func (h *Host) Initialize(ctx context.Context, g Group) error {
	n := h.Node(g.ID)
	if n == nil {
		return fmt.Errorf("raftor: group %q does not run on this member", g.Name)
	}
	err := n.Initialize(ctx, g.Membership())
	if errors.Is(err, actors.ErrAlreadyInitialized) {
		return nil
	}
	return err
}

// Node returns this member's replica of group id, nil when none runs.
func (h *Host) Node(id uint64) *actors.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	if g := h.groups[id]; g != nil {
		return g.node
	}
	return nil
}

func (h *Host) hosted(id uint64) *hosted {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[id]
}

// StopGroup stops this member's replica of group id and closes its state
// machine. The group goes on without it while a majority remains.
func (h *Host) StopGroup(id uint64) error {
	h.mu.Lock()
	g := h.groups[id]
	if g != nil {
		delete(h.groups, id)
	}
	h.mu.Unlock()
	if g == nil {
		return fmt.Errorf("raftor: group %d does not run on this member", id)
	}
	h.cfg.Leaders.removeLocal(id)
	err := g.node.Stop()
	closeSM(g.sm)
	return err
}

// Stop stops every replica, the host actor and the storage writer the
// host made. The store stays open.
func (h *Host) Stop() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var ids []uint64
	for id, g := range h.groups {
		if g != nil {
			ids = append(ids, id)
		}
	}
	h.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := h.StopGroup(id); err != nil {
			errs = append(errs, err)
		}
	}
	_ = h.system.Root.StopFuture(h.pid).Wait()
	if h.ownsWriter {
		errs = append(errs, h.writer.Close())
	}
	if h.pool != nil {
		h.pool.Close()
	}
	return errors.Join(errs...)
}

func closeSM(sm store.StateMachine) {
	if c, ok := sm.(io.Closer); ok {
		_ = c.Close()
	}
}

// hostActor answers GroupQueryRequests for the groups of its member: it
// asks the local replica for a read index without forwarding (only the
// leader answers one), waits for it to be applied, then runs the query.
// The read index round does not block the mailbox: the answer re-enters
// the actor as a continuation.
type hostActor struct{ h *Host }

func (a *hostActor) Receive(ctx actor.Context) {
	q, ok := ctx.Message().(*messages.GroupQueryRequest)
	if !ok {
		return
	}
	sender := ctx.Sender()
	reply := func(r *messages.GroupQueryResponse) {
		r.Id = q.GetId()
		if sender != nil {
			ctx.Send(sender, r)
		}
	}
	g := a.h.hosted(q.GetGroupId())
	if g == nil {
		reply(&messages.GroupQueryResponse{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER,
			Message: fmt.Sprintf("group %d has no replica on this member", q.GetGroupId())}})
		return
	}
	if a.h.cfg.Query == nil {
		reply(&messages.GroupQueryResponse{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID,
			Message: "this member answers no queries (HostConfig.Query is nil)"}})
		return
	}
	timeout := time.Duration(q.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	req := &messages.ReadIndexRequest{NoForward: true, WaitApplied: true, TimeoutMs: uint64(timeout / time.Millisecond)}
	// The future outlives the node's own timeout a little, so that the
	// node's TIMEOUT answer, not the future's, is what comes back.
	fut := ctx.RequestFuture(g.node.PID(), req, timeout+time.Second)
	ctx.ReenterAfter(fut, func(res any, err error) {
		if err != nil {
			reply(&messages.GroupQueryResponse{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Message: err.Error()}})
			return
		}
		r, ok := res.(*messages.ReadIndexResponse)
		if !ok {
			reply(&messages.GroupQueryResponse{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED,
				Message: fmt.Sprintf("the replica answered %T", res)}})
			return
		}
		if e := r.GetError(); e.GetCode() != messages.ErrorCode_ERROR_CODE_UNSPECIFIED {
			reply(&messages.GroupQueryResponse{Error: e})
			return
		}
		out, qerr := a.h.cfg.Query(g.group, g.sm, q.GetQuery())
		if qerr != nil {
			reply(&messages.GroupQueryResponse{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: qerr.Error()}})
			return
		}
		reply(&messages.GroupQueryResponse{Result: out, LeaderId: a.h.cfg.NodeID})
	})
}
