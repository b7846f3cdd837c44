package replication

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
)

// Peer is the replication progress of one follower or learner, as seen by
// the leader of one term. A new term gets a new Peer.
type Peer struct {
	cfg  Config
	term uint64
	id   uint64

	log      *core.TermIndex // the leader's log terms (append-only in a term)
	snapshot *messages.SnapshotMeta
	commit   uint64
	durable  uint64

	match uint64
	next  uint64
	mode  messages.ReplicationMode

	// probeSent is set while the single probe request is unanswered.
	probeSent bool
	// inflight are the pipeline requests not yet answered, in seq order.
	inflight      []inflight
	inflightBytes uint64
	// sizes holds the encoded sizes of recent entries, sizes[k] for index
	// sizesFirst+k; entries outside it have unknown size.
	sizes      []uint64
	sizesFirst uint64

	seq         uint64
	backoff     int // ticks before sending again
	failures    int
	snapshotSeq uint64                 // seq of the snapshot being sent, 0 if none
	snapshotOut *messages.SnapshotMeta // the snapshot being sent
	sentCommit  uint64

	heard      bool
	readSeq    uint64
	reachable  bool
	higherTerm uint64
	needsSnap  bool
	stopped    bool

	out      PeerOutput
	reported *messages.ReplicationReport
}

type inflight struct {
	seq   uint64
	first uint64 // prev_log_index + 1
	last  uint64 // prev_log_index + number of entries requested
	bytes uint64
}

// PeerOutput is what a Peer asks its actor to do.
type PeerOutput struct {
	// Stream holds commands for the peer's ReplicationStream, in order:
	// *messages.StreamSend, *messages.StreamSendSnapshot and
	// *messages.ReplicationNotify (to forward new entries to its cache).
	Stream []proto.Message
	// Report, when set, goes to the core.
	Report *messages.ReplicationReport
}

// NewPeer starts the progress of start.Peer in start.Term. The peer begins
// in probe mode at start.NextIndex.
func NewPeer(cfg Config, start *messages.ReplicationStart) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if start == nil || start.GetPeer() == 0 || start.GetTerm() == 0 {
		return nil, errors.New("replication: start without peer or term")
	}
	first := start.GetFirstIndex()
	if first == 0 {
		first = 1
	}
	snap := start.GetSnapshot()
	baseKnown := snap != nil && snap.GetIndex() == first-1
	ti, err := core.NewTermIndex(first, start.GetLastIndex(), start.GetTermRuns(), snap.GetTerm(), baseKnown)
	if err != nil {
		return nil, fmt.Errorf("replication: start: %w", err)
	}
	next := start.GetNextIndex()
	if next == 0 || next > ti.LastIndex()+1 {
		next = ti.LastIndex() + 1
	}
	p := &Peer{
		cfg: cfg.withDefaults(), term: start.GetTerm(), id: start.GetPeer(), log: ti, snapshot: snap,
		commit: start.GetCommit(), durable: start.GetDurableIndex(), next: next,
		mode: messages.ReplicationMode_REPLICATION_MODE_PROBE, reachable: true, sizesFirst: ti.LastIndex() + 1,
	}
	p.maybeSend()
	return p, nil
}

// Match returns the highest index known to be replicated on the peer.
func (p *Peer) Match() uint64 { return p.match }

// Next returns the next index to send.
func (p *Peer) Next() uint64 { return p.next }

// Mode returns the replication mode.
func (p *Peer) Mode() messages.ReplicationMode { return p.mode }

// Inflight returns the number of unanswered pipeline requests and their
// entry bytes.
func (p *Peer) Inflight() (int, uint64) { return len(p.inflight), p.inflightBytes }

// Output returns and clears what accumulated, with at most one report that
// sums up every change since the last one.
func (p *Peer) Output() PeerOutput {
	p.report()
	out := p.out
	p.out = PeerOutput{}
	return out
}

// Stop makes the peer ignore every further input.
func (p *Peer) Stop() { p.stopped = true }

