package replication

import (
	"testing"

	"github.com/raftor/raftor/messages"
)

func newStream(t *testing.T, cfg Config) *Stream {
	t.Helper()
	s, err := NewStream(StreamConfig{Config: cfg, ClusterID: "c", GroupID: 1, Leader: 1, Peer: 2, Term: 5})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appends(out StreamOutput) []*messages.AppendEntriesRequest {
	var a []*messages.AppendEntriesRequest
	for _, m := range out.Send {
		if v, ok := m.(*messages.AppendEntriesRequest); ok {
			a = append(a, v)
		}
	}
	return a
}

// Recent entries come from the cache; older ones from a storage read.
func TestStreamCacheAndStorage(t *testing.T) {
	s := newStream(t, Config{})
	s.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(10, 5, 5, 10), DurableIndex: 9})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, PrevLogIndex: 11, PrevLogTerm: 5, Lo: 12, Hi: 15, Commit: 9})
	out := s.Output()
	if a := appends(out); len(a) != 1 || len(a[0].Entries) != 3 || a[0].Entries[0].Index != 12 || a[0].LeaderCommit != 9 ||
		a[0].Header.To != 2 || a[0].Header.Term != 5 || len(out.Storage) != 0 {
		t.Fatalf("from the cache: %v storage %v", out.Send, out.Storage)
	}
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 2, PrevLogIndex: 4, PrevLogTerm: 5, Lo: 5, Hi: 12})
	out = s.Output()
	if len(out.Send) != 0 || len(out.Storage) != 1 {
		t.Fatalf("old entries: send %v storage %v", out.Send, out.Storage)
	}
	r := out.Storage[0].(*messages.StorageReadEntries)
	if r.Lo != 5 || r.Hi != 10 {
		t.Fatalf("read %d..%d, want 5..10 (the cache has the rest)", r.Lo, r.Hi)
	}
	_ = s.HandleEntries(&messages.StorageEntries{Seq: r.Seq, Entries: entries(5, 5, 5, 10)})
	if a := appends(s.Output()); len(a) != 1 || a[0].PrevLogIndex != 4 || len(a[0].Entries) != 5 {
		t.Fatalf("after the read %v", a)
	}
}

// A batch is cut at MaxAppendBytes, but always carries one entry.
func TestStreamCutsByBytes(t *testing.T) {
	tests := []struct {
		name     string
		limit    uint64
		size     int
		wantEnts int
	}{
		{"fits", 10000, 100, 5},
		{"cut", 250, 100, 2},
		{"one oversized entry still goes", 10, 100, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream(t, Config{MaxAppendBytes: tt.limit})
			s.Notify(&messages.ReplicationNotify{Term: 5, Entries: entries(1, 5, 5, tt.size)})
			_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, Lo: 1, Hi: 6})
			if a := appends(s.Output()); len(a) != 1 || len(a[0].Entries) != tt.wantEnts {
				t.Fatalf("sent %v", a)
			}
		})
	}
}

// A request without an answer within RequestTimeoutTicks is reported as
// failed and unreachable; an answered one is not.
func TestStreamTimeout(t *testing.T) {
	s := newStream(t, Config{RequestTimeoutTicks: 3})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, Lo: 1, Hi: 1})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 2, Lo: 1, Hi: 1})
	s.Output()
	_ = s.HandleResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: 2})
	s.Output()
	s.Tick()
	s.Tick()
	if out := s.Output(); len(out.ToPeer) != 0 {
		t.Fatalf("failure reported early: %v", out.ToPeer)
	}
	s.Tick()
	out := s.Output()
	if len(out.ToPeer) != 1 {
		t.Fatalf("to peer %v", out.ToPeer)
	}
	f := out.ToPeer[0].(*messages.StreamFailure)
	if f.Seq != 1 || !f.Unreachable {
		t.Fatalf("failure %v", f)
	}
}

// Heartbeats go out at once, whatever is pending on storage.
func TestStreamHeartbeatNeverWaits(t *testing.T) {
	s := newStream(t, Config{})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, Lo: 1, Hi: 100})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 2, Heartbeat: true, ReadSeq: 4, Commit: 3})
	a := appends(s.Output())
	if len(a) != 1 || !a[0].Heartbeat || a[0].ReadSeq != 4 || a[0].LeaderCommit != 3 {
		t.Fatalf("sent %v", a)
	}
}

