package coretest

import (
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
)

// store is a node's disk: hard state, the log after the latest snapshot
// base, and snapshot bodies.
type store struct {
	hs    *messages.HardState
	snap  *messages.SnapshotMeta // latest snapshot
	base  uint64                 // index before ents[0]
	ents  []*messages.Entry
	snaps map[string][]byte
}

func (s *store) snapIndex() uint64 { return s.snap.GetIndex() }

func (s *store) first() uint64 { return s.base + 1 }

func (s *store) last() uint64 { return s.base + uint64(len(s.ents)) }

func (s *store) entry(i uint64) *messages.Entry {
	if i <= s.base || i > s.last() {
		return nil
	}
	return s.ents[i-s.base-1]
}

func (s *store) apply(tb TB, ap *messages.StorageAppend) {
	if sn := ap.GetSnapshot(); sn != nil {
		if e := s.entry(sn.GetIndex()); e != nil && e.GetTerm() == sn.GetTerm() {
			s.ents = append([]*messages.Entry(nil), s.ents[sn.GetIndex()-s.base:]...)
		} else {
			s.ents = nil
		}
		s.base = sn.GetIndex()
		s.snap = sn
	}
	if len(ap.GetEntries()) > 0 {
		first := ap.GetEntries()[0].GetIndex()
		if first <= s.base || first > s.last()+1 {
			tb.Fatalf("coretest: append at %d to a log of %d..%d", first, s.first(), s.last())
		}
		s.ents = append(s.ents[:first-s.base-1], ap.GetEntries()...)
	}
	if hs := ap.GetHardState(); hs != nil {
		s.hs = proto.Clone(hs).(*messages.HardState)
	}
}

func (s *store) purge(i uint64) {
	if i <= s.base {
		return
	}
	i = min(i, s.last())
	s.ents = append([]*messages.Entry(nil), s.ents[i-s.base:]...)
	s.base = i
}

func (s *store) read(r *messages.StorageReadEntries) *messages.StorageEntries {
	out := &messages.StorageEntries{GroupId: r.GetGroupId(), Seq: r.GetSeq()}
	if r.GetLo() <= s.base {
		out.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED, Message: "compacted"}
		return out
	}
	var bytes uint64
	for i := r.GetLo(); i < r.GetHi() && i <= s.last(); i++ {
		e := s.entry(i)
		bytes += uint64(proto.Size(e))
		if len(out.Entries) > 0 && r.GetMaxBytes() > 0 && bytes > r.GetMaxBytes() {
			break
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

func (s *store) readChunk(r *messages.StorageReadSnapshotChunk) *messages.StorageSnapshotChunk {
	data, ok := s.snaps[r.GetSnapshotId()]
	out := &messages.StorageSnapshotChunk{GroupId: r.GetGroupId(), Seq: r.GetSeq(), Offset: r.GetOffset()}
	if !ok || r.GetOffset() > uint64(len(data)) {
		out.Error = &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: "no such snapshot or offset"}
		return out
	}
	end := min(uint64(len(data)), r.GetOffset()+max(r.GetMaxBytes(), 1))
	out.Data = data[r.GetOffset():end]
	out.Done = end == uint64(len(data))
	out.Meta = s.snap
	return out
}

func (s *store) initialState(cfg core.Config) *messages.InitialState {
	st := &messages.InitialState{
		Identity:   &messages.NodeIdentity{ClusterId: cfg.ClusterID, GroupId: cfg.GroupID, NodeId: cfg.ID},
		HardState:  proto.Clone(s.hs).(*messages.HardState),
		Snapshot:   s.snap,
		FirstIndex: s.first(),
		LastIndex:  s.last(),
	}
	for _, e := range s.ents {
		if n := len(st.TermRuns); n == 0 || st.TermRuns[n-1].GetTerm() != e.GetTerm() {
			st.TermRuns = append(st.TermRuns, &messages.TermRun{FirstIndex: e.GetIndex(), Term: e.GetTerm()})
		}
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			st.Memberships = append(st.Memberships, &messages.MembershipEntry{Index: e.GetIndex(), Term: e.GetTerm(), Membership: e.GetMembership()})
		}
	}
	return st
}