// Notify takes the leader's news: new entries, commit, durable index,
// snapshot, or a heartbeat round.
func (p *Peer) Notify(n *messages.ReplicationNotify) error {
	if p.stopped || n.GetTerm() != p.term {
		return fmt.Errorf("replication: notify of term %d for peer of term %d", n.GetTerm(), p.term)
	}
	var fresh []*messages.Entry
	for _, e := range n.GetEntries() {
		if e.GetIndex() <= p.log.LastIndex() {
			continue
		}
		if err := p.log.Append(e.GetIndex(), e.GetTerm()); err != nil {
			return fmt.Errorf("replication: notify: %w", err)
		}
		if len(p.sizes) == 0 {
			p.sizesFirst = e.GetIndex()
		}
		p.sizes = append(p.sizes, uint64(messages.EntrySize(e)))
		fresh = append(fresh, e)
	}
	// Sizes at or below match are never needed again.
	if p.match >= p.sizesFirst && len(p.sizes) > 0 {
		d := min(p.match-p.sizesFirst+1, uint64(len(p.sizes)))
		p.sizes = p.sizes[d:]
		p.sizesFirst += d
	}
	p.commit = max(p.commit, n.GetCommit())
	p.durable = max(p.durable, n.GetDurableIndex())
	if s := n.GetSnapshot(); s != nil && s.GetIndex() > p.snapshot.GetIndex() {
		p.snapshot = s
	}
	if f := n.GetFirstIndex(); f > p.log.FirstIndex() && f-1 <= p.log.LastIndex() {
		t, ok := p.log.Term(f - 1)
		if !ok && p.snapshot.GetIndex() == f-1 {
			t, ok = p.snapshot.GetTerm(), true
		}
		if ok {
			p.log.CompactTo(f-1, t)
		}
	}
	if len(fresh) > 0 || n.GetDurableIndex() > 0 {
		p.out.Stream = append(p.out.Stream, &messages.ReplicationNotify{Term: p.term, Entries: fresh,
			DurableIndex: p.durable, LastIndex: p.log.LastIndex(), Commit: p.commit})
	}
	if n.GetHeartbeat() {
		// Heartbeats bypass the window: they must never queue behind large
		// appends (PITFALLS #18). The commit they carry is capped at what
		// the peer is known to hold.
		p.seq++
		p.out.Stream = append(p.out.Stream, &messages.StreamSend{Term: p.term, Seq: p.seq, Heartbeat: true,
			ReadSeq: n.GetReadSeq(), Commit: min(p.commit, p.match)})
	}
	p.maybeSend()
	return nil
}

// HandleAppendResponse takes the peer's answer to an append or heartbeat.
func (p *Peer) HandleAppendResponse(r *messages.AppendEntriesResponse) error {
	if p.stopped {
		return errors.New("replication: peer stopped")
	}
	if r.GetHeader().GetFrom() != p.id {
		return fmt.Errorf("replication: response from %d for peer %d", r.GetHeader().GetFrom(), p.id)
	}
	t := r.GetHeader().GetTerm()
	if t > p.term {
		p.higherTerm = max(p.higherTerm, t)
		return nil
	}
	if t < p.term {
		return fmt.Errorf("replication: response of term %d in term %d", t, p.term)
	}
	p.heard = true
	p.reachable = true
	p.failures = 0
	if r.GetHeartbeat() {
		if r.GetSuccess() {
			p.readSeq = max(p.readSeq, r.GetReadSeq())
		}
		if p.mode == messages.ReplicationMode_REPLICATION_MODE_PROBE && p.probeSent && p.backoff == 0 && p.probeLost(r) {
			// The peer is reachable but the probe went unanswered (lost on
			// the way): probe again now rather than after the stream's
			// timeout. An answer to the old probe is ignored.
			p.resetWindow()
		}
		p.maybeSend()
		return nil
	}
	k := p.findInflight(r.GetSeq())
	if k < 0 {
		// An answer to a request that was superseded (a probe after a
		// failure, a window that was reset): only its liveness counts.
		return nil
	}
	sent := p.inflight[k]
	if r.GetSuccess() {
		// match moves only to what the answered request carried
		// (PITFALLS #7); a shorter answer means the stream cut the batch.
		m := min(r.GetMatchIndex(), sent.last)
		p.ackInflight(k)
		if m > p.match {
			p.match = m
		}
		if m < sent.last {
			p.resetWindow()
			p.next = p.match + 1
		} else if p.next < p.match+1 {
			p.next = p.match + 1
		}
		p.backoff = 0
		if p.mode == messages.ReplicationMode_REPLICATION_MODE_PROBE {
			p.mode = messages.ReplicationMode_REPLICATION_MODE_PIPELINE
		}
		p.probeSent = false
		p.maybeSend()
		return nil
	}
	// Rejected: find the match point from the conflict hint, one round trip
	// per term. A leader holding entries of conflict_term resumes after its
	// last one; otherwise it skips the follower's whole term.
	p.ackInflight(k)
	rejectedPrev := sent.first - 1
	next := r.GetConflictIndex()
	if ct := r.GetConflictTerm(); ct != 0 {
		if li, ok := p.log.LastInTerm(ct); ok {
			next = li + 1
		}
	}
	// Always back up at least one entry, never below what is known to
	// match, never to 0.
	next = max(min(next, rejectedPrev), p.match+1, 1)
	p.resetWindow()
	p.next = next
	p.mode = messages.ReplicationMode_REPLICATION_MODE_PROBE
	p.maybeSend()
	return nil
}

