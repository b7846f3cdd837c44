package sim

import (
	"fmt"
	"time"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
	"google.golang.org/protobuf/proto"
)

// replicator is a leader's replication layer: for every peer core starts, a
// ReplicationState mailbox driving a replication.Peer and a
// ReplicationStream mailbox driving a replication.Stream, as the actor layer
// spawns them. Streams read entries and snapshot chunks through the node's
// storage mailbox, which serves durable data only.
type replicator struct {
	n     *Node
	pairs map[uint64]*peerPair
}

type peerPair struct {
	r        *replicator
	id, term uint64
	peer     *replication.Peer
	stream   *replication.Stream
	stateMB  *mailbox
	streamMB *mailbox
	stopped  bool
}

// flush asks a new ReplicationState to emit what its constructor decided.
type flush struct{}

// storageRead is a stream's read, answered to reply.
type storageRead struct {
	msg   proto.Message
	reply *mailbox
}

func newReplicator(n *Node) *replicator {
	return &replicator{n: n, pairs: map[uint64]*peerPair{}}
}

func (s *Sim) replicationConfig() replication.Config {
	return replication.Config{
		MaxAppendEntries:   s.cfg.MaxAppendEntries,
		MaxInflight:        s.cfg.MaxInflight,
		SnapshotChunkBytes: s.cfg.SnapshotChunkBytes,
		CacheBytes:         s.cfg.CacheBytes,
	}
}

// command handles one of core's Replicate commands.
func (r *replicator) command(m proto.Message) {
	n := r.n
	switch m := m.(type) {
	case *messages.ReplicationStart:
		if old := r.pairs[m.Peer]; old != nil {
			old.stop()
		}
		cfg := n.s.replicationConfig()
		peer, err := replication.NewPeer(cfg, m)
		if err != nil {
			n.s.fail(fmt.Errorf("n%d: replication.NewPeer(%v): %w", n.id, m, err))
			return
		}
		stream, err := replication.NewStream(replication.StreamConfig{
			Config: cfg, ClusterID: n.s.clusterID, GroupID: 1, Leader: n.id, Peer: m.Peer, Term: m.Term,
		})
		if err != nil {
			n.s.fail(fmt.Errorf("n%d: replication.NewStream: %w", n.id, err))
			return
		}
		p := &peerPair{r: r, id: m.Peer, term: m.Term, peer: peer, stream: stream}
		p.stateMB = n.newMailbox(fmt.Sprintf("state-n%d", m.Peer), 0, 100*time.Microsecond, p.handleState)
		p.streamMB = n.newMailbox(fmt.Sprintf("stream-n%d", m.Peer), 0, 100*time.Microsecond, p.handleStream)
		r.pairs[m.Peer] = p
		p.stateMB.post(flush{})
	case *messages.ReplicationStop:
		for _, id := range r.ids() {
			if p := r.pairs[id]; p.term == m.Term && (m.Peer == 0 || m.Peer == id) {
				p.stop()
				delete(r.pairs, id)
			}
		}
	case *messages.ReplicationNotify:
		for _, id := range r.ids() {
			if p := r.pairs[id]; p.term == m.Term {
				p.stateMB.post(m)
			}
		}
	default:
		n.s.fail(fmt.Errorf("n%d: unknown replication command %T", n.id, m))
	}
}

// ids lists the peers in order, so that broadcasts are posted in an order
// that depends on the seed only.
func (r *replicator) ids() []uint64 {
	var out []uint64
	for id := uint64(1); id <= uint64(len(r.n.s.nodes)); id++ {
		if r.pairs[id] != nil {
			out = append(out, id)
		}
	}
	return out
}

// tick delivers the node's clock to every replication actor.
func (r *replicator) tick() {
	for _, id := range r.ids() {
		p := r.pairs[id]
		p.stateMB.post(tick{})
		p.streamMB.post(tick{})
	}
}

// reply routes a wire reply from a peer to its stream; it reports false if
// no stream runs for that peer.
func (r *replicator) reply(from uint64, m proto.Message) bool {
	if p := r.pairs[from]; p != nil {
		p.streamMB.post(m)
		return true
	}
	return false
}

func (p *peerPair) stop() {
	p.stopped = true
	p.peer.Stop()
	p.stream.Stop()
}

func (p *peerPair) trace(format string, args ...any) {
	n := p.r.n
	n.s.trace.Add(n.s.q.Now(), n.id, "[->n%d] "+format, append([]any{p.id}, args...)...)
}

