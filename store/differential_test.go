package store_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// TestPebbleAndMemoryAgree drives both stores with the same random
// operations (appends that extend or truncate, hard states that may break
// the rules, snapshots, purges, installs, crashes) and checks after every
// step that they answer alike: same results, same Load, same entries.
func TestPebbleAndMemoryAgree(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			ph, mh := &pebbleHarness{}, &memHarness{}
			ps, ms := ph.Open(t), mh.Open(t)
			term := map[uint64]uint64{1: 1, 2: 1}
			outcome := map[string]int{}
			defer func() { t.Logf("outcomes: %v", outcome) }()
			for step := 0; step < 150; step++ {
				group := uint64(1 + r.IntN(2))
				last, _ := ms.LastIndex(group)
				first, _ := ms.FirstIndex(group)
				what := ""
				var pe, me error
				switch op := r.IntN(100); {
				case op < 55:
					// Append at a random place near the end, sometimes in a
					// new term, sometimes with a hard state that moves commit.
					if r.IntN(4) == 0 {
						term[group]++
					}
					at := last + 1
					if last >= first && r.IntN(3) == 0 {
						at = first + r.Uint64N(last-first+1)
					}
					n := 1 + r.IntN(4)
					ents := make([]*messages.Entry, n)
					for i := range ents {
						kind := messages.EntryKind_ENTRY_KIND_NORMAL
						var m *messages.Membership
						if r.IntN(8) == 0 {
							kind, m = messages.EntryKind_ENTRY_KIND_MEMBERSHIP, &messages.Membership{Voters: []uint64{1, uint64(2 + r.IntN(3))}}
						}
						ents[i] = &messages.Entry{Index: at + uint64(i), Term: term[group], Kind: kind, Membership: m, Data: []byte(fmt.Sprint(step, i))}
					}
					var hs *messages.HardState
					if r.IntN(2) == 0 {
						hs = &messages.HardState{Term: term[group], Vote: uint64(r.IntN(2)), Commit: r.Uint64N(last + 2)}
					}
					req := &messages.StorageAppend{GroupId: group, Seq: uint64(step), HardState: hs, Entries: ents}
					what = fmt.Sprintf("append %d..%d term %d hs %v", at, at+uint64(n)-1, term[group], hs)
					pr, perr := ps.Append([]*messages.StorageAppend{req})
					mr, merr := ms.Append([]*messages.StorageAppend{proto.Clone(req).(*messages.StorageAppend)})
					pe, me = resultErr(pr, perr), resultErr(mr, merr)
					if perr == nil && merr == nil && !proto.Equal(pr[0], mr[0]) {
						if pr[0].GetError().GetCode() != mr[0].GetError().GetCode() || pr[0].LastIndex != mr[0].LastIndex {
							t.Fatalf("step %d %s: pebble %v, memory %v", step, what, pr[0], mr[0])
						}
					}
				case op < 70:
					// A snapshot of the local log, committed or installed.
					idx := r.Uint64N(last + 3)
					tm, terr := ms.Term(group, idx)
					if terr != nil {
						tm = term[group]
					}
					install := r.IntN(3) == 0
					what = fmt.Sprintf("snapshot %d/%d install %v", idx, tm, install)
					finish := func(s store.Store) error {
						w, err := s.CreateSnapshot(group, &messages.SnapshotMeta{Index: idx, Term: tm})
						if err != nil {
							return err
						}
						w.Write([]byte(what))
						if install {
							_, err = w.Install()
						} else {
							_, err = w.Commit()
						}
						return err
					}
					pe, me = finish(ps), finish(ms)
				case op < 85:
					idx := first + r.Uint64N(last-first+3)
					what = fmt.Sprintf("purge %d", idx)
					_, pe = ps.Purge(group, idx)
					_, me = ms.Purge(group, idx)
				case op < 93:
					what = "crash"
					ps, ms = ph.Crash(t), mh.Crash(t)
				default:
					what = "reopen"
					ps, ms = ph.Reopen(t), mh.Reopen(t)
				}
				outcome[fmt.Sprintf("%s %v", strings.Fields(what)[0], store.CodeOf(me))]++
				if store.CodeOf(pe) != store.CodeOf(me) {
					t.Fatalf("step %d %s: pebble %v, memory %v", step, what, pe, me)
				}
				for g := uint64(1); g <= 2; g++ {
					pst, perr := ps.Load(g)
					mst, merr := ms.Load(g)
					if perr != nil || merr != nil {
						t.Fatalf("step %d %s: load: %v / %v", step, what, perr, merr)
					}
					// Snapshot ids are the stores' own.
					if pst.Snapshot != nil && mst.Snapshot != nil {
						mst.Snapshot.Id, mst.Snapshot.Checksum = pst.Snapshot.Id, pst.Snapshot.Checksum
					}
					mst.Identity.Incarnation = pst.Identity.Incarnation
					if !proto.Equal(pst, mst) {
						t.Fatalf("step %d %s: group %d loads differ:\npebble %v\nmemory %v", step, what, g, pst, mst)
					}
					if mst.LastIndex >= mst.FirstIndex {
						pents, perr := ps.Entries(g, mst.FirstIndex, mst.LastIndex+1, 0)
						ments, merr := ms.Entries(g, mst.FirstIndex, mst.LastIndex+1, 0)
						if perr != nil || merr != nil || len(pents) != len(ments) {
							t.Fatalf("step %d %s: entries: %d, %v / %d, %v", step, what, len(pents), perr, len(ments), merr)
						}
						for i := range pents {
							if !proto.Equal(pents[i], ments[i]) {
								t.Fatalf("step %d %s: entry %d differs: %v / %v", step, what, pents[i].Index, pents[i], ments[i])
							}
							// The term index (runs) agrees with the entries.
							if tm, err := ps.Term(g, pents[i].Index); err != nil || tm != pents[i].Term {
								t.Fatalf("step %d %s: term(%d) = %d, %v; the entry has %d", step, what, pents[i].Index, tm, err, pents[i].Term)
							}
							if i > 0 && (pents[i].Index != pents[i-1].Index+1 || pents[i].Term < pents[i-1].Term) {
								t.Fatalf("step %d %s: log is not contiguous at %d", step, what, pents[i].Index)
							}
						}
					}
				}
			}
		})
	}
}

// resultErr is the batch error, or else the single request's error.
func resultErr(res []*messages.StorageAppendResult, err error) error {
	if err != nil {
		return err
	}
	if e := res[0].GetError(); e != nil {
		return &store.Error{Code: e.Code, Msg: e.Message}
	}
	return nil
}
