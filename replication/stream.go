package replication

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// StreamConfig names the two ends of a stream.
type StreamConfig struct {
	Config
	ClusterID string
	GroupID   uint64
	// Leader is this node, Peer the receiver; Term the leader's term.
	Leader uint64
	Peer   uint64
	Term   uint64
}

// Stream turns a Peer's commands into wire requests for one peer in one
// term.
type Stream struct {
	cfg StreamConfig
	now uint64

	// cache holds recent entries, cache[k] at index cacheFirst+k.
	cache      []*messages.Entry
	cacheFirst uint64
	cacheBytes uint64
	durable    uint64

	// reads are sends waiting for a storage read, by seq.
	reads map[uint64]*messages.StreamSend
	// sent are requests on the wire, by seq, with the tick they left.
	sent map[uint64]uint64

	snap *snapSend

	stopped bool
	out     StreamOutput
}

type snapSend struct {
	seq    uint64
	meta   *messages.SnapshotMeta
	offset uint64
	// final is set once the last chunk is on the wire: the peer answers
	// it only after verifying the body and restoring its state machine
	// from it, which takes far longer than one request.
	final bool
}

// finalChunkTimeoutFactor multiplies RequestTimeoutTicks for the last chunk
// of a snapshot, whose answer waits for the peer's restore. A restore of a
// large state machine outlasts a request timeout, and re-sending the
// snapshot then would only start the same restore again.
const finalChunkTimeoutFactor = 20

// StreamOutput is what a Stream asks its actor to do.
type StreamOutput struct {
	// Send holds wire messages for the peer (*messages.AppendEntriesRequest,
	// *messages.InstallSnapshotRequest).
	Send []proto.Message
	// Storage holds reads for the storage actor
	// (*messages.StorageReadEntries, *messages.StorageReadSnapshotChunk).
	Storage []proto.Message
	// ToPeer holds messages for the stream's ReplicationState
	// (*messages.AppendEntriesResponse, *messages.InstallSnapshotResponse,
	// *messages.StreamFailure).
	ToPeer []proto.Message
}

// NewStream makes a stream.
func NewStream(cfg StreamConfig) (*Stream, error) {
	if err := cfg.Config.Validate(); err != nil {
		return nil, err
	}
	if cfg.Leader == 0 || cfg.Peer == 0 || cfg.Term == 0 || cfg.Leader == cfg.Peer {
		return nil, errors.New("replication: stream needs distinct leader and peer and a term")
	}
	cfg.Config = cfg.Config.withDefaults()
	return &Stream{cfg: cfg, reads: map[uint64]*messages.StreamSend{}, sent: map[uint64]uint64{}}, nil
}

// Output returns and clears what accumulated.
func (s *Stream) Output() StreamOutput {
	out := s.out
	s.out = StreamOutput{}
	return out
}

// Stop makes the stream ignore every further input.
func (s *Stream) Stop() { s.stopped = true }

func (s *Stream) hdr() *messages.Header {
	return &messages.Header{ClusterId: s.cfg.ClusterID, GroupId: s.cfg.GroupID, From: s.cfg.Leader, To: s.cfg.Peer, Term: s.cfg.Term}
}

// Notify caches new entries (forwarded by the Peer) and learns the
// leader's durable index.
func (s *Stream) Notify(n *messages.ReplicationNotify) {
	if s.stopped || n.GetTerm() != s.cfg.Term {
		return
	}
	s.durable = max(s.durable, n.GetDurableIndex())
	for _, e := range n.GetEntries() {
		if len(s.cache) > 0 && e.GetIndex() != s.cacheFirst+uint64(len(s.cache)) {
			if e.GetIndex() < s.cacheFirst+uint64(len(s.cache)) {
				continue
			}
			s.cache, s.cacheBytes = nil, 0
		}
		if len(s.cache) == 0 {
			s.cacheFirst = e.GetIndex()
		}
		s.cache = append(s.cache, e)
		s.cacheBytes += uint64(messages.EntrySize(e))
	}
	// Evict from the front, but only what storage can serve.
	for len(s.cache) > 0 && s.cacheBytes > s.cfg.CacheBytes && s.cacheFirst <= s.durable {
		s.cacheBytes -= uint64(messages.EntrySize(s.cache[0]))
		s.cache = s.cache[1:]
		s.cacheFirst++
	}
}

