package coretest

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
)

func newRand(seed, id uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, id)) }

// Node is one simulated node.
type Node struct {
	ID   uint64
	Core *core.Core
	// Down makes the network drop everything addressed to the node.
	Down bool
	// HoldPersist keeps appends unsynced until Sync, so that Crash loses
	// them.
	HoldPersist bool
	// Responses collects the answers to client requests (from the core and
	// from the apply step), oldest first.
	Responses []core.Response
	// StepErrors counts the messages the core refused.
	StepErrors int

	net        *Network
	store      *store
	unsynced   []*messages.StorageAppend
	peers      map[uint64]*peerPair
	sm         *stateMachine
	lastCommit uint64
	incoming   map[string][]byte
	handles    uint64
}

type peerPair struct {
	term   uint64
	peer   *replication.Peer
	stream *replication.Stream
}

// Status is shorthand for n.Core.Status().
func (n *Node) Status() core.Status { return n.Core.Status() }

// Applied returns the entries the node's state machine applied, in order.
func (n *Node) Applied() []*messages.Entry { return slices.Clone(n.sm.entries) }

// AppliedData returns the data of the NORMAL entries applied, as strings.
func (n *Node) AppliedData() []string {
	var out []string
	for _, e := range n.sm.entries {
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL {
			out = append(out, string(e.GetData()))
		}
	}
	return out
}

// DurableLog returns the entries on the node's disk.
func (n *Node) DurableLog() []*messages.Entry { return slices.Clone(n.store.ents) }

// DurableHardState returns the hard state on the node's disk.
func (n *Node) DurableHardState() *messages.HardState {
	return proto.Clone(n.store.hs).(*messages.HardState)
}

// Unsynced returns the appends not yet durable (with HoldPersist).
func (n *Node) Unsynced() []*messages.StorageAppend { return slices.Clone(n.unsynced) }

// NewHandle returns a fresh client handle.
func (n *Node) NewHandle() core.Handle {
	n.handles++
	return core.Handle(n.handles)
}

// Propose proposes data on the node and drains; it returns the handle.
func (n *Node) Propose(data string) core.Handle {
	h := n.NewHandle()
	n.Core.Propose(h, &messages.ClientWriteRequest{Data: []byte(data)})
	n.drain()
	return h
}

// Request sends a client request to the node and drains; it returns the
// handle.
func (n *Node) Request(m proto.Message) core.Handle {
	h := n.NewHandle()
	if err := n.Core.Request(h, m); err != nil {
		n.net.tb.Fatalf("coretest: request: %v", err)
	}
	n.drain()
	return h
}

// Response returns the answer for h, or nil.
func (n *Node) Response(h core.Handle) proto.Message {
	for _, r := range n.Responses {
		if r.Handle == h {
			return r.Msg
		}
	}
	return nil
}

// Step steps a message into the core directly and drains.
func (n *Node) Step(m proto.Message) error {
	err := n.Core.Step(m)
	n.drain()
	return err
}

// Sync makes every held append durable.
func (n *Node) Sync() {
	for len(n.unsynced) > 0 {
		ap := n.unsynced[0]
		n.unsynced = n.unsynced[1:]
		n.store.apply(n.net.tb, ap)
		if err := n.Core.Step(&messages.StorageAppendResult{GroupId: 1, Seq: ap.GetSeq(), LastIndex: n.store.last()}); err != nil {
			n.net.tb.Fatalf("coretest: node %d: append result: %v", n.ID, err)
		}
		n.drain()
	}
}

