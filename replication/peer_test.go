package replication

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

// start describes a leader of term 5 whose log has the given terms.
func start(terms ...uint64) *messages.ReplicationStart {
	s := &messages.ReplicationStart{Term: 5, Peer: 2, FirstIndex: 1, LastIndex: uint64(len(terms)), NextIndex: uint64(len(terms)) + 1}
	for k, t := range terms {
		if n := len(s.TermRuns); n == 0 || s.TermRuns[n-1].Term != t {
			s.TermRuns = append(s.TermRuns, &messages.TermRun{FirstIndex: uint64(k + 1), Term: t})
		}
	}
	s.DurableIndex = s.LastIndex
	return s
}

func newPeer(t *testing.T, cfg Config, st *messages.ReplicationStart) *Peer {
	t.Helper()
	p, err := NewPeer(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sends(out PeerOutput) []*messages.StreamSend {
	var s []*messages.StreamSend
	for _, m := range out.Stream {
		if v, ok := m.(*messages.StreamSend); ok {
			s = append(s, v)
		}
	}
	return s
}

func ack(p *Peer, s *messages.StreamSend) {
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, To: 1, Term: 5},
		Success: true, MatchIndex: s.Hi - 1, Seq: s.Seq})
}

func entries(from uint64, n int, term uint64, size int) []*messages.Entry {
	var out []*messages.Entry
	for k := range n {
		out = append(out, &messages.Entry{Index: from + uint64(k), Term: term, Data: make([]byte, size)})
	}
	return out
}

// A peer starts by probing with one request at a time, and streams once
// the match point is known.
func TestPeerProbeThenPipeline(t *testing.T) {
	p := newPeer(t, Config{MaxAppendEntries: 2}, start(1, 1, 5))
	out := p.Output()
	ss := sends(out)
	if len(ss) != 1 || ss[0].PrevLogIndex != 3 || ss[0].PrevLogTerm != 5 || ss[0].Lo != 4 || ss[0].Hi != 4 {
		t.Fatalf("probe %v", ss)
	}
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(4, 5, 5, 1)})
	if ss := sends(p.Output()); len(ss) != 0 {
		t.Fatalf("sent %v while the probe is unanswered", ss)
	}
	ack(p, ss[0])
	out = p.Output()
	ss = sends(out)
	if p.Mode() != messages.ReplicationMode_REPLICATION_MODE_PIPELINE || len(ss) != 3 {
		t.Fatalf("mode %v, sends %v", p.Mode(), ss)
	}
	for k, want := range [][2]uint64{{4, 6}, {6, 8}, {8, 9}} {
		if ss[k].Lo != want[0] || ss[k].Hi != want[1] || ss[k].PrevLogIndex != want[0]-1 {
			t.Errorf("send %d: %d..%d prev %d, want %v", k, ss[k].Lo, ss[k].Hi, ss[k].PrevLogIndex, want)
		}
	}
	if out.Report == nil || out.Report.MatchIndex != 3 || !out.Report.Heard {
		t.Fatalf("report %v", out.Report)
	}
}

// The in-flight window is bounded in requests and in bytes.
func TestPeerWindow(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want int
	}{
		{"by requests", Config{MaxAppendEntries: 1, MaxInflight: 3}, 3},
		{"by bytes", Config{MaxAppendEntries: 1, MaxInflight: 100, MaxInflightBytes: 250}, 3},
		{"unbounded enough", Config{MaxAppendEntries: 1, MaxInflight: 100}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeer(t, tt.cfg, start(5))
			ack(p, sends(p.Output())[0])
			_ = p.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(2, 10, 5, 100)})
			ss := sends(p.Output())
			if len(ss) != tt.want {
				t.Fatalf("%d sends in flight, want %d", len(ss), tt.want)
			}
			if tt.want < 10 {
				ack(p, ss[0])
				if more := sends(p.Output()); len(more) != 1 {
					t.Fatalf("after one answer %d more sends, want 1", len(more))
				}
			}
		})
	}
}

// Sends are cut at MaxAppendBytes when entry sizes are known.
func TestPeerBatchBytes(t *testing.T) {
	p := newPeer(t, Config{MaxAppendEntries: 100, MaxAppendBytes: 350}, start(5))
	ack(p, sends(p.Output())[0])
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(2, 8, 5, 100)})
	for _, s := range sends(p.Output()) {
		if n := s.Hi - s.Lo; n > 3 || n == 0 {
			t.Fatalf("batch of %d entries of ~100 bytes under a 350-byte limit", n)
		}
	}
}

