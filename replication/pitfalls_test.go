package replication

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

// PITFALLS #7: a refused append never moves match, whatever match index
// the answer claims; only an accepted one does, to what its request
// carried.
func TestPeerRefusalNeverMovesMatch(t *testing.T) {
	p := newPeer(t, Config{}, start(5, 5, 5, 5))
	probe := sends(p.Output())[0]
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: probe.Seq,
		MatchIndex: 4, ConflictIndex: 3})
	if p.Match() != 0 {
		t.Fatalf("match %d after a refusal, want 0", p.Match())
	}
	again := sends(p.Output())
	if len(again) != 1 || again[0].PrevLogIndex != 2 {
		t.Fatalf("after the refusal sent %v, want a probe after index 2", again)
	}
	_ = p.HandleAppendResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: again[0].Seq,
		Success: true, MatchIndex: 99})
	if want := again[0].Hi - 1; p.Match() != want {
		t.Fatalf("match %d after the accepted probe, want %d (what it carried)", p.Match(), want)
	}
}

// PITFALLS #18: a snapshot transfer does not hold up heartbeats. While a
// peer is sent a snapshot its heartbeats still go out, at once, both while
// the stream waits for storage to read the next chunk and while a chunk
// waits for its answer.
func TestHeartbeatsFlowDuringASnapshotTransfer(t *testing.T) {
	st := start(5, 5, 5, 5, 5)
	st.FirstIndex = 4
	st.TermRuns = []*messages.TermRun{{FirstIndex: 4, Term: 5}}
	st.Snapshot = &messages.SnapshotMeta{Index: 3, Term: 5, Id: "s3", Size: 8}
	st.NextIndex = 2
	p := newPeer(t, Config{}, st)
	out := p.Output()
	if p.Mode() != messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT || len(out.Stream) != 1 {
		t.Fatalf("mode %v, stream %v; want a snapshot send", p.Mode(), out.Stream)
	}
	_ = p.Notify(&messages.ReplicationNotify{Term: 5, Heartbeat: true, ReadSeq: 4})
	hb := sends(p.Output())
	if len(hb) != 1 || !hb[0].Heartbeat || hb[0].ReadSeq != 4 {
		t.Fatalf("peer sending a snapshot sent %v for a heartbeat round, want the heartbeat", hb)
	}

	s := newStream(t, Config{SnapshotChunkBytes: 4})
	_ = s.SendSnapshot(out.Stream[0].(*messages.StreamSendSnapshot))
	so := s.Output()
	if len(so.Storage) != 1 || len(so.Send) != 0 {
		t.Fatalf("stream output %v, want a chunk read", so)
	}
	heartbeat := func(seq uint64) {
		t.Helper()
		_ = s.Send(&messages.StreamSend{Term: 5, Seq: seq, Heartbeat: true, ReadSeq: seq})
		a := appends(s.Output())
		if len(a) != 1 || !a[0].Heartbeat || a[0].ReadSeq != seq {
			t.Fatalf("heartbeat %d: sent %v, want it at once", seq, a)
		}
	}
	heartbeat(10) // the chunk is being read
	rd := so.Storage[0].(*messages.StorageReadSnapshotChunk)
	_ = s.HandleSnapshotChunk(&messages.StorageSnapshotChunk{Seq: rd.Seq, Offset: 0, Data: []byte("abcd")})
	if sent := s.Output().Send; len(sent) != 1 {
		t.Fatalf("sent %v, want the first chunk", sent)
	}
	heartbeat(11) // the chunk waits for its answer
}