// HandleSnapshotResponse takes the peer's answer to the last chunk (the
// stream forwards only the final answer or a failure).
func (p *Peer) HandleSnapshotResponse(r *messages.InstallSnapshotResponse) error {
	if p.stopped {
		return errors.New("replication: peer stopped")
	}
	t := r.GetHeader().GetTerm()
	if t > p.term {
		p.higherTerm = max(p.higherTerm, t)
		return nil
	}
	if t < p.term || r.GetSeq() != p.snapshotSeq || p.snapshotSeq == 0 {
		return fmt.Errorf("replication: snapshot response seq %d not outstanding", r.GetSeq())
	}
	p.heard = true
	p.reachable = true
	p.snapshotSeq = 0
	if r.GetError() != nil || !r.GetDone() {
		p.fail()
		return nil
	}
	// The peer now holds everything up to the snapshot it was sent (a
	// newer one may have been taken since).
	p.failures = 0
	p.needsSnap = false
	p.match = max(p.match, p.snapshotOut.GetIndex())
	p.next = p.match + 1
	p.mode = messages.ReplicationMode_REPLICATION_MODE_PROBE
	p.probeSent = false
	p.maybeSend()
	return nil
}

// HandleFailure takes a stream's report that a request failed or timed out.
func (p *Peer) HandleFailure(f *messages.StreamFailure) error {
	if p.stopped || f.GetTerm() != p.term {
		return fmt.Errorf("replication: failure of term %d", f.GetTerm())
	}
	if f.GetError().GetCode() == messages.ErrorCode_ERROR_CODE_COMPACTED {
		// The snapshot being sent may itself have been replaced while the
		// stream read it: that send is over, or sendSnapshot would wait for
		// it forever.
		if f.GetSeq() == p.snapshotSeq {
			p.snapshotSeq = 0
		}
		p.toSnapshot()
		p.maybeSend()
		return nil
	}
	if f.GetSeq() == p.snapshotSeq && p.snapshotSeq != 0 {
		p.snapshotSeq = 0
		p.fail()
		p.reachable = !f.GetUnreachable()
		return nil
	}
	if p.findInflight(f.GetSeq()) < 0 {
		return nil // a heartbeat or a superseded request
	}
	p.fail()
	p.reachable = !f.GetUnreachable()
	return nil
}

// fail drops the window, goes back to probing and backs off exponentially.
func (p *Peer) fail() {
	p.resetWindow()
	if p.mode != messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT {
		p.mode = messages.ReplicationMode_REPLICATION_MODE_PROBE
	}
	p.next = max(p.match+1, min(p.next, p.log.LastIndex()+1))
	p.failures++
	b := p.cfg.RetryTicks
	for k := 1; k < p.failures && b < p.cfg.MaxRetryTicks; k++ {
		b *= 2
	}
	p.backoff = min(b, p.cfg.MaxRetryTicks)
}

// Tick advances the backoff timer.
func (p *Peer) Tick() {
	if p.stopped {
		return
	}
	if p.backoff > 0 {
		p.backoff--
		if p.backoff == 0 {
			p.maybeSend()
		}
	}
}

// probeLost says whether a heartbeat's answer shows that the probe in
// flight was lost. The peer handles one stream's requests in order and
// answers a heartbeat at once, while it answers a probe with entries only
// once they are on its disk; so a heartbeat sent after the probe and
// answered by a peer whose log already reaches the probe's last entry
// means the probe is being written, not lost (re-sending it then would
// send the same entries again and again to a slow disk). A heartbeat sent
// before the probe says nothing of it. An empty probe is answered without
// waiting for the disk, so a later heartbeat's answer does show it lost.
func (p *Peer) probeLost(r *messages.AppendEntriesResponse) bool {
	if len(p.inflight) == 0 {
		return true
	}
	probe := p.inflight[0]
	if r.GetSeq() < probe.seq {
		return false
	}
	if probe.last < probe.first {
		return true
	}
	return r.GetLastLogIndex() < probe.last
}

func (p *Peer) findInflight(seq uint64) int {
	for k, f := range p.inflight {
		if f.seq == seq {
			return k
		}
	}
	return -1
}

func (p *Peer) ackInflight(k int) {
	for _, f := range p.inflight[:k+1] {
		p.inflightBytes -= f.bytes
	}
	p.inflight = p.inflight[k+1:]
}

func (p *Peer) resetWindow() {
	p.inflight = nil
	p.inflightBytes = 0
	p.probeSent = false
}

func (p *Peer) toSnapshot() {
	p.resetWindow()
	p.mode = messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT
	p.needsSnap = true
}

// termAt returns the leader's term at i, using the snapshot for its index.
func (p *Peer) termAt(i uint64) (uint64, bool) {
	if s := p.snapshot; s != nil && s.GetIndex() == i && i > 0 {
		return s.GetTerm(), true
	}
	return p.log.Term(i)
}

