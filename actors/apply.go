package actors

import (
	"cmp"
	"io"
	"log/slog"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// The apply actor feeds committed entries, in log order, to the user's
// state machine and answers the clients that wait for them with the state
// machine's results. Committed entries that RaftCore still had in memory
// come with ApplyCommitted; the others it reads from the storage actor (a
// message and its reply, never a blocking call). ApplyCommitted messages
// that queue up while it works are applied as one batch.

// applyCommitted is ApplyCommitted with the PIDs of its waiters: RaftCore
// maps the core's handles to the PIDs that wait, so that the apply actor
// answers them directly.
type applyCommitted struct {
	msg     *messages.ApplyCommitted
	waiters map[uint64]applyTarget // handle -> caller
}

// applyTarget is a caller waiting for a write and the write's RequestID.
type applyTarget struct {
	pid     *actor.PID
	request *messages.RequestID
}

// applyInit tells the apply actor, when RaftCore (re)starts, the
// configurations of the log, so that it can describe the snapshots it
// takes. The apply actor answers with an ApplyResult of its progress.
type applyInit struct {
	snapshot    *messages.SnapshotMeta
	memberships []*messages.MembershipEntry
}

// applyFlush applies what ApplyCommitted messages delivered so far.
type applyFlush struct{}

// applyStop asks the apply actor to answer every waiter it still holds
// before the node stops it; applyStopped is its answer.
type applyStop struct{}
type applyStopped struct{}

// applyRestarted tells RaftCore that the apply actor restarted after a
// failure and lost its waiters.
type applyRestarted struct{}

func (*applyRestarted) GetPriority() int8 { return messages.PriorityResult }

type pidWaiter struct {
	term    uint64
	pid     *actor.PID
	request *messages.RequestID
}

type applyActor struct {
	group   uint64
	sm      store.StateMachine
	st      store.Store
	storage *actor.PID
	core    *actor.PID
	log     *slog.Logger
	// starts counts incarnations; a restart loses the waiters.
	starts *int

	applied, appliedTerm uint64
	commit               uint64
	// pending holds committed entries above applied that arrived with
	// ApplyCommitted, by index.
	pending map[uint64]*messages.Entry
	waiters map[uint64][]pidWaiter
	// reading is the seq of the outstanding storage read, 0 for none.
	reading, readSeq uint64
	flushQueued      bool
	failed           *messages.Error
	// reported is the applied index last reported to RaftCore;
	// unreportedBytes the encoded size of the entries applied since, which
	// RaftCore's SnapshotBytes policy counts.
	reported        uint64
	unreportedBytes uint64

	// memberships are the configurations at or below commit, latest last;
	// snapMembership is the one a snapshot at applied would carry.
	memberships []*messages.MembershipEntry
	base        *messages.SnapshotMeta
}

func newApplyActor(group uint64, sm store.StateMachine, st store.Store, storage, core *actor.PID, log *slog.Logger, starts *int) *applyActor {
	a := &applyActor{group: group, sm: sm, st: st, storage: storage, core: core, log: log, starts: starts,
		pending: map[uint64]*messages.Entry{}, waiters: map[uint64][]pidWaiter{}}
	a.applied, a.appliedTerm = sm.LastApplied()
	return a
}

func (a *applyActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		*a.starts++
		// The configurations of the log describe the snapshots we take.
		if st, err := a.st.Load(a.group); err == nil {
			a.base, a.memberships = st.GetSnapshot(), st.GetMemberships()
		}
		if *a.starts > 1 {
			a.log.Warn("apply actor restarted", slog.Uint64("applied", a.applied))
			ctx.Send(a.core, &applyRestarted{})
		}
	case *applyInit:
		// A (re)started RaftCore hands out entries from its snapshot on;
		// progress is reported against what it hands out.
		a.base = m.snapshot
		a.memberships = append([]*messages.MembershipEntry(nil), m.memberships...)
		a.commit, a.reported = 0, 0
	case *applyCommitted:
		a.accept(ctx, m)
		if !a.flushQueued {
			a.flushQueued = true
			ctx.Send(ctx.Self(), &applyFlush{})
		}
	case *applyFlush:
		a.flushQueued = false
		a.run(ctx)
	case *applyStop:
		// Everything RaftCore sent before stopping was applied (it queued
		// ahead of this); the rest will not be, here.
		for idx, ws := range a.waiters {
			for _, w := range ws {
				ctx.Send(w.pid, &messages.ClientWriteResponse{Index: idx, Term: w.term, Request: w.request,
					Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "node stopped before the write was applied; it may still commit")})
			}
		}
		clear(a.waiters)
		ctx.Respond(&applyStopped{})
	case *messages.StorageEntries:
		if m.GetSeq() != a.reading {
			return // an answer to a read we gave up on
		}
		a.reading = 0
		if m.GetError().GetCode() == messages.ErrorCode_ERROR_CODE_COMPACTED && a.catchUpFromSnapshot(ctx) {
			a.run(ctx)
			return
		}
		if m.GetError() != nil {
			a.log.Warn("apply: reading committed entries failed", slog.String("err", m.GetError().GetMessage()))
			ctx.Send(a.core, &messages.ApplyResult{AppliedIndex: a.applied, AppliedTerm: a.appliedTerm, Error: m.GetError()})
			return
		}
		for _, e := range m.GetEntries() {
			if e.GetIndex() > a.applied && e.GetIndex() <= a.commit {
				a.pending[e.GetIndex()] = e
			}
		}
		a.run(ctx)
	case *messages.BuildSnapshot:
		a.buildSnapshot(ctx, m)
	case *messages.RestoreSnapshot:
		ctx.Send(a.core, a.restore(ctx, m))
	}
}

