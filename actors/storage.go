package actors

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// The storage actor is the only part of a node that touches its store.
// Writes (appends, purges, snapshot bodies) go to the node's lane of a
// storage writer (writer.go): a goroutine that takes everything waiting
// and hands the appends to LogStore.Append as one batch, so concurrent
// appends share one fsync (group commit). The writer is the node's own, or
// a SharedWriter that batches the appends of every group on one store.
// Reads are answered from the actor's own mailbox run and never wait for a
// write: the store serves durable data to concurrent readers.
//
// Replies go to the requester's PID as plain messages (no envelope), so they
// keep their mailbox priority and overtake client requests there.
type storageActor struct {
	group       uint64
	st          store.Store
	lane        *storageLane
	log         *slog.Logger
	flushQueued bool
}

// Messages between the local actors of a node that carry Go values (a
// state machine's snapshot stream) and so are not protobuf. They never
// leave the node.

// storageBuildSnapshot asks the storage writer to store a snapshot body
// that the apply actor took from the state machine.
type storageBuildSnapshot struct {
	seq     uint64
	meta    *messages.SnapshotMeta
	body    snapshotSource
	replyTo *actor.PID
}

// storageLoad asks the storage writer for the group's state after every
// write queued before it: a restarted RaftCore gets the results of the
// previous incarnation's appends before its load result, and can drop them.
type storageLoad struct {
	replyTo *actor.PID
}

// storageStop makes the storage actor finish its queued writes.
type storageStop struct{}

// storageFlush runs the queued work of an inline storage actor.
type storageFlush struct{}

func newStorageActor(lane *storageLane, group uint64, st store.Store, log *slog.Logger) *storageActor {
	return &storageActor{group: group, st: st, lane: lane, log: log}
}

func (s *storageActor) Receive(ctx actor.Context) {
	s.receive(ctx)
	if s.lane.w.inline && !s.flushQueued && s.lane.hasQueued() {
		// Everything queued in the mailbox before the flush shares one
		// Append, as the writer goroutine would batch it.
		s.flushQueued = true
		ctx.Send(ctx.Self(), &storageFlush{})
	}
}

// stoppedStorage is the error of work asked for after the writer closed.
func stoppedStorage() *messages.Error {
	return newError(messages.ErrorCode_ERROR_CODE_STOPPED, "storage stopped")
}

func (s *storageActor) receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *storageFlush:
		s.flushQueued = false
		s.lane.w.drain()
	case *messages.StorageAppend:
		if !s.lane.submit(storageJob{append: m, replyTo: ctx.Sender()}) {
			s.reply(ctx, ctx.Sender(), &messages.StorageAppendResult{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Error: stoppedStorage()})
		}
	case *storageLoad:
		group, replyTo := s.group, m.replyTo
		ok := s.lane.submit(storageJob{run: func(l *storageLane) {
			st, err := l.w.st.Load(group)
			res := &messages.StorageLoadResult{GroupId: group, State: st, Error: store.ToProto(err)}
			if err == nil && st != nil && st.Identity == nil {
				st.Identity = l.w.st.Identity()
			}
			l.system.Root.Send(replyTo, res)
		}})
		if !ok {
			s.reply(ctx, replyTo, &messages.StorageLoadResult{GroupId: group, Error: stoppedStorage()})
		}
	case *messages.StorageLoad:
		st, err := s.st.Load(m.GetGroupId())
		s.reply(ctx, ctx.Sender(), &messages.StorageLoadResult{GroupId: m.GetGroupId(), State: st, Error: store.ToProto(err)})
	case *messages.StorageReadEntries:
		ents, err := s.st.Entries(m.GetGroupId(), m.GetLo(), m.GetHi(), m.GetMaxBytes())
		s.reply(ctx, ctx.Sender(), &messages.StorageEntries{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Entries: ents, Error: store.ToProto(err)})
	case *messages.StorageReadSnapshotChunk:
		meta, data, done, err := s.st.ReadSnapshotChunk(m.GetGroupId(), m.GetSnapshotId(), m.GetOffset(), m.GetMaxBytes())
		s.reply(ctx, ctx.Sender(), &messages.StorageSnapshotChunk{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Meta: meta,
			Offset: m.GetOffset(), Data: data, Done: done, Error: store.ToProto(err)})
	case *messages.StoragePurge:
		replyTo := ctx.Sender()
		ok := s.lane.submit(storageJob{run: func(l *storageLane) {
			first, err := l.w.st.Purge(m.GetGroupId(), m.GetIndex())
			if replyTo != nil {
				l.system.Root.Send(replyTo, &messages.StoragePurgeResult{GroupId: m.GetGroupId(), FirstIndex: first, Error: store.ToProto(err)})
			}
		}})
		if !ok && replyTo != nil {
			s.reply(ctx, replyTo, &messages.StoragePurgeResult{GroupId: m.GetGroupId(), Error: stoppedStorage()})
		}
	case *messages.StorageWriteSnapshotChunk:
		replyTo := ctx.Sender()
		ok := s.lane.submit(storageJob{run: func(l *storageLane) {
			res := l.writeChunk(m)
			if replyTo != nil {
				l.system.Root.Send(replyTo, res)
			}
		}})
		if !ok && replyTo != nil {
			s.reply(ctx, replyTo, &messages.StorageSnapshotChunkWritten{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Meta: m.GetMeta(),
				Error: stoppedStorage()})
		}
	case *storageBuildSnapshot:
		group := s.group
		ok := s.lane.submit(storageJob{slow: true, run: func(l *storageLane) {
			meta, err := writeSnapshot(l.w.st, group, m.meta, m.body)
			l.system.Root.Send(m.replyTo, &messages.SnapshotBuilt{Seq: m.seq, Meta: meta, Error: store.ToProto(err)})
		}})
		if !ok {
			_ = m.body.Close()
			s.reply(ctx, m.replyTo, &messages.SnapshotBuilt{Seq: m.seq, Error: stoppedStorage()})
		}
	case *actor.Stopping:
		// Finish what was asked: every append queued gets its result.
		s.lane.close()
	}
}

// reply answers a request without an envelope, so that the reply keeps its
// mailbox priority.
func (s *storageActor) reply(ctx actor.Context, to *actor.PID, msg any) {
	if to == nil {
		s.log.Debug("storage: request without a sender dropped its reply")
		return
	}
	ctx.Send(to, msg)
}