// Send executes a StreamSend.
func (s *Stream) Send(cmd *messages.StreamSend) error {
	if s.stopped || cmd.GetTerm() != s.cfg.Term {
		return fmt.Errorf("replication: send of term %d on stream of term %d", cmd.GetTerm(), s.cfg.Term)
	}
	if cmd.GetHeartbeat() {
		s.emit(cmd.GetSeq(), &messages.AppendEntriesRequest{Header: s.hdr(), Heartbeat: true, LeaderCommit: cmd.GetCommit(),
			Seq: cmd.GetSeq(), ReadSeq: cmd.GetReadSeq()})
		return nil
	}
	if cmd.GetHi() < cmd.GetLo() || cmd.GetLo() != cmd.GetPrevLogIndex()+1 {
		return fmt.Errorf("replication: send of %d..%d after %d", cmd.GetLo(), cmd.GetHi(), cmd.GetPrevLogIndex())
	}
	if ents, ok := s.fromCache(cmd.GetLo(), cmd.GetHi()); ok {
		s.sendEntries(cmd, ents)
		return nil
	}
	// Older entries come from storage; it holds everything up to the
	// leader's durable index, and the cache everything after.
	s.reads[cmd.GetSeq()] = cmd
	hi := cmd.GetHi()
	if len(s.cache) > 0 && s.cacheFirst > cmd.GetLo() {
		hi = min(hi, s.cacheFirst)
	}
	s.out.Storage = append(s.out.Storage, &messages.StorageReadEntries{GroupId: s.cfg.GroupID, Seq: cmd.GetSeq(),
		Lo: cmd.GetLo(), Hi: hi, MaxBytes: s.cfg.MaxAppendBytes})
	return nil
}

func (s *Stream) fromCache(lo, hi uint64) ([]*messages.Entry, bool) {
	if lo == hi {
		return nil, true
	}
	if len(s.cache) == 0 || lo < s.cacheFirst || hi > s.cacheFirst+uint64(len(s.cache)) {
		return nil, false
	}
	return s.cache[lo-s.cacheFirst : hi-s.cacheFirst], true
}

// sendEntries sends entries, cut at MaxAppendBytes (always at least one).
// The Peer notices a cut batch from the match index of the answer.
func (s *Stream) sendEntries(cmd *messages.StreamSend, ents []*messages.Entry) {
	var bytes uint64
	for k, e := range ents {
		bytes += uint64(messages.EntrySize(e))
		if k > 0 && bytes > s.cfg.MaxAppendBytes {
			ents = ents[:k]
			break
		}
	}
	s.emit(cmd.GetSeq(), &messages.AppendEntriesRequest{Header: s.hdr(), PrevLogIndex: cmd.GetPrevLogIndex(),
		PrevLogTerm: cmd.GetPrevLogTerm(), Entries: ents, LeaderCommit: cmd.GetCommit(), Seq: cmd.GetSeq()})
}

func (s *Stream) emit(seq uint64, m proto.Message) {
	s.sent[seq] = s.now
	s.out.Send = append(s.out.Send, m)
}

// HandleEntries takes a storage read's result.
func (s *Stream) HandleEntries(r *messages.StorageEntries) error {
	cmd, ok := s.reads[r.GetSeq()]
	if s.stopped || !ok {
		return fmt.Errorf("replication: entries for seq %d not requested", r.GetSeq())
	}
	delete(s.reads, r.GetSeq())
	if e := r.GetError(); e != nil || len(r.GetEntries()) == 0 {
		if e == nil {
			e = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Message: "storage returned no entries"}
		}
		s.out.ToPeer = append(s.out.ToPeer, &messages.StreamFailure{Term: s.cfg.Term, Seq: cmd.GetSeq(), Error: e})
		return nil
	}
	ents := r.GetEntries()
	for k, e := range ents {
		if e.GetIndex() != cmd.GetLo()+uint64(k) {
			s.out.ToPeer = append(s.out.ToPeer, &messages.StreamFailure{Term: s.cfg.Term, Seq: cmd.GetSeq(),
				Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Message: "storage returned entries out of order"}})
			return nil
		}
	}
	s.sendEntries(cmd, ents)
	return nil
}

// SendSnapshot starts sending a snapshot, one chunk at a time.
func (s *Stream) SendSnapshot(cmd *messages.StreamSendSnapshot) error {
	if s.stopped || cmd.GetTerm() != s.cfg.Term || cmd.GetMeta() == nil {
		return errors.New("replication: bad snapshot send")
	}
	s.snap = &snapSend{seq: cmd.GetSeq(), meta: cmd.GetMeta()}
	s.readChunk()
	return nil
}

