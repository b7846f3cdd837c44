package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// Node is one simulated Raftor node: a core.Core with the parts an actor
// node has around it (storage, apply, a replication pair per peer), each a
// mailbox that the simulator runs, over a simulated Disk.
type Node struct {
	id          uint64
	s           *Sim
	disk        *Disk
	core        *core.Core
	up          bool
	incarnation uint64
	pausedUntil time.Duration
	// tickEvery is the node's tick interval; clock skew changes it.
	tickEvery time.Duration
	// touched is set when a step ran any part of the node (or crashed or
	// started it): only touched nodes need checking after the step.
	touched bool
	// crashOnWrite arms a crash for the moment the node next writes to its
	// disk, before the write is synced: the worst moment for a crash.
	crashOnWrite bool

	coreMB, storageMB, applyMB *mailbox
	repl                       *replicator

	sm *kvSM
	// smConf is the configuration as of the state machine's applied index,
	// for the snapshots it builds.
	smConf      *messages.Membership
	smConfIndex uint64
	waiters     map[uint64][]*messages.ApplyWaiter
	// staging holds snapshot bodies being received, by snapshot id.
	staging map[string][]byte
	snapSeq uint64
}

// clientReq is a client request posted to a node's RaftCore mailbox.
type clientReq struct {
	h   core.Handle
	msg proto.Message
}

type tick struct{}

type syncReq struct {
	result proto.Message
}

func newNode(s *Sim, id uint64) *Node {
	n := &Node{
		id: id, s: s,
		disk: NewDisk(&messages.NodeIdentity{
			ClusterId: s.clusterID, GroupId: 1, NodeId: id, Incarnation: s.rng.Uint64(),
		}),
		tickEvery: s.cfg.Tick,
	}
	return n
}

// start boots the node from its disk (a fresh node or a restart).
func (n *Node) start() error {
	n.incarnation++
	n.up = true
	n.touched = true
	n.pausedUntil = 0
	n.coreMB = n.newMailbox("core", 0, 50*time.Microsecond, n.handleCore)
	n.storageMB = n.newMailbox("storage", 100*time.Microsecond, 2*time.Millisecond, n.handleStorage)
	n.applyMB = n.newMailbox("apply", 0, 200*time.Microsecond, n.handleApply)
	n.repl = newReplicator(n)
	n.waiters = map[uint64][]*messages.ApplyWaiter{}
	n.staging = map[string][]byte{}
	n.sm = newKVSM()
	n.smConf, n.smConfIndex = nil, 0
	st := n.disk.State()
	if st.Snapshot != nil {
		data, err := decodeKV(st.SnapshotData)
		if err != nil {
			return fmt.Errorf("n%d: stored snapshot %s: %w", n.id, st.Snapshot.Id, err)
		}
		n.sm.data = data
		n.sm.appliedIndex, n.sm.appliedTerm = st.Snapshot.Index, st.Snapshot.Term
		n.smConf, n.smConfIndex = st.Snapshot.Membership, st.Snapshot.MembershipIndex
	}
	cfg := n.s.coreConfig(n.id)
	cfg.Rand = rand.New(rand.NewPCG(n.s.rng.Uint64(), n.s.rng.Uint64()))
	c, err := core.New(cfg, st.InitialState())
	if err != nil {
		return fmt.Errorf("n%d: core.New on restart: %w", n.id, err)
	}
	n.core = c
	n.s.trace.Add(n.s.q.Now(), n.id, "start (incarnation %d) term=%d commit=%d log=%d..%d",
		n.incarnation, st.HardState.GetTerm(), st.HardState.GetCommit(), st.First, st.LastIndex())
	n.scheduleTick()
	return nil
}

// crash stops the node at once: volatile state and queued messages are
// gone, and the disk keeps only keep of its unsynced writes.
func (n *Node) crash(keep int) {
	if !n.up {
		return
	}
	n.s.trace.Add(n.s.q.Now(), n.id, "CRASH (unsynced writes: %d, surviving %d)", n.disk.Unsynced(), min(keep, n.disk.Unsynced()))
	n.up = false
	n.touched = true
	n.disk.Crash(keep)
	n.coreMB.clear()
	n.storageMB.clear()
	n.applyMB.clear()
	n.repl = nil
	n.core = nil
}

func (n *Node) scheduleTick() {
	inc := n.incarnation
	n.s.q.After(n.tickEvery, func() {
		if !n.up || n.incarnation != inc {
			return
		}
		if n.pausedUntil <= n.s.q.Now() {
			n.coreMB.post(tick{})
			n.repl.tick()
		}
		n.scheduleTick()
	})
}