func (a *applyActor) accept(ctx actor.Context, m *applyCommitted) {
	if stagesOn {
		stages.mark(m.msg.GetCommitIndex(), stageWho(ctx.Self().GetId()), "took the commit")
	}
	c := m.msg
	for _, e := range c.GetEntries() {
		if e.GetIndex() > a.applied {
			a.pending[e.GetIndex()] = e
		}
	}
	for _, w := range c.GetWaiters() {
		target, ok := m.waiters[w.GetHandle()]
		if !ok || target.pid == nil {
			continue
		}
		if w.GetIndex() <= a.applied {
			// Applied before we heard of the waiter (a restarted RaftCore):
			// the result is gone, so the outcome is unknown to us.
			ctx.Send(target.pid, &messages.ClientWriteResponse{Index: w.GetIndex(), Term: w.GetTerm(), Request: target.request,
				Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "entry %d was applied before its result was awaited", w.GetIndex())})
			continue
		}
		a.waiters[w.GetIndex()] = append(a.waiters[w.GetIndex()], pidWaiter{term: w.GetTerm(), pid: target.pid, request: target.request})
	}
	if c.GetCommitIndex() > a.commit {
		a.commit = c.GetCommitIndex()
	}
}

// run applies everything committed that it holds, and asks storage for the
// entries it misses.
func (a *applyActor) run(ctx actor.Context) {
	if a.failed != nil {
		return
	}
	for a.applied < a.commit {
		next := a.applied + 1
		if _, ok := a.pending[next]; !ok {
			a.read(ctx, next)
			break
		}
		var batch []*messages.Entry
		for i := next; i <= a.commit; i++ {
			e, ok := a.pending[i]
			if !ok {
				break
			}
			batch = append(batch, e)
			delete(a.pending, i)
		}
		if !a.apply(ctx, batch) {
			return
		}
	}
	// Report progress, never beyond what RaftCore handed out: a state
	// machine that is ahead of a restarted node's commit index (the commit
	// index is persisted lazily) waits for the commit to catch up.
	if done := min(a.applied, a.commit); done > a.reported {
		a.reported = done
		term := a.appliedTerm
		if done != a.applied {
			term = 0
		}
		ctx.Send(a.core, &messages.ApplyResult{AppliedIndex: done, AppliedTerm: term, AppliedBytes: a.unreportedBytes})
		a.unreportedBytes = 0
	}
}

func (a *applyActor) read(ctx actor.Context, lo uint64) {
	if a.reading != 0 {
		return
	}
	hi := a.commit + 1
	for i := lo + 1; i < hi; i++ {
		if _, ok := a.pending[i]; ok {
			hi = i
			break
		}
	}
	if hi-lo > 1024 {
		hi = lo + 1024
	}
	a.readSeq++
	a.reading = a.readSeq
	ctx.Request(a.storage, &messages.StorageReadEntries{GroupId: a.group, Seq: a.reading, Lo: lo, Hi: hi, MaxBytes: 8 << 20})
}