func (n *Node) peerIDs() []uint64 {
	ids := make([]uint64, 0, len(n.peers))
	for id := range n.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (n *Node) receive(e Envelope) {
	switch m := e.Msg.(type) {
	case *messages.AppendEntriesResponse, *messages.InstallSnapshotResponse, *messages.WireReject:
		if pp := n.peers[e.From]; pp != nil {
			if err := pp.stream.HandleResponse(m); err != nil {
				n.StepErrors++
			}
			n.drain()
			return
		}
	}
	if err := n.Core.Step(e.Msg); err != nil {
		n.StepErrors++
	}
	n.drain()
}

// drain executes everything the node's parts asked for until they are all
// quiet. Storage and apply are synchronous unless HoldPersist is set.
func (n *Node) drain() {
	tb := n.net.tb
	for k := 0; ; k++ {
		if k > 100000 {
			tb.Fatalf("coretest: node %d does not settle", n.ID)
		}
		progress := false
		if n.Core.HasReady() {
			progress = true
			n.handleReady(n.Core.Ready())
		}
		for _, id := range n.peerIDs() {
			pp := n.peers[id]
			if pp == nil {
				continue
			}
			if out := pp.peer.Output(); len(out.Stream) > 0 || out.Report != nil {
				progress = true
				n.handlePeerOutput(pp, out)
			}
			if out := pp.stream.Output(); len(out.Send)+len(out.Storage)+len(out.ToPeer) > 0 {
				progress = true
				n.handleStreamOutput(pp, out)
			}
		}
		if !progress && len(n.unsynced) > 0 && !n.HoldPersist {
			n.Sync()
			continue
		}
		if !progress {
			return
		}
	}
}

func (n *Node) handleReady(rd core.Ready) {
	tb := n.net.tb
	if ss := rd.SoftState; ss != nil && n.net.Trace != nil {
		n.net.Trace(fmt.Sprintf("node %d: %v term %d leader %d", n.ID, ss.Role, ss.Term, ss.Leader))
	}
	n.unsynced = append(n.unsynced, rd.Persist...)
	for _, m := range rd.Storage {
		switch s := m.(type) {
		case *messages.StoragePurge:
			n.store.purge(s.GetIndex())
			_ = n.Core.Step(&messages.StoragePurgeResult{GroupId: 1, FirstIndex: n.store.first()})
		case *messages.StorageWriteSnapshotChunk:
			n.writeChunk(s)
		default:
			tb.Fatalf("coretest: unexpected storage request %T", m)
		}
	}
	n.net.post(n.ID, rd.Send)
	for _, m := range rd.Replicate {
		switch r := m.(type) {
		case *messages.ReplicationStart:
			p, err := replication.NewPeer(n.net.opts.Replication, r)
			if err != nil {
				tb.Fatalf("coretest: node %d: %v", n.ID, err)
			}
			s, err := replication.NewStream(replication.StreamConfig{Config: n.net.opts.Replication, ClusterID: "test",
				GroupID: 1, Leader: n.ID, Peer: r.GetPeer(), Term: r.GetTerm()})
			if err != nil {
				tb.Fatalf("coretest: node %d: %v", n.ID, err)
			}
			n.peers[r.GetPeer()] = &peerPair{term: r.GetTerm(), peer: p, stream: s}
		case *messages.ReplicationStop:
			for id, pp := range n.peers {
				if pp.term == r.GetTerm() && (r.GetPeer() == 0 || r.GetPeer() == id) {
					pp.peer.Stop()
					pp.stream.Stop()
					delete(n.peers, id)
				}
			}
		case *messages.ReplicationNotify:
			for _, id := range n.peerIDs() {
				if pp := n.peers[id]; pp.term == r.GetTerm() {
					if err := pp.peer.Notify(r); err != nil {
						tb.Fatalf("coretest: node %d: notify %d: %v", n.ID, id, err)
					}
				}
			}
		}
	}
	for _, m := range rd.Apply {
		switch a := m.(type) {
		case *messages.ApplyCommitted:
			n.apply(a)
		case *messages.BuildSnapshot:
			n.buildSnapshot(a)
		case *messages.RestoreSnapshot:
			data, ok := n.store.snaps[a.GetMeta().GetId()]
			if !ok {
				tb.Fatalf("coretest: node %d: restore of unknown snapshot %s", n.ID, a.GetMeta().GetId())
			}
			n.sm.restore(tb, data)
			if err := n.Core.Step(&messages.SnapshotRestored{Seq: a.GetSeq(), Meta: a.GetMeta()}); err != nil {
				tb.Fatalf("coretest: node %d: restored: %v", n.ID, err)
			}
		}
	}
	n.Responses = append(n.Responses, rd.Responses...)
}

func (n *Node) handlePeerOutput(pp *peerPair, out replication.PeerOutput) {
	for _, m := range out.Stream {
		var err error
		switch s := m.(type) {
		case *messages.StreamSend:
			err = pp.stream.Send(s)
		case *messages.StreamSendSnapshot:
			err = pp.stream.SendSnapshot(s)
		case *messages.ReplicationNotify:
			pp.stream.Notify(s)
		}
		if err != nil {
			n.net.tb.Fatalf("coretest: node %d: stream: %v", n.ID, err)
		}
	}
	if out.Report != nil {
		_ = n.Core.Step(out.Report)
	}
}

func (n *Node) handleStreamOutput(pp *peerPair, out replication.StreamOutput) {
	n.net.post(n.ID, out.Send)
	for _, m := range out.Storage {
		switch r := m.(type) {
		case *messages.StorageReadEntries:
			_ = pp.stream.HandleEntries(n.store.read(r))
		case *messages.StorageReadSnapshotChunk:
			_ = pp.stream.HandleSnapshotChunk(n.store.readChunk(r))
		}
	}
	for _, m := range out.ToPeer {
		switch r := m.(type) {
		case *messages.AppendEntriesResponse:
			_ = pp.peer.HandleAppendResponse(r)
		case *messages.InstallSnapshotResponse:
			_ = pp.peer.HandleSnapshotResponse(r)
		case *messages.StreamFailure:
			_ = pp.peer.HandleFailure(r)
		}
	}
}

func (n *Node) writeChunk(s *messages.StorageWriteSnapshotChunk) {
	if n.incoming == nil {
		n.incoming = map[string][]byte{}
	}
	id := s.GetMeta().GetId()
	buf := n.incoming[id]
	res := &messages.StorageSnapshotChunkWritten{GroupId: 1, Seq: s.GetSeq(), Meta: s.GetMeta()}
	if s.GetOffset() == uint64(len(buf)) {
		buf = append(buf, s.GetData()...)
		n.incoming[id] = buf
		if s.GetDone() {
			if uint64(len(buf)) != s.GetMeta().GetSize() || checksum(buf) != s.GetMeta().GetChecksum() {
				res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Message: "snapshot checksum mismatch"}
				delete(n.incoming, id)
			} else {
				n.store.snaps[id] = buf
				res.Done = true
				delete(n.incoming, id)
			}
		}
	}
	res.NextOffset = uint64(len(buf))
	_ = n.Core.Step(res)
}