// handleCore is the RaftCore actor's receive.
func (n *Node) handleCore(msg any) {
	switch m := msg.(type) {
	case tick:
		n.core.Tick()
	case clientReq:
		if err := n.core.Request(m.h, m.msg); err != nil {
			n.s.fail(fmt.Errorf("n%d: core refused a request type: %w", n.id, err))
			return
		}
	case proto.Message:
		if err := n.core.Step(m); err != nil {
			n.s.trace.Add(n.s.q.Now(), n.id, "step refused %s: %v", describeMsg(m), err)
		}
	default:
		n.s.fail(fmt.Errorf("n%d: core mailbox got %T", n.id, msg))
		return
	}
	if n.core.HasReady() {
		n.execute(n.core.Ready())
	}
}

// execute carries out a Ready in the order core documents.
func (n *Node) execute(rd core.Ready) {
	if rd.SoftState != nil {
		n.s.trace.Add(n.s.q.Now(), n.id, "state %s term=%d leader=%d",
			rd.SoftState.Role, rd.SoftState.Term, rd.SoftState.Leader)
	}
	for _, p := range rd.Persist {
		n.persist(p)
	}
	for _, m := range rd.Storage {
		n.storageRequest(m)
	}
	for _, m := range rd.Send {
		n.send(m)
	}
	for _, m := range rd.Replicate {
		n.repl.command(m)
	}
	for _, m := range rd.Apply {
		n.applyMB.post(m)
	}
	for _, r := range rd.Responses {
		n.s.respond(n, r.Handle, r.Msg)
	}
}

// persist writes at once (the write reaches the OS) and answers once the
// storage part has synced: a crash in between loses the write.
func (n *Node) persist(p *messages.StorageAppend) {
	res := &messages.StorageAppendResult{GroupId: p.GroupId, Seq: p.Seq}
	var err error
	if p.Snapshot != nil {
		body, ok := n.staging[p.Snapshot.Id]
		switch {
		case !ok:
			err = fmt.Errorf("snapshot %s was never received", p.Snapshot.Id)
		default:
			err = n.disk.InstallSnapshot(p.Snapshot, body)
			delete(n.staging, p.Snapshot.Id)
		}
	}
	if err == nil {
		err = n.disk.Append(p.HardState, p.Entries)
	}
	if err != nil {
		// Raftor's storage refuses a write that breaks the log's rules; the
		// core must never ask for one.
		n.s.fail(violation("storage contract", "n%d: %v", n.id, err))
		res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: err.Error()}
	}
	n.s.trace.Add(n.s.q.Now(), n.id, "persist seq=%d hs=%v entries=%d snapshot=%v", p.Seq, p.HardState, len(p.Entries), p.Snapshot != nil)
	res.LastIndex = n.disk.State().LastIndex()
	n.storageMB.post(syncReq{result: res})
	if n.crashOnWrite {
		n.crashOnWrite = false
		inc := n.incarnation
		keep := n.s.rng.Between(0, n.disk.Unsynced())
		// Right after this step: whatever the core sent along with the
		// write (a vote, an append acknowledgement) may already be out.
		n.s.q.After(0, func() {
			if n.up && n.incarnation == inc {
				n.s.crashAndRestart(n, keep, n.s.rng)
			}
		})
	}
}

func (n *Node) storageRequest(m proto.Message) {
	switch m := m.(type) {
	case *messages.StoragePurge:
		res := &messages.StoragePurgeResult{GroupId: m.GroupId}
		if err := n.disk.Purge(m.Index); err != nil {
			n.s.fail(violation("storage contract", "n%d: %v", n.id, err))
			res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: err.Error()}
		}
		res.FirstIndex = n.disk.State().First
		n.storageMB.post(syncReq{result: res})
	case *messages.StorageWriteSnapshotChunk:
		res := &messages.StorageSnapshotChunkWritten{GroupId: m.GroupId, Seq: m.Seq, Meta: m.Meta}
		id := m.GetMeta().GetId()
		body := n.staging[id]
		if m.Offset == 0 {
			body = nil
		}
		if m.Offset != uint64(len(body)) {
			res.NextOffset = uint64(len(body))
		} else {
			body = append(body, m.Data...)
			n.staging[id] = body
			res.NextOffset = uint64(len(body))
			if m.Done {
				if uint64(len(body)) != m.Meta.GetSize() || checksum(body) != m.Meta.GetChecksum() {
					res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Message: "snapshot body fails its size or checksum"}
					delete(n.staging, id)
				} else {
					res.Done = true
				}
			}
		}
		n.storageMB.post(syncReq{result: res})
	default:
		n.s.fail(fmt.Errorf("n%d: unknown storage request %T", n.id, m))
	}
}

