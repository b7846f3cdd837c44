package sim

import (
	"errors"
	"testing"

	"github.com/raftor/raftor/messages"
)

const (
	follower = messages.Role_ROLE_FOLLOWER
	leader   = messages.Role_ROLE_LEADER
)

// world is a tiny cluster of disks whose views a test steps through.
type world struct {
	t     *testing.T
	disks map[uint64]*Disk
	inc   map[uint64]uint64
	c     *Checker
}

func newWorld(t *testing.T, ids ...uint64) *world {
	w := &world{t: t, disks: map[uint64]*Disk{}, inc: map[uint64]uint64{}, c: NewChecker()}
	for _, id := range ids {
		w.disks[id] = NewDisk(&messages.NodeIdentity{NodeId: id})
		w.inc[id] = 1
	}
	return w
}

func (w *world) log(id uint64, entries ...*messages.Entry) {
	w.t.Helper()
	must(w.t, w.disks[id].Append(nil, entries))
}

// see builds the view of one node and observes it.
func (w *world) see(id, term uint64, role messages.Role, commit, applied uint64) error {
	return w.c.Observe([]NodeView{{
		ID: id, Incarnation: w.inc[id], Up: true, Term: term, Role: role,
		Commit: commit, Applied: applied, Disk: w.disks[id],
	}})
}

func wantViolation(t *testing.T, err error, prop string) {
	t.Helper()
	var v *Violation
	if !errors.As(err, &v) || v.Property != prop {
		t.Fatalf("got %v, want a %q violation", err, prop)
	}
}

// TestCheckerCatches feeds the checker histories that break each property
// (and one that only looks like it does).
func TestCheckerCatches(t *testing.T) {
	tests := []struct {
		name string
		prop string
		run  func(w *world) error
	}{
		{"two leaders in one term", PropElectionSafety, func(w *world) error {
			if err := w.see(1, 2, leader, 0, 0); err != nil {
				return err
			}
			// n1 stepped down, but term 2 had its leader already.
			if err := w.see(1, 3, follower, 0, 0); err != nil {
				return err
			}
			return w.see(2, 2, leader, 0, 0)
		}},
		{"a leader truncating its own log", PropLeaderAppendOnly, func(w *world) error {
			w.log(1, ent(1, 2, "a"), ent(2, 2, "b"))
			if err := w.see(1, 2, leader, 0, 0); err != nil {
				return err
			}
			w.log(1, ent(2, 2, "c"))
			return w.see(1, 2, leader, 0, 0)
		}},
		{"same index and term, different entries", PropLogMatching, func(w *world) error {
			w.log(1, ent(1, 1, "a"))
			w.log(2, ent(1, 1, "b"))
			if err := w.see(1, 1, follower, 0, 0); err != nil {
				return err
			}
			return w.see(2, 1, follower, 0, 0)
		}},
		{"same index and term, different history before it", PropLogMatching, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 3, "x"))
			w.log(2, ent(1, 2, "b"), ent(2, 3, "x"))
			if err := w.see(1, 3, follower, 0, 0); err != nil {
				return err
			}
			return w.see(2, 3, follower, 0, 0)
		}},
		{"a new leader missing a committed entry", PropLeaderCompleteness, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 1, "b"))
			w.log(2, ent(1, 1, "a"))
			if err := w.see(1, 1, follower, 2, 0); err != nil {
				return err
			}
			return w.see(2, 2, leader, 1, 0)
		}},
		{"a stale candidate may win without an entry committed in a later term", "", func(w *world) error {
			w.log(1, ent(1, 3, "a"))
			if err := w.see(1, 3, follower, 1, 0); err != nil {
				return err
			}
			// n2 wins term 2 with votes cast before term 3 began.
			return w.see(2, 2, leader, 0, 0)
		}},
		{"an acknowledged write missing from a new leader", PropAckedWriteLost, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 1, "b"))
			w.log(2, ent(1, 1, "a"))
			if err := w.c.Acked(1, 1, 2, 1, EntrySum(ent(2, 1, "b"))); err != nil {
				return err
			}
			return w.see(2, 2, leader, 1, 0)
		}},
		{"two nodes committing different entries at one index", PropCommitted, func(w *world) error {
			w.log(1, ent(1, 1, "a"))
			w.log(2, ent(1, 2, "b"))
			if err := w.see(1, 1, follower, 1, 0); err != nil {
				return err
			}
			return w.see(2, 2, follower, 1, 0)
		}},
		{"two nodes applying different entries at one index", PropStateMachineSafety, func(w *world) error {
			if err := w.c.Applied(1, 1, ent(1, 1, "a")); err != nil {
				return err
			}
			return w.c.Applied(2, 2, ent(1, 2, "b"))
		}},
		{"a leader committing an older term's entry by counting (figure 8)", PropCommitRule, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 2, "b"), ent(3, 3, "blank"))
			if err := w.see(1, 3, leader, 1, 0); err != nil {
				return err
			}
			return w.see(1, 3, leader, 2, 0)
		}},
		{"a leader committing its own term's entry, and older ones with it", "", func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 2, "b"), ent(3, 3, "blank"))
			if err := w.see(1, 3, leader, 1, 0); err != nil {
				return err
			}
			return w.see(1, 3, leader, 3, 0)
		}},
		{"commit moving backwards", PropCommitMonotonic, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 1, "b"))
			if err := w.see(1, 1, follower, 2, 0); err != nil {
				return err
			}
			return w.see(1, 1, follower, 1, 0)
		}},
		{"commit past the log", PropCommitted, func(w *world) error {
			w.log(1, ent(1, 1, "a"))
			return w.see(1, 1, follower, 2, 0)
		}},
		{"applied moving backwards", PropAppliedMonotonic, func(w *world) error {
			w.log(1, ent(1, 1, "a"), ent(2, 1, "b"))
			if err := w.see(1, 1, follower, 2, 2); err != nil {
				return err
			}
			return w.see(1, 1, follower, 2, 1)
		}},
		{"term moving backwards", PropTermMonotonic, func(w *world) error {
			if err := w.see(1, 5, follower, 0, 0); err != nil {
				return err
			}
			return w.see(1, 4, follower, 0, 0)
		}},
		{"a durable term lost in a crash", PropTermMonotonic, func(w *world) error {
			must(w.t, w.disks[1].Append(&messages.HardState{Term: 3}, nil))
			w.disks[1].Sync()
			if err := w.see(1, 3, follower, 0, 0); err != nil {
				return err
			}
			w.disks[1].durable.HardState = &messages.HardState{Term: 2} // a broken disk
			w.inc[1]++
			return w.see(1, 2, follower, 0, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(newWorld(t, 1, 2))
			if tt.prop == "" {
				if err != nil {
					t.Fatalf("Raft allows this, but the checker said %v", err)
				}
				return
			}
			wantViolation(t, err, tt.prop)
		})
	}
}