func (s *Stream) readChunk() {
	s.out.Storage = append(s.out.Storage, &messages.StorageReadSnapshotChunk{GroupId: s.cfg.GroupID, Seq: s.snap.seq,
		SnapshotId: s.snap.meta.GetId(), Offset: s.snap.offset, MaxBytes: s.cfg.SnapshotChunkBytes})
	s.sent[s.snap.seq] = s.now
}

// HandleSnapshotChunk takes a chunk read from storage and sends it.
func (s *Stream) HandleSnapshotChunk(r *messages.StorageSnapshotChunk) error {
	sn := s.snap
	if s.stopped || sn == nil || r.GetSeq() != sn.seq {
		return fmt.Errorf("replication: snapshot chunk for seq %d not requested", r.GetSeq())
	}
	if r.GetError() != nil {
		s.snap = nil
		delete(s.sent, sn.seq)
		s.out.ToPeer = append(s.out.ToPeer, &messages.StreamFailure{Term: s.cfg.Term, Seq: sn.seq, Error: r.GetError()})
		return nil
	}
	sn.final = r.GetDone()
	s.emit(sn.seq, &messages.InstallSnapshotRequest{Header: s.hdr(), Meta: sn.meta, Offset: r.GetOffset(),
		Data: r.GetData(), Done: r.GetDone(), Seq: sn.seq})
	return nil
}

// HandleResponse takes the peer's answer (*messages.AppendEntriesResponse,
// *messages.InstallSnapshotResponse or *messages.WireReject).
func (s *Stream) HandleResponse(m proto.Message) error {
	if s.stopped {
		return errors.New("replication: stream stopped")
	}
	if h, ok := m.(interface{ GetHeader() *messages.Header }); ok && h.GetHeader().GetTerm() < s.cfg.Term {
		// An answer to an older leader's stream reuses seq numbers; it
		// must not settle a request of this one.
		return fmt.Errorf("replication: answer of term %d on stream of term %d", h.GetHeader().GetTerm(), s.cfg.Term)
	}
	switch r := m.(type) {
	case *messages.AppendEntriesResponse:
		delete(s.sent, r.GetSeq())
		s.out.ToPeer = append(s.out.ToPeer, r)
	case *messages.InstallSnapshotResponse:
		sn := s.snap
		if sn == nil || r.GetSeq() != sn.seq {
			if r.GetHeader().GetTerm() > s.cfg.Term {
				s.out.ToPeer = append(s.out.ToPeer, r)
			}
			return nil
		}
		if r.GetError() == nil && !r.GetDone() && r.GetHeader().GetTerm() == s.cfg.Term {
			// The receiver names the offset it wants next.
			sn.offset = r.GetNextOffset()
			s.readChunk()
			return nil
		}
		s.snap = nil
		delete(s.sent, r.GetSeq())
		s.out.ToPeer = append(s.out.ToPeer, r)
	case *messages.WireReject:
		s.out.ToPeer = append(s.out.ToPeer, &messages.StreamFailure{Term: s.cfg.Term, Error: r.GetError()})
	default:
		return fmt.Errorf("replication: unexpected response %T", m)
	}
	return nil
}

// Tick advances time; requests unanswered for RequestTimeoutTicks are
// reported failed.
func (s *Stream) Tick() {
	if s.stopped {
		return
	}
	s.now++
	var expired []uint64
	for seq, at := range s.sent {
		limit := uint64(s.cfg.RequestTimeoutTicks)
		if sn := s.snap; sn != nil && sn.seq == seq && sn.final {
			limit *= finalChunkTimeoutFactor
		}
		if s.now-at >= limit {
			expired = append(expired, seq)
		}
	}
	slices.Sort(expired)
	for _, seq := range expired {
		delete(s.sent, seq)
		if s.snap != nil && s.snap.seq == seq {
			s.snap = nil
		}
		s.out.ToPeer = append(s.out.ToPeer, &messages.StreamFailure{Term: s.cfg.Term, Seq: seq, Unreachable: true,
			Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Message: "no answer"}})
	}
}

// Pending returns how many requests are on the wire and how many wait for
// a storage read.
func (s *Stream) Pending() (sent, reading int) { return len(s.sent), len(s.reads) }