func (a *applyActor) apply(ctx actor.Context, batch []*messages.Entry) bool {
	results, err := a.sm.Apply(batch)
	if err != nil {
		// The state machine cannot go on: stop applying and say why. The
		// waiters' outcome is unknown (the state machine may have applied a
		// prefix before it failed).
		a.failed = newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "state machine: %v", err)
		a.log.Error("apply: state machine failed; the node applies no more entries", slog.Any("err", err))
		for idx, ws := range a.waiters {
			for _, w := range ws {
				ctx.Send(w.pid, &messages.ClientWriteResponse{Index: idx, Term: w.term, Request: w.request,
					Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "state machine failed: %v", err)})
			}
		}
		clear(a.waiters)
		ctx.Send(a.core, &messages.ApplyResult{AppliedIndex: a.applied, AppliedTerm: a.appliedTerm, Error: a.failed})
		return false
	}
	for i, e := range batch {
		// A configuration loaded from the log at this index may have been
		// replaced by a later leader: the committed entry is the truth.
		a.memberships = slices.DeleteFunc(a.memberships, func(m *messages.MembershipEntry) bool { return m.GetIndex() == e.GetIndex() })
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_MEMBERSHIP {
			a.memberships = append(a.memberships, &messages.MembershipEntry{Index: e.GetIndex(), Term: e.GetTerm(), Membership: e.GetMembership()})
			slices.SortFunc(a.memberships, func(x, y *messages.MembershipEntry) int { return cmp.Compare(x.GetIndex(), y.GetIndex()) })
		}
		ws := a.waiters[e.GetIndex()]
		delete(a.waiters, e.GetIndex())
		for _, w := range ws {
			if w.term != e.GetTerm() {
				// Another leader's entry took the index: ours was never
				// committed and never will be.
				ctx.Send(w.pid, &messages.ClientWriteResponse{Index: e.GetIndex(), Term: w.term, Request: w.request,
					Error: newError(messages.ErrorCode_ERROR_CODE_ABORTED, "entry %d was replaced by one of term %d", e.GetIndex(), e.GetTerm())})
				continue
			}
			resp := &messages.ClientWriteResponse{Index: e.GetIndex(), Term: e.GetTerm(), Request: e.GetRequest()}
			if i < len(results) {
				resp.Result = results[i].Data
				resp.TypedResult = results[i].Typed
			}
			if stagesOn {
				stages.mark(e.GetIndex(), stageWho(ctx.Self().GetId()), "answered the write")
			}
			ctx.Send(w.pid, resp)
		}
		a.applied, a.appliedTerm = e.GetIndex(), e.GetTerm()
		a.unreportedBytes += uint64(messages.EntrySize(e))
	}
	a.trimMemberships()
	return true
}

// membershipAt returns the configuration in force at index: the latest
// entry at or below it, else the snapshot's.
func (a *applyActor) membershipAt(index uint64) (*messages.Membership, uint64) {
	for i := len(a.memberships) - 1; i >= 0; i-- {
		if a.memberships[i].GetIndex() <= index {
			return a.memberships[i].GetMembership(), a.memberships[i].GetIndex()
		}
	}
	if a.base != nil {
		return a.base.GetMembership(), a.base.GetMembershipIndex()
	}
	return nil, 0
}

// trimMemberships keeps the configurations at or above the latest one at
// or below applied: older ones can never be asked for again.
func (a *applyActor) trimMemberships() {
	keep := 0
	for i, m := range a.memberships {
		if m.GetIndex() <= a.applied {
			keep = i
		}
	}
	if keep > 0 {
		a.memberships = append(a.memberships[:0], a.memberships[keep:]...)
	}
}

func (a *applyActor) buildSnapshot(ctx actor.Context, m *messages.BuildSnapshot) {
	snap, err := a.sm.Snapshot()
	if err != nil {
		ctx.Send(a.core, &messages.SnapshotBuilt{Seq: m.GetSeq(), Error: newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "state machine snapshot: %v", err)})
		return
	}
	ms, msIndex := a.membershipAt(snap.Index())
	meta := &messages.SnapshotMeta{Index: snap.Index(), Term: snap.Term(), Membership: ms, MembershipIndex: msIndex}
	// The storage writer streams the body while we go on applying.
	ctx.Send(a.storage, &storageBuildSnapshot{seq: m.GetSeq(), meta: meta, body: snap, replyTo: a.core})
}