// handleState is the ReplicationState actor.
func (p *peerPair) handleState(msg any) {
	if p.stopped {
		return
	}
	var err error
	switch m := msg.(type) {
	case flush:
	case tick:
		p.peer.Tick()
	case *messages.ReplicationNotify:
		err = p.peer.Notify(m)
	case *messages.AppendEntriesResponse:
		err = p.peer.HandleAppendResponse(m)
	case *messages.InstallSnapshotResponse:
		err = p.peer.HandleSnapshotResponse(m)
	case *messages.StreamFailure:
		err = p.peer.HandleFailure(m)
	default:
		err = fmt.Errorf("unexpected %T", msg)
	}
	if err != nil {
		p.trace("state refused %s: %v", describeMsg(msg), err)
	}
	out := p.peer.Output()
	for _, c := range out.Stream {
		p.streamMB.post(c)
	}
	if r := out.Report; r != nil {
		p.trace("report match=%d next=%d mode=%s inflight=%d needs-snapshot=%v higher-term=%d",
			r.MatchIndex, r.NextIndex, r.Mode, r.InflightEntries, r.NeedsSnapshot, r.HigherTerm)
		p.r.n.coreMB.post(r)
	}
}

// handleStream is the ReplicationStream actor.
func (p *peerPair) handleStream(msg any) {
	if p.stopped {
		return
	}
	var err error
	switch m := msg.(type) {
	case tick:
		p.stream.Tick()
	case *messages.StreamSend:
		err = p.stream.Send(m)
	case *messages.StreamSendSnapshot:
		err = p.stream.SendSnapshot(m)
	case *messages.ReplicationNotify:
		p.stream.Notify(m)
	case *messages.StorageEntries:
		err = p.stream.HandleEntries(m)
	case *messages.StorageSnapshotChunk:
		err = p.stream.HandleSnapshotChunk(m)
	case *messages.AppendEntriesResponse, *messages.InstallSnapshotResponse, *messages.WireReject:
		err = p.stream.HandleResponse(m.(proto.Message))
	default:
		err = fmt.Errorf("unexpected %T", msg)
	}
	if err != nil {
		p.trace("stream refused %s: %v", describeMsg(msg), err)
	}
	out := p.stream.Output()
	for _, m := range out.Send {
		p.r.n.send(m)
	}
	for _, m := range out.Storage {
		p.r.n.storageMB.post(storageRead{msg: m, reply: p.streamMB})
	}
	for _, m := range out.ToPeer {
		p.stateMB.post(m)
	}
}

// serveRead answers a stream's storage read from durable data only, as
// Raftor's LogStore does.
func (n *Node) serveRead(r storageRead) {
	st := n.disk.Durable()
	switch m := r.msg.(type) {
	case *messages.StorageReadEntries:
		res := &messages.StorageEntries{GroupId: m.GroupId, Seq: m.Seq}
		switch {
		case m.Lo < st.First:
			res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED, Message: fmt.Sprintf("%d is below the first index %d", m.Lo, st.First)}
		case m.Hi <= m.Lo || m.Hi > st.LastIndex()+1:
			res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: fmt.Sprintf("read %d..%d of a durable log %d..%d", m.Lo, m.Hi, st.First, st.LastIndex())}
		default:
			var size uint64
			for i := m.Lo; i < m.Hi; i++ {
				e := st.Entry(i)
				size += uint64(proto.Size(e))
				if len(res.Entries) > 0 && m.MaxBytes > 0 && size > m.MaxBytes {
					break
				}
				res.Entries = append(res.Entries, e)
			}
		}
		r.reply.post(res)
	case *messages.StorageReadSnapshotChunk:
		res := &messages.StorageSnapshotChunk{GroupId: m.GroupId, Seq: m.Seq, Offset: m.Offset}
		if st.Snapshot == nil || st.Snapshot.Id != m.SnapshotId || m.Offset > uint64(len(st.SnapshotData)) {
			res.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED, Message: "snapshot " + m.SnapshotId + " is gone"}
		} else {
			end := uint64(len(st.SnapshotData))
			if m.MaxBytes > 0 {
				end = min(end, m.Offset+m.MaxBytes)
			}
			res.Meta = st.Snapshot
			res.Data = st.SnapshotData[m.Offset:end]
			res.Done = end == uint64(len(st.SnapshotData))
		}
		r.reply.post(res)
	default:
		n.s.fail(fmt.Errorf("n%d: unknown storage read %T", n.id, r.msg))
	}
}
