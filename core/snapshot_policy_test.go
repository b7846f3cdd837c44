package core

import (
	"fmt"
	"testing"

	"github.com/raftor/raftor/messages"
)

// policyStep is one event of a snapshot policy story: the apply actor
// reports progress (applied, bytes), or the outstanding build finishes at
// built (failed when fail is set). want says whether the core must ask
// for a snapshot right after it; due is the BytesSinceSnapshot it must
// then show.
type policyStep struct {
	applied, bytes uint64
	built          uint64
	fail           bool
	want           bool
	due            uint64
}

func pApply(index, bytes uint64, want bool, due uint64) policyStep {
	return policyStep{applied: index, bytes: bytes, want: want, due: due}
}

func pBuilt(index, due uint64) policyStep { return policyStep{built: index, due: due} }

func pFailed(due uint64) policyStep { return policyStep{fail: true, due: due} }

// The automatic snapshot policy: a snapshot is asked for once the entries
// applied since the latest one reach SnapshotEntries entries or
// SnapshotBytes bytes, whichever comes first; never twice at once.
func TestSnapshotPolicy(t *testing.T) {
	tests := []struct {
		name           string
		entries, bytes uint64
		story          []policyStep
	}{
		{"bytes alone fire", 0, 100, []policyStep{
			pApply(3, 60, false, 60),
			pApply(4, 40, true, 100),
		}},
		{"entries alone fire, however few bytes", 5, 1 << 30, []policyStep{
			pApply(3, 10, false, 10),
			pApply(5, 10, true, 20),
		}},
		{"entries fire with the byte policy off", 5, 0, []policyStep{
			pApply(4, 1<<20, false, 1<<20),
			pApply(5, 1, true, 1<<20+1),
		}},
		{"bytes fire first when entries are large", 1000, 100, []policyStep{
			pApply(3, 150, true, 150),
		}},
		{"0 and 0 is off", 0, 0, []policyStep{
			pApply(4, 1<<30, false, 1<<30),
			pApply(12, 1<<30, false, 2<<30),
		}},
		{"the count restarts after a snapshot", 0, 100, []policyStep{
			pApply(5, 100, true, 100),
			pBuilt(5, 0),
			pApply(6, 50, false, 50),
			pApply(7, 50, true, 100),
		}},
		{"no second build while one is in progress", 0, 100, []policyStep{
			pApply(4, 100, true, 100),
			pApply(5, 500, false, 600),
			pApply(6, 500, false, 1100),
			pBuilt(4, 1000),
			pApply(7, 1, true, 1001),
		}},
		{"bytes applied during a build count after its index", 0, 100, []policyStep{
			// The build lands at 4 while entries 5 and 6 (80 bytes) were
			// applied in the meantime: they belong to the next snapshot.
			pApply(4, 100, true, 100),
			pApply(6, 80, false, 180),
			pBuilt(4, 80),
			pApply(7, 20, true, 100),
		}},
		{"a build that lands past the request counts from there", 0, 100, []policyStep{
			pApply(4, 100, true, 100),
			pApply(5, 30, false, 130),
			pApply(6, 30, false, 160),
			pBuilt(5, 30),
			pApply(7, 69, false, 99),
			pApply(8, 1, true, 100),
		}},
		{"a repeated report counts nothing", 0, 100, []policyStep{
			pApply(4, 60, false, 60),
			pApply(4, 60, false, 60),
			pApply(3, 60, false, 60),
			pApply(5, 40, true, 100),
		}},
		{"a failed build is asked for again", 0, 100, []policyStep{
			pApply(4, 100, true, 100),
			pFailed(100),
			pApply(5, 1, true, 101),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCore(t, 1, []uint64{1}, withConfig(func(cfg *Config) {
				cfg.SnapshotEntries, cfg.SnapshotBytes = tt.entries, tt.bytes
			}))
			c.Campaign()
			c.flush()
			// Entry 1 is the membership, 2 the leader's blank entry.
			for h := Handle(1); h <= 10; h++ {
				c.Propose(h, &messages.ClientWriteRequest{Data: []byte("x")})
			}
			c.take()
			var seq uint64
			for i, s := range tt.story {
				var err error
				switch {
				case s.fail:
					err = c.step(&messages.SnapshotBuilt{Seq: seq, Error: errOf(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "disk full")})
					if err == nil {
						t.Fatalf("step %d: a failed build was not reported", i)
					}
					err = nil
				case s.built > 0:
					err = c.step(&messages.SnapshotBuilt{Seq: seq, Meta: &messages.SnapshotMeta{Index: s.built, Term: 2,
						Id: fmt.Sprintf("s%d", s.built), Membership: c.Status().Membership, MembershipIndex: 1}})
				default:
					err = c.step(&messages.ApplyResult{AppliedIndex: s.applied, AppliedTerm: 2, AppliedBytes: s.bytes})
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				var builds []*messages.BuildSnapshot
				for _, a := range c.take().Apply {
					if b, ok := a.(*messages.BuildSnapshot); ok {
						builds = append(builds, b)
					}
				}
				if got := len(builds) > 0; got != s.want || len(builds) > 1 {
					t.Fatalf("step %d (%+v): asked for %d snapshots, want asked=%v", i, s, len(builds), s.want)
				}
				if len(builds) == 1 {
					seq = builds[0].Seq
				}
				if got := c.Status().BytesSinceSnapshot; got != s.due {
					t.Fatalf("step %d (%+v): %d bytes due, want %d", i, s, got, s.due)
				}
			}
		})
	}
}

// A follower that installs a snapshot from its leader holds the snapshot's
// state: the bytes it applied before no longer count toward the next one.
func TestSnapshotPolicyRestartsAfterInstall(t *testing.T) {
	c := newTestCore(t, 1, three, withTerms(1, 2, 2, 2), withHardState(2, 0, 4),
		withConfig(func(cfg *Config) { cfg.SnapshotBytes = 100 }))
	c.mustStep(&messages.ApplyResult{AppliedIndex: 4, AppliedTerm: 2, AppliedBytes: 90})
	if got := c.Status().BytesSinceSnapshot; got != 90 {
		t.Fatalf("%d bytes due before the install, want 90", got)
	}
	c.install(snapMeta("s6", 6, 2))
	var restore *messages.RestoreSnapshot
	if rs := restores(c.take()); len(rs) == 1 {
		restore = rs[0]
	} else {
		t.Fatalf("restores %v", rs)
	}
	c.mustStep(&messages.SnapshotRestored{Seq: restore.Seq, Meta: restore.Meta})
	if got := c.Status().BytesSinceSnapshot; got != 0 {
		t.Fatalf("%d bytes due after the install, want 0", got)
	}
	c.mustStep(appendReq(2, 1, 2, 6, 2, 8, ents(7, 2, 2)...))
	c.mustStep(&messages.ApplyResult{AppliedIndex: 8, AppliedTerm: 2, AppliedBytes: 90})
	for _, a := range c.take().Apply {
		if _, ok := a.(*messages.BuildSnapshot); ok {
			t.Fatal("snapshot asked for with 90 bytes applied since the install")
		}
	}
}