// A snapshot goes in chunks, resuming at the offset the receiver names, and
// only the final answer reaches the peer.
func TestStreamSnapshotChunks(t *testing.T) {
	s := newStream(t, Config{SnapshotChunkBytes: 4})
	meta := &messages.SnapshotMeta{Index: 9, Term: 5, Id: "s", Size: 10}
	_ = s.SendSnapshot(&messages.StreamSendSnapshot{Term: 5, Seq: 7, Meta: meta})
	body := []byte("0123456789")
	var offsets []uint64
	for range 10 {
		out := s.Output()
		if len(out.ToPeer) > 0 {
			r := out.ToPeer[0].(*messages.InstallSnapshotResponse)
			if !r.Done || len(offsets) != 3 {
				t.Fatalf("final answer %v after chunks at %v", r, offsets)
			}
			return
		}
		if len(out.Storage) == 1 {
			rd := out.Storage[0].(*messages.StorageReadSnapshotChunk)
			end := min(rd.Offset+rd.MaxBytes, 10)
			_ = s.HandleSnapshotChunk(&messages.StorageSnapshotChunk{Seq: rd.Seq, Offset: rd.Offset, Data: body[rd.Offset:end], Done: end == 10})
			continue
		}
		req := out.Send[0].(*messages.InstallSnapshotRequest)
		offsets = append(offsets, req.Offset)
		next := req.Offset + uint64(len(req.Data))
		_ = s.HandleResponse(&messages.InstallSnapshotResponse{Header: &messages.Header{From: 2, Term: 5}, Seq: 7,
			SnapshotId: "s", NextOffset: next, Done: req.Done})
	}
	t.Fatal("snapshot never finished")
}

// A storage read that finds the entries purged is reported as COMPACTED,
// which sends the peer to snapshot mode.
func TestStreamCompactedRead(t *testing.T) {
	s := newStream(t, Config{})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, Lo: 1, Hi: 3})
	r := s.Output().Storage[0].(*messages.StorageReadEntries)
	_ = s.HandleEntries(&messages.StorageEntries{Seq: r.Seq, Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED}})
	out := s.Output()
	f := out.ToPeer[0].(*messages.StreamFailure)
	if f.Error.Code != messages.ErrorCode_ERROR_CODE_COMPACTED {
		t.Fatalf("failure %v", f)
	}
	p := newPeer(t, Config{}, &messages.ReplicationStart{Term: 5, Peer: 2, FirstIndex: 1, LastIndex: 0,
		Snapshot: &messages.SnapshotMeta{Index: 0}})
	_ = p.HandleFailure(f)
	if p.Mode() != messages.ReplicationMode_REPLICATION_MODE_SNAPSHOT {
		t.Fatalf("mode %v", p.Mode())
	}
}

// An answer from an older term never settles a request of this term, even
// with the same seq: the request still times out and is retried.
func TestStreamIgnoresOlderTermAnswers(t *testing.T) {
	s := newStream(t, Config{RequestTimeoutTicks: 1})
	_ = s.Send(&messages.StreamSend{Term: 5, Seq: 1, Lo: 1, Hi: 1})
	s.Output()
	if err := s.HandleResponse(&messages.AppendEntriesResponse{Header: &messages.Header{From: 2, Term: 4}, Seq: 1, Success: true}); err == nil {
		t.Fatal("older-term answer accepted")
	}
	if out := s.Output(); len(out.ToPeer) != 0 {
		t.Fatalf("forwarded %v", out.ToPeer)
	}
	s.Tick()
	if out := s.Output(); len(out.ToPeer) != 1 {
		t.Fatalf("request not timed out: %v", out.ToPeer)
	}
}

// The last chunk of a snapshot is answered only after the peer restored
// its state machine from it, so it waits finalChunkTimeoutFactor request
// timeouts before the stream gives up on it; any other chunk waits one.
func TestStreamFinalSnapshotChunkWaitsForTheRestore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		final bool
		want  int // ticks until the failure
	}{
		{name: "a middle chunk", want: 10},
		{name: "the last chunk", final: true, want: 10 * finalChunkTimeoutFactor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, Config{SnapshotChunkBytes: 4, RequestTimeoutTicks: 10})
			meta := &messages.SnapshotMeta{Index: 9, Term: 5, Id: "s", Size: 8}
			_ = s.SendSnapshot(&messages.StreamSendSnapshot{Term: 5, Seq: 7, Meta: meta})
			rd := s.Output().Storage[0].(*messages.StorageReadSnapshotChunk)
			offset := uint64(0)
			if tc.final {
				offset = 4
			}
			_ = s.HandleSnapshotChunk(&messages.StorageSnapshotChunk{Seq: rd.Seq, Offset: offset, Data: []byte("abcd"), Done: tc.final})
			if sent := s.Output().Send; len(sent) != 1 {
				t.Fatalf("sent %v, want one chunk", sent)
			}
			for tick := 1; tick <= 10*finalChunkTimeoutFactor+1; tick++ {
				s.Tick()
				out := s.Output()
				if len(out.ToPeer) == 0 {
					continue
				}
				f, ok := out.ToPeer[0].(*messages.StreamFailure)
				if !ok || f.GetSeq() != 7 {
					t.Fatalf("after %d ticks: %v, want a failure of seq 7", tick, out.ToPeer)
				}
				if tick != tc.want {
					t.Fatalf("the chunk failed after %d ticks, want %d", tick, tc.want)
				}
				return
			}
			t.Fatal("the chunk never timed out")
		})
	}
}