// A rejection's conflict hint moves next to the match point in one round
// trip per term; next never drops below match+1 nor stays above the
// rejected prev.
func TestPeerConflictHint(t *testing.T) {
	// Leader log: 1 1 2 2 2 4 4 5; the probe after index 8 is rejected.
	tests := []struct {
		name          string
		conflictIndex uint64
		conflictTerm  uint64
		wantNext      uint64
	}{
		{"follower log shorter", 4, 0, 4},
		{"leader has the follower's term", 3, 2, 6},
		{"leader lacks the follower's term", 6, 3, 6},
		{"hint beyond the rejected prev", 20, 0, 8},
		{"hint of index 0", 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPeer(t, Config{}, start(1, 1, 2, 2, 2, 4, 4, 5))
			probe := sends(p.Output())[0]
			_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: probe.Seq,
				ConflictIndex: tt.conflictIndex, ConflictTerm: tt.conflictTerm})
			ss := sends(p.Output())
			if p.Next() != tt.wantNext || len(ss) != 1 || ss[0].Lo != tt.wantNext {
				t.Fatalf("next %d, sends %v, want next %d", p.Next(), ss, tt.wantNext)
			}
		})
	}
}

// PITFALLS #7: match moves only to what the answered request carried, and
// answers to superseded requests or of another term change nothing.
func TestPeerMatchOnlyFromAnsweredRequest(t *testing.T) {
	p := newPeer(t, Config{}, start(5, 5, 5))
	probe := sends(p.Output())[0]
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: probe.Seq,
		Success: true, MatchIndex: 99})
	if p.Match() != 3 {
		t.Fatalf("match %d, want 3 (the probe's prev)", p.Match())
	}
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: 77,
		Success: true, MatchIndex: 50})
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 4}, Seq: probe.Seq,
		Success: true, MatchIndex: 50})
	if p.Match() != 3 {
		t.Fatalf("match %d after stray answers", p.Match())
	}
}

// A failed send sends the peer back to probing after an exponential backoff.
func TestPeerBackoff(t *testing.T) {
	p := newPeer(t, Config{RetryTicks: 1, MaxRetryTicks: 4}, start(5))
	var gaps []int
	for k := range 4 {
		out := p.Output()
		s := sends(out)
		if len(s) != 1 {
			t.Fatalf("sends %v", s)
		}
		if k == 1 && (out.Report == nil || out.Report.Reachable) {
			t.Fatalf("report %v after a failure, want unreachable", out.Report)
		}
		_ = p.HandleFailure(&messages.StreamFailure{Term: 5, Seq: s[0].Seq, Unreachable: true})
		ticks := 0
		for len(p.out.Stream) == 0 {
			p.Tick()
			ticks++
			if ticks > 10 {
				t.Fatal("no retry")
			}
		}
		gaps = append(gaps, ticks)
	}
	if want := []int{1, 2, 4, 4}; !equalInts(gaps, want) {
		t.Fatalf("backoff %v, want %v", gaps, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A peer that needs purged entries gets the snapshot; once installed it
// matches the snapshot it was sent, even if a newer one exists by then.
func TestPeerSnapshot(t *testing.T) {
	st := start(5, 5, 5, 5, 5)
	st.FirstIndex = 4
	st.TermRuns = []*messages.TermRun{{FirstIndex: 4, Term: 5}}
	st.Snapshot = &messages.SnapshotMeta{Index: 3, Term: 5, Id: "s3"}
	st.NextIndex = 2 // the peer is far behind
	p := newPeer(t, Config{}, st)
	out := p.Output()
	if len(out.Stream) != 1 || p.Mode() != messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT {
		t.Fatalf("mode %v, stream %v", p.Mode(), out.Stream)
	}
	ss, ok := out.Stream[0].(*messages.StreamSendSnapshot)
	if !ok || ss.Meta.Id != "s3" {
		t.Fatalf("sent %v", out.Stream[0])
	}
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Snapshot: &messages.SnapshotMeta{Index: 5, Term: 5, Id: "s5"}})
	_ = p.HandleSnapshotResponse(&messages.InstallSnapshotResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: ss.Seq, Done: true})
	if p.Match() != 3 || p.Next() != 4 {
		t.Fatalf("after the snapshot match %d next %d, want 3 and 4", p.Match(), p.Next())
	}
}

// The leader replaces its snapshot while the stream is still reading the
// one it was sending: the read fails COMPACTED. That send is over, and the
// peer must get the newer snapshot rather than wait for the old send forever.
func TestPeerSnapshotReplacedWhileSending(t *testing.T) {
	st := start(5, 5, 5, 5, 5)
	st.FirstIndex = 4
	st.TermRuns = []*messages.TermRun{{FirstIndex: 4, Term: 5}}
	st.Snapshot = &messages.SnapshotMeta{Index: 3, Term: 5, Id: "s3"}
	st.NextIndex = 2
	p := newPeer(t, Config{}, st)
	first, ok := p.Output().Stream[0].(*messages.StreamSendSnapshot)
	if !ok {
		t.Fatal("no snapshot sent")
	}
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Snapshot: &messages.SnapshotMeta{Index: 5, Term: 5, Id: "s5"}})
	p.Output()
	_ = p.HandleFailure(&messages.StreamFailure{Term: 5, Seq: first.Seq,
		Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED}})
	var again *messages.StreamSendSnapshot
	for _, m := range p.Output().Stream {
		if s, ok := m.(*messages.StreamSendSnapshot); ok {
			again = s
		}
	}
	if again == nil || again.Meta.GetId() != "s5" {
		t.Fatalf("after the snapshot being sent was replaced, sent %v; want the newer snapshot s5", again)
	}
}