// What Raft allows must pass: a follower's uncommitted suffix replaced by a
// new leader, volatile state restarting after a crash, a log rebased on a
// snapshot.
func TestCheckerAccepts(t *testing.T) {
	w := newWorld(t, 1, 2)
	w.log(1, ent(1, 1, "a"), ent(2, 1, "b"))
	w.log(2, ent(1, 1, "a"))
	must(t, w.see(1, 1, leader, 1, 1))
	must(t, w.see(2, 1, follower, 1, 1))
	must(t, w.c.Applied(1, 1, ent(1, 1, "a")))
	must(t, w.c.Applied(2, 1, ent(1, 1, "a")))

	// n2 leads term 2 without the uncommitted b; n1's b is replaced.
	w.log(2, ent(2, 2, "blank"))
	must(t, w.see(2, 2, leader, 1, 1))
	must(t, w.see(1, 2, follower, 1, 1))
	w.log(1, ent(2, 2, "blank"))
	must(t, w.see(1, 2, follower, 2, 1))
	must(t, w.see(2, 2, leader, 2, 2))

	// n1 crashes and restarts with commit and applied from scratch.
	w.disks[1].Sync()
	w.disks[1].Crash(0)
	w.inc[1]++
	must(t, w.see(1, 2, follower, 0, 0))

	// n2 snapshots at 2 and purges its log; becoming leader again in term 3
	// it still holds everything committed (inside its snapshot).
	must(t, w.disks[2].SaveSnapshot(&messages.SnapshotMeta{Index: 2, Term: 2, Id: "s"}, nil))
	must(t, w.disks[2].Purge(2))
	w.log(2, ent(3, 3, "blank3"))
	must(t, w.see(2, 3, leader, 2, 2))
	if w.c.MaxCommitted() != 2 || w.c.Leaders() != 3 {
		t.Fatalf("max committed %d, leaders %d; want 2 and 3", w.c.MaxCommitted(), w.c.Leaders())
	}
}