func (p *Peer) sizeOf(lo, hi uint64) (uint64, bool) {
	if lo < p.sizesFirst || hi > p.sizesFirst+uint64(len(p.sizes)) {
		return 0, false
	}
	var n uint64
	for _, s := range p.sizes[lo-p.sizesFirst : hi-p.sizesFirst] {
		n += s
	}
	return n, true
}

// maybeSend sends what the mode and the window allow.
func (p *Peer) maybeSend() {
	if p.stopped || p.higherTerm > 0 || p.backoff > 0 {
		return
	}
	if p.mode == messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT {
		p.sendSnapshot()
		return
	}
	for {
		if p.mode == messages.ReplicationMode_REPLICATION_MODE_PROBE && p.probeSent {
			return
		}
		if p.mode == messages.ReplicationMode_REPLICATION_MODE_PIPELINE &&
			(len(p.inflight) >= p.cfg.MaxInflight || p.inflightBytes >= p.cfg.MaxInflightBytes) {
			return
		}
		last := p.log.LastIndex()
		idle := p.next > last
		if idle && p.mode == messages.ReplicationMode_REPLICATION_MODE_PIPELINE &&
			(p.commit <= p.sentCommit || len(p.inflight) > 0) {
			return
		}
		prev := p.next - 1
		prevTerm, ok := p.termAt(prev)
		if !ok || (p.next < p.log.FirstIndex() && !idle) {
			// The entries this peer needs were purged (PITFALLS #15).
			p.toSnapshot()
			p.sendSnapshot()
			return
		}
		hi := min(last+1, p.next+uint64(p.cfg.MaxAppendEntries))
		var bytes uint64
		for hi > p.next+1 {
			n, known := p.sizeOf(p.next, hi)
			if !known || n <= p.cfg.MaxAppendBytes {
				bytes = n
				break
			}
			hi = p.next + (hi-p.next)/2
		}
		if hi == p.next+1 {
			bytes, _ = p.sizeOf(p.next, hi)
		}
		p.seq++
		p.out.Stream = append(p.out.Stream, &messages.StreamSend{Term: p.term, Seq: p.seq, PrevLogIndex: prev,
			PrevLogTerm: prevTerm, Lo: p.next, Hi: hi, Commit: p.commit})
		p.sentCommit = p.commit
		p.inflight = append(p.inflight, inflight{seq: p.seq, first: p.next, last: hi - 1, bytes: bytes})
		p.inflightBytes += bytes
		if p.mode == messages.ReplicationMode_REPLICATION_MODE_PROBE {
			p.probeSent = true
			return
		}
		p.next = hi
		if idle {
			return
		}
	}
}

func (p *Peer) sendSnapshot() {
	if p.snapshotSeq != 0 {
		return
	}
	s := p.snapshot
	if s == nil || s.GetIndex() == 0 {
		// No usable snapshot yet: ask the core for one and wait.
		p.needsSnap = true
		return
	}
	p.seq++
	p.snapshotSeq = p.seq
	p.snapshotOut = s
	p.out.Stream = append(p.out.Stream, &messages.StreamSendSnapshot{Term: p.term, Seq: p.seq, Meta: s})
}

// report queues a ReplicationReport when anything the core cares about
// changed since the last one.
func (p *Peer) report() {
	r := &messages.ReplicationReport{
		Term: p.term, Peer: p.id, MatchIndex: p.match, NextIndex: p.next, Mode: p.mode, Heard: p.heard,
		ReadSeq: p.readSeq, Reachable: p.reachable, HigherTerm: p.higherTerm,
		InflightEntries: uint64(len(p.inflight)), InflightBytes: p.inflightBytes, NeedsSnapshot: p.needsSnap,
	}
	if last := p.reported; last != nil && !r.Heard && sameReport(last, r) {
		return
	}
	p.heard = false
	p.reported = r
	p.out.Report = r
}

// sameReport says whether two reports carry the same news. It compares the
// fields one by one: this runs on every response, and proto.Equal's
// reflection cost more than the rest of the peer's work.
func sameReport(a, b *messages.ReplicationReport) bool {
	return a.GetTerm() == b.GetTerm() && a.GetPeer() == b.GetPeer() && a.GetMatchIndex() == b.GetMatchIndex() &&
		a.GetNextIndex() == b.GetNextIndex() && a.GetMode() == b.GetMode() && a.GetHeard() == b.GetHeard() &&
		a.GetReadSeq() == b.GetReadSeq() && a.GetReachable() == b.GetReachable() &&
		a.GetHigherTerm() == b.GetHigherTerm() && a.GetInflightEntries() == b.GetInflightEntries() &&
		a.GetInflightBytes() == b.GetInflightBytes() && a.GetNeedsSnapshot() == b.GetNeedsSnapshot()
}