// Heartbeats bypass a full window, carry a commit capped at the peer's
// match, and acknowledged rounds are reported for read index.
func TestPeerHeartbeat(t *testing.T) {
	p := newPeer(t, Config{MaxAppendEntries: 1, MaxInflight: 1}, start(5, 5))
	ack(p, sends(p.Output())[0]) // match 2
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(3, 3, 5, 1), Commit: 4})
	p.Output()
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Heartbeat: true, ReadSeq: 9, Commit: 4})
	ss := sends(p.Output())
	if len(ss) != 1 || !ss[0].Heartbeat || ss[0].ReadSeq != 9 || ss[0].Commit != 2 {
		t.Fatalf("heartbeat %v, want one with read_seq 9 and commit capped at 2", ss)
	}
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: ss[0].Seq,
		Success: true, Heartbeat: true, ReadSeq: 9})
	if r := p.Output().Report; r == nil || r.ReadSeq != 9 || !r.Heard {
		t.Fatalf("report %v", r)
	}
}

// A newer term in an answer is reported so that the core steps down.
func TestPeerHigherTerm(t *testing.T) {
	p := newPeer(t, Config{}, start(5))
	p.Output()
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 7}})
	if r := p.Output().Report; r == nil || r.HigherTerm != 7 {
		t.Fatalf("report %v", r)
	}
}

// A batch the stream cut short moves next to the end of what arrived.
func TestPeerShortBatch(t *testing.T) {
	p := newPeer(t, Config{MaxAppendEntries: 4}, start(5))
	ack(p, sends(p.Output())[0])
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(2, 8, 5, 1)})
	ss := sends(p.Output())
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: ss[0].Seq,
		Success: true, MatchIndex: 3})
	if p.Match() != 3 || p.Next() <= 3 {
		t.Fatalf("match %d next %d", p.Match(), p.Next())
	}
	next := sends(p.Output())
	if len(next) == 0 || next[0].Lo != 4 {
		t.Fatalf("resend %v, want from 4", next)
	}
}

// A heartbeat answer while a probe is unanswered re-sends the probe: a lost
// probe costs a heartbeat interval, not a request timeout.
func TestPeerReprobeOnHeartbeat(t *testing.T) {
	p := newPeer(t, Config{}, start(5, 5))
	first := sends(p.Output())[0]
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Heartbeat: true, ReadSeq: 1})
	hb := sends(p.Output())[0]
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: hb.Seq,
		Success: true, Heartbeat: true, ReadSeq: 1})
	again := sends(p.Output())
	if len(again) != 1 || again[0].Seq == first.Seq || again[0].Lo != first.Lo {
		t.Fatalf("after a heartbeat answer %v, want a new probe like %v", again, first)
	}
}

// A heartbeat answered while a probe with entries is unanswered re-sends
// the probe only when the answer shows the probe lost: a peer that already
// holds the probe's entries is writing them to its disk, and a heartbeat
// sent before the probe says nothing of it.
func TestPeerReprobeOnlyWhenTheProbeIsLost(t *testing.T) {
	for _, tc := range []struct {
		name       string
		before     bool   // the heartbeat was sent before the probe
		lastLog    uint64 // the peer's last index in the heartbeat's answer
		wantResend bool
	}{
		{name: "peer lacks the probe's entries", lastLog: 1, wantResend: true},
		{name: "peer holds some of them", lastLog: 3, wantResend: true},
		{name: "peer holds them all (being synced)", lastLog: 4},
		{name: "heartbeat older than the probe", before: true, lastLog: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := start(5, 5, 5, 5)
			st.NextIndex = 2
			p := newPeer(t, Config{}, st)
			probe := sends(p.Output())[0]
			if probe.Lo != 2 || probe.Hi != 5 {
				t.Fatalf("probe %v, want entries 2..4", probe)
			}
			_ = p.Notify(&messages.ReplicationNotify{Term: 5, Heartbeat: true, ReadSeq: 1})
			hb := sends(p.Output())[0]
			seq := hb.Seq
			if tc.before {
				seq = probe.Seq - 1
			}
			_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: seq,
				Success: true, Heartbeat: true, ReadSeq: 1, LastLogIndex: tc.lastLog})
			again := sends(p.Output())
			if resent := len(again) == 1 && again[0].Lo == probe.Lo && again[0].Seq != probe.Seq; resent != tc.wantResend {
				t.Fatalf("after the heartbeat's answer: sends %v, want a re-sent probe: %v", again, tc.wantResend)
			}
			if !tc.wantResend {
				// The probe's own answer still counts.
				ack(p, probe)
				if p.Match() != 4 {
					t.Fatalf("match %d after the probe's answer, want 4", p.Match())
				}
			}
		})
	}
}