// handleStorage is the storage actor: writes are made durable with one
// sync for everything written so far (group commit), then answered; reads
// see durable data only.
func (n *Node) handleStorage(msg any) {
	switch req := msg.(type) {
	case syncReq:
		n.disk.Sync()
		n.coreMB.post(req.result)
	case storageRead:
		n.serveRead(req)
	}
}

func (n *Node) send(m proto.Message) {
	h, ok := m.(interface{ GetHeader() *messages.Header })
	if !ok || h.GetHeader() == nil {
		n.s.fail(fmt.Errorf("n%d: core sent %T without a header", n.id, m))
		return
	}
	to := h.GetHeader().GetTo()
	n.s.trace.Add(n.s.q.Now(), n.id, "send  -> n%d %s", to, describeMsg(m))
	n.s.net.Send(n.id, to, m)
}

// deliver takes a wire message off the network.
func (n *Node) deliver(from uint64, msg any) bool {
	if !n.up {
		return false
	}
	n.s.trace.Add(n.s.q.Now(), n.id, "recv  <- n%d %s", from, describeMsg(msg))
	switch m := msg.(type) {
	case *messages.AppendEntriesResponse, *messages.InstallSnapshotResponse, *messages.WireReject:
		// Replies go to the stream that sent the request; one that no
		// stream waits for (a reject of a vote, say) goes to the core.
		if !n.repl.reply(from, m.(proto.Message)) {
			if _, ok := m.(*messages.WireReject); ok {
				n.coreMB.post(msg)
			}
		}
	default:
		n.coreMB.post(msg)
	}
	return true
}

// handleApply is the apply actor.
func (n *Node) handleApply(msg any) {
	switch m := msg.(type) {
	case *messages.ApplyCommitted:
		for _, w := range m.Waiters {
			n.waiters[w.Index] = append(n.waiters[w.Index], w)
		}
		entries := m.Entries
		if len(entries) == 0 || entries[0].Index > n.sm.appliedIndex+1 {
			entries = nil
			st := n.disk.State()
			for idx := n.sm.appliedIndex + 1; idx <= m.CommitIndex; idx++ {
				e := st.Entry(idx)
				if e == nil {
					n.s.fail(violation("apply", "n%d must apply %d but its log holds %d..%d", n.id, idx, st.First, st.LastIndex()))
					return
				}
				entries = append(entries, e)
			}
		}
		for _, e := range entries {
			if e.Index <= n.sm.appliedIndex {
				continue
			}
			if e.Index != n.sm.appliedIndex+1 {
				n.s.fail(violation(PropAppliedMonotonic, "n%d applied %d then was given %d", n.id, n.sm.appliedIndex, e.Index))
				return
			}
			if err := n.s.checker.Applied(n.id, n.core.Status().Term, e); err != nil {
				n.s.fail(err)
				return
			}
			res := n.sm.apply(e)
			if e.Kind == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
				n.smConf, n.smConfIndex = e.Membership, e.Index
			}
			n.answerWaiters(e, res)
		}
		// Progress is reported no further than the core's commit, as the
		// apply actor does: a state machine restored from a newer snapshot
		// than the one asked for is ahead of it.
		done, term := n.sm.appliedIndex, n.sm.appliedTerm
		if done > m.CommitIndex {
			done, term = m.CommitIndex, 0
		}
		n.coreMB.post(&messages.ApplyResult{AppliedIndex: done, AppliedTerm: term})
	case *messages.BuildSnapshot:
		n.buildSnapshot(m)
	case *messages.RestoreSnapshot:
		n.restoreSnapshot(m)
	default:
		n.s.fail(fmt.Errorf("n%d: unknown apply request %T", n.id, msg))
	}
}

func (n *Node) answerWaiters(e *messages.Entry, res *messages.KVResult) {
	ws := n.waiters[e.Index]
	if len(ws) == 0 {
		return
	}
	delete(n.waiters, e.Index)
	for _, w := range ws {
		if w.Term != e.Term {
			n.s.respond(n, core.Handle(w.Handle), &messages.ClientWriteResponse{Error: &messages.Error{
				Code: messages.ErrorCode_ERROR_CODE_ABORTED, Message: "entry replaced"}})
			continue
		}
		var out []byte
		if res != nil {
			out, _ = proto.Marshal(res)
		}
		n.s.respond(n, core.Handle(w.Handle), &messages.ClientWriteResponse{Index: e.Index, Term: e.Term, Result: out})
	}
}