// openForRestore opens the snapshot meta names. A store keeps only its
// latest snapshot, and a leader that sends the same snapshot twice (its
// stream timed out, or this node restarted mid-transfer) makes the store
// record it twice, under two IDs: the restore asked for under the first may
// find only the second. Snapshots at one index and term hold the same
// state, so the latest one serves when its index and term match.
func (a *applyActor) openForRestore(meta *messages.SnapshotMeta) (store.SnapshotReader, error) {
	r, err := a.st.OpenSnapshot(a.group, meta.GetId())
	if err == nil {
		return r, nil
	}
	// The store keeps only a group's latest snapshot. When a newer one
	// replaced this one (the same snapshot stored twice, or a later install
	// that finished first), restore from it: it holds committed entries
	// only, so it holds everything this one does, and more.
	latest, lerr := a.st.Snapshot(a.group)
	if lerr != nil || latest == nil || latest.GetId() == meta.GetId() ||
		latest.GetIndex() < meta.GetIndex() || latest.GetTerm() < meta.GetTerm() {
		return nil, err
	}
	return a.st.OpenSnapshot(a.group, latest.GetId())
}

// catchUpFromSnapshot restores the state machine from the store's latest
// snapshot when the committed entries it must apply next were compacted
// away: a snapshot installed from the leader compacts the log as it is
// stored, and RaftCore may have handed out those entries (by index; they
// are read from storage here) just before. The snapshot holds committed
// entries only, so it holds them. It reports whether it restored.
func (a *applyActor) catchUpFromSnapshot(ctx actor.Context) bool {
	latest, err := a.st.Snapshot(a.group)
	if err != nil || latest == nil || latest.GetIndex() <= a.applied {
		return false
	}
	a.log.Debug("apply: entries compacted under a snapshot; restoring from it", slog.Uint64("applied", a.applied),
		slog.Uint64("snapshot", latest.GetIndex()))
	// Progress stays reported against what RaftCore handed out.
	commit := a.commit
	res := a.restore(ctx, &messages.RestoreSnapshot{Meta: latest})
	a.commit = commit
	if res.GetError() != nil {
		a.log.Warn("apply: restoring from the snapshot that replaced the entries failed", slog.String("err", res.GetError().GetMessage()))
		return false
	}
	return true
}

func (a *applyActor) restore(ctx actor.Context, m *messages.RestoreSnapshot) *messages.SnapshotRestored {
	res := &messages.SnapshotRestored{Seq: m.GetSeq(), Meta: m.GetMeta()}
	if applied, _ := a.sm.LastApplied(); applied >= m.GetMeta().GetIndex() {
		// The state machine already holds everything the snapshot does
		// (a snapshot adopted late, after the entries it covers were
		// applied): restoring would move it back, and the entries after
		// the snapshot would not be applied again. The store may also have
		// replaced this snapshot with a newer one by now.
		return res
	}
	r, err := a.openForRestore(m.GetMeta())
	if err != nil {
		res.Error = store.ToProto(err)
		return res
	}
	defer r.Close()
	if err := a.sm.Restore(io.NewSectionReader(r, 0, int64(r.Meta().GetSize()))); err != nil {
		res.Error = newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "state machine restore: %v", err)
		return res
	}
	meta := m.GetMeta()
	a.applied, a.appliedTerm = a.sm.LastApplied()
	if a.applied < meta.GetIndex() {
		a.applied, a.appliedTerm = meta.GetIndex(), meta.GetTerm()
	}
	// What RaftCore handed out reaches the snapshot it asked for; a newer
	// snapshot restored in its place may put the state machine further,
	// and the progress reported stays at what RaftCore knows is committed.
	if a.commit < meta.GetIndex() {
		a.commit = meta.GetIndex()
	}
	for i := range a.pending {
		if i <= a.applied {
			delete(a.pending, i)
		}
	}
	for _, idx := range sortedKeys(a.waiters) {
		ws := a.waiters[idx]
		if idx <= a.applied {
			// A snapshot replaced the entries: their results are unknown here.
			for _, w := range ws {
				ctx.Send(w.pid, &messages.ClientWriteResponse{Index: idx, Term: w.term, Request: w.request,
					Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "entry %d was covered by an installed snapshot", idx)})
			}
			delete(a.waiters, idx)
		}
	}
	a.base = meta
	a.memberships = nil
	return res
}

// snapshotSource is what the storage writer copies into a snapshot body.
type snapshotSource = store.StateSnapshot

// writeSnapshot stores body as group's latest snapshot.
func writeSnapshot(st store.Store, group uint64, meta *messages.SnapshotMeta, body snapshotSource) (*messages.SnapshotMeta, error) {
	defer body.Close()
	w, err := st.CreateSnapshot(group, meta)
	if err != nil {
		return nil, err
	}
	if _, err := body.WriteTo(w); err != nil {
		_ = w.Abort()
		return nil, err
	}
	return w.Commit()
}