func (n *Node) apply(a *messages.ApplyCommitted) {
	tb := n.net.tb
	attached := map[uint64]*messages.Entry{}
	for _, e := range a.GetEntries() {
		attached[e.GetIndex()] = e
	}
	var bytes uint64
	for i := n.sm.applied + 1; i <= a.GetCommitIndex(); i++ {
		e := attached[i]
		if e == nil {
			e = n.store.entry(i)
		}
		if e == nil {
			tb.Fatalf("coretest: node %d: committed entry %d is neither attached nor durable", n.ID, i)
		}
		if prev, ok := n.net.applied[i]; ok && !proto.Equal(prev, e) {
			tb.Fatalf("coretest: state machine safety: node %d applies %v at %d, another node applied %v", n.ID, e, i, prev)
		}
		n.net.applied[i] = e
		n.sm.entries = append(n.sm.entries, e)
		n.sm.applied = i
		bytes += uint64(proto.Size(e)) // as the apply actor counts them, for Config.SnapshotBytes
	}
	for _, w := range a.GetWaiters() {
		e := n.sm.at(w.GetIndex())
		r := &messages.ClientWriteResponse{Index: w.GetIndex(), Term: w.GetTerm()}
		if e == nil || e.GetTerm() != w.GetTerm() {
			r.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_ABORTED, Message: "entry replaced"}
		} else {
			r.Result = e.GetData()
		}
		n.Responses = append(n.Responses, core.Response{Handle: core.Handle(w.GetHandle()), Msg: r})
	}
	if err := n.Core.Step(&messages.ApplyResult{AppliedIndex: n.sm.applied, AppliedBytes: bytes}); err != nil {
		tb.Fatalf("coretest: node %d: apply result: %v", n.ID, err)
	}
}

func (n *Node) buildSnapshot(b *messages.BuildSnapshot) {
	data, err := proto.Marshal(&messages.StorageEntries{Entries: n.sm.entries})
	if err != nil {
		n.net.tb.Fatalf("coretest: %v", err)
	}
	last := n.sm.entries[len(n.sm.entries)-1]
	meta := &messages.SnapshotMeta{Index: last.GetIndex(), Term: last.GetTerm(), Id: fmt.Sprintf("snap-%d-%d", n.ID, last.GetIndex()),
		Size: uint64(len(data)), Checksum: checksum(data)}
	for _, e := range n.sm.entries {
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			meta.Membership, meta.MembershipIndex = e.GetMembership(), e.GetIndex()
		}
	}
	n.store.snaps[meta.Id] = data
	if n.store.snap == nil || meta.GetIndex() > n.store.snap.GetIndex() {
		n.store.snap = meta
	}
	_ = n.Core.Step(&messages.SnapshotBuilt{Seq: b.GetSeq(), Meta: meta})
}

// stateMachine records every applied entry, from index 1.
type stateMachine struct {
	applied uint64
	entries []*messages.Entry
}

func (s *stateMachine) at(i uint64) *messages.Entry {
	if i == 0 || i > uint64(len(s.entries)) {
		return nil
	}
	return s.entries[i-1]
}

func (s *stateMachine) restore(tb TB, data []byte) {
	var se messages.StorageEntries
	if err := proto.Unmarshal(data, &se); err != nil {
		tb.Fatalf("coretest: restore: %v", err)
	}
	s.entries = se.GetEntries()
	s.applied = uint64(len(s.entries))
}