func (n *Node) buildSnapshot(m *messages.BuildSnapshot) {
	st := n.disk.State()
	reply := &messages.SnapshotBuilt{Seq: m.Seq}
	if n.sm.appliedIndex == 0 || (st.Snapshot != nil && n.sm.appliedIndex <= st.Snapshot.Index) {
		reply.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: "nothing applied since the last snapshot"}
		n.coreMB.post(reply)
		return
	}
	n.snapSeq++
	data := n.sm.encode()
	meta := &messages.SnapshotMeta{
		Index: n.sm.appliedIndex, Term: n.sm.appliedTerm,
		Membership: n.smConf, MembershipIndex: n.smConfIndex,
		Id:   fmt.Sprintf("n%d-%d-%d", n.id, n.incarnation, n.snapSeq),
		Size: uint64(len(data)), Checksum: checksum(data),
	}
	if err := n.disk.SaveSnapshot(meta, data); err != nil {
		reply.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: err.Error()}
		n.coreMB.post(reply)
		return
	}
	n.disk.Sync()
	n.s.stats.Snapshots++
	n.s.trace.Add(n.s.q.Now(), n.id, "snapshot built at %d term %d", meta.Index, meta.Term)
	reply.Meta = meta
	n.coreMB.post(reply)
}

func (n *Node) restoreSnapshot(m *messages.RestoreSnapshot) {
	st := n.disk.State()
	reply := &messages.SnapshotRestored{Seq: m.Seq, Meta: m.Meta}
	if n.sm.appliedIndex >= m.GetMeta().GetIndex() {
		// As the apply actor does: a snapshot the state machine has passed
		// (adopted late) restores nothing; rolling back would lose entries.
		n.coreMB.post(reply)
		return
	}
	// The disk keeps the latest snapshot only. One at least as new as the
	// one asked for holds everything it does (committed entries only), so
	// the apply actor restores from it when the asked one was replaced.
	if st.Snapshot == nil || st.Snapshot.Id != m.GetMeta().GetId() &&
		(st.Snapshot.Index < m.GetMeta().GetIndex() || st.Snapshot.Term < m.GetMeta().GetTerm()) {
		reply.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: "snapshot is not the stored one"}
		n.coreMB.post(reply)
		return
	}
	data, err := decodeKV(st.SnapshotData)
	if err != nil {
		reply.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Message: err.Error()}
		n.coreMB.post(reply)
		return
	}
	if st.Snapshot.Index < n.sm.appliedIndex {
		n.s.fail(violation(PropAppliedMonotonic, "n%d asked to restore snapshot at %d after applying %d", n.id, st.Snapshot.Index, n.sm.appliedIndex))
		return
	}
	n.sm.data = data
	n.sm.appliedIndex, n.sm.appliedTerm = st.Snapshot.Index, st.Snapshot.Term
	n.smConf, n.smConfIndex = st.Snapshot.Membership, st.Snapshot.MembershipIndex
	for idx := range n.waiters {
		if idx <= st.Snapshot.Index {
			// Their entries are inside the snapshot: applied somewhere, but
			// not here; the client cannot know the result.
			delete(n.waiters, idx)
		}
	}
	n.s.stats.SnapshotInstalls++
	n.s.trace.Add(n.s.q.Now(), n.id, "snapshot restored at %d term %d", st.Snapshot.Index, st.Snapshot.Term)
	n.coreMB.post(reply)
}

// view is what the checker sees of the node.
func (n *Node) view() NodeView {
	v := NodeView{ID: n.id, Incarnation: n.incarnation, Up: n.up, Disk: n.disk}
	if n.up && n.core != nil {
		st := n.core.Status()
		v.Term, v.Role, v.Commit = st.Term, st.Role, st.Commit
		v.Applied = n.sm.appliedIndex
	}
	return v
}

// membership returns the node's latest configuration.
func (n *Node) membership() *messages.Membership {
	if !n.up || n.core == nil {
		return nil
	}
	return n.core.Status().Membership
}

func voters(m *messages.Membership) []uint64 {
	out := append(slices.Clone(m.GetVoters()), m.GetVotersOutgoing()...)
	slices.Sort(out)
	return slices.Compact(out)
}
