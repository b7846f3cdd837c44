package actors

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// The storage actor is the only part of a node that touches its store.
// Writes (appends, purges, snapshot bodies) go to one writer goroutine that
// takes everything waiting and hands the appends to LogStore.Append as one
// batch, so concurrent appends share one fsync (group commit). Reads are
// answered from the actor's own mailbox run and never wait for a write: the
// store serves durable data to concurrent readers.
//
// Replies go to the requester's PID as plain messages (no envelope), so they
// keep their mailbox priority and overtake client requests there.
type storageActor struct {
	group       uint64
	st          store.Store
	w           *storageWriter
	log         *slog.Logger
	flushQueued bool
}

// StorageStats counts the storage writer's work since the node started.
type StorageStats struct {
	// Batches is the number of LogStore.Append calls (one fsync each) and
	// Appends the StorageAppend requests they carried: Appends/Batches is
	// the group commit factor.
	Batches uint64
	Appends uint64
	// Failed is set once an append failed; the node takes no more writes.
	Failed bool
}

// storageWriter runs the writes of one node on its own goroutine.
type storageWriter struct {
	system *actor.ActorSystem
	group  uint64
	st     store.Store
	log    *slog.Logger

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []storageJob
	closed bool
	done   chan struct{}

	// Owned by the writer goroutine.
	failed  error
	writers map[string]*snapshotIn

	batches, appends atomic.Uint64
	isFailed         atomic.Bool

	// inline runs the work on the storage actor's own mailbox runs.
	inline bool
}

// storageJob is one unit of writer work: an append, or a function run in
// order with the appends around it.
type storageJob struct {
	append  *messages.StorageAppend
	replyTo *actor.PID
	run     func(w *storageWriter)
}

// snapshotIn is a snapshot body being received from a leader.
type snapshotIn struct {
	meta *messages.SnapshotMeta
	w    store.SnapshotWriter
	next uint64
}

// newStorageWriter starts the writer goroutine; with inline set there is
// none, and the storage actor runs the queued work itself (see
// Config.InlineStorage).
func newStorageWriter(system *actor.ActorSystem, group uint64, st store.Store, log *slog.Logger, inline bool) *storageWriter {
	w := &storageWriter{system: system, group: group, st: st, log: log, done: make(chan struct{}), writers: map[string]*snapshotIn{},
		inline: inline}
	w.cond = sync.NewCond(&w.mu)
	if inline {
		close(w.done)
	} else {
		go w.loop()
	}
	return w
}

// take returns the queued work and empties the queue.
func (w *storageWriter) take() []storageJob {
	w.mu.Lock()
	defer w.mu.Unlock()
	jobs := w.queue
	w.queue = nil
	return jobs
}

func (w *storageWriter) submit(j storageJob) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.queue = append(w.queue, j)
	w.cond.Signal()
	return true
}

// close finishes the queued work and ends the goroutine.
func (w *storageWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Signal()
	w.mu.Unlock()
	<-w.done
	if w.inline {
		w.runJobs(w.take())
		for _, s := range w.writers {
			_ = s.w.Abort()
		}
	}
}

func (w *storageWriter) stats() StorageStats {
	return StorageStats{Batches: w.batches.Load(), Appends: w.appends.Load(), Failed: w.isFailed.Load()}
}

func (w *storageWriter) loop() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.cond.Wait()
		}
		jobs := w.queue
		w.queue = nil
		closed := w.closed
		w.mu.Unlock()
		w.runJobs(jobs)
		if closed && len(jobs) == 0 {
			for _, s := range w.writers {
				_ = s.w.Abort()
			}
			return
		}
	}
}

// runJobs runs jobs in order; each run of consecutive appends is one
// LogStore.Append call.
func (w *storageWriter) runJobs(jobs []storageJob) {
	for i := 0; i < len(jobs); {
		if jobs[i].append == nil {
			jobs[i].run(w)
			i++
			continue
		}
		j := i
		for j < len(jobs) && jobs[j].append != nil {
			j++
		}
		w.appendBatch(jobs[i:j])
		i = j
	}
}

func (w *storageWriter) appendBatch(jobs []storageJob) {
	reqs := make([]*messages.StorageAppend, len(jobs))
	for i, j := range jobs {
		reqs[i] = j.append
	}
	var results []*messages.StorageAppendResult
	if w.failed == nil {
		var err error
		results, err = w.st.Append(reqs)
		w.batches.Add(1)
		w.appends.Add(uint64(len(reqs)))
		if err != nil {
			// A failed write or sync may have lost data that was reported
			// written before: the store is failed for good and so are we.
			w.failed = err
			w.isFailed.Store(true)
			w.log.Error("storage failed; the node takes no more writes", slog.Any("err", err))
		}
	}
	for i, j := range jobs {
		var res *messages.StorageAppendResult
		if w.failed != nil || i >= len(results) || results[i] == nil {
			res = &messages.StorageAppendResult{GroupId: j.append.GetGroupId(), Seq: j.append.GetSeq(),
				Error: failedError(w.failed)}
		} else {
			res = results[i]
		}
		w.system.Root.Send(j.replyTo, res)
	}
}

func failedError(err error) *messages.Error {
	if err == nil {
		return newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "append returned no result")
	}
	return &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Message: err.Error()}
}

// writeChunk stores one chunk of a snapshot that a leader sends.
func (w *storageWriter) writeChunk(m *messages.StorageWriteSnapshotChunk) *messages.StorageSnapshotChunkWritten {
	res := &messages.StorageSnapshotChunkWritten{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Meta: m.GetMeta()}
	if w.failed != nil {
		res.Error = failedError(w.failed)
		return res
	}
	id := m.GetMeta().GetId()
	in := w.writers[id]
	if m.GetOffset() == 0 && in != nil {
		// A restart from the beginning: drop what we had.
		_ = in.w.Abort()
		delete(w.writers, id)
		in = nil
	}
	if in == nil {
		if m.GetOffset() != 0 {
			res.NextOffset = 0
			return res
		}
		sw, err := w.st.CreateSnapshot(m.GetGroupId(), m.GetMeta())
		if err != nil {
			res.Error = store.ToProto(err)
			return res
		}
		// Only the latest snapshot matters: abandon older ones.
		for oid, o := range w.writers {
			_ = o.w.Abort()
			delete(w.writers, oid)
		}
		in = &snapshotIn{meta: m.GetMeta(), w: sw}
		w.writers[id] = in
	}
	if m.GetOffset() != in.next {
		res.NextOffset = in.next
		return res
	}
	if _, err := in.w.Write(m.GetData()); err != nil {
		_ = in.w.Abort()
		delete(w.writers, id)
		res.Error = store.ToProto(err)
		return res
	}
	in.next += uint64(len(m.GetData()))
	res.NextOffset = in.next
	if m.GetDone() {
		delete(w.writers, id)
		meta, err := in.w.Install()
		if err != nil {
			res.Error = store.ToProto(err)
			return res
		}
		res.Meta = meta
		res.Done = true
	}
	return res
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

func newStorageActor(w *storageWriter, group uint64, st store.Store, log *slog.Logger) *storageActor {
	return &storageActor{group: group, st: st, w: w, log: log}
}

func (s *storageActor) Receive(ctx actor.Context) {
	s.receive(ctx)
	if s.w.inline && !s.flushQueued {
		s.w.mu.Lock()
		queued := len(s.w.queue) > 0
		s.w.mu.Unlock()
		if queued {
			// Everything queued in the mailbox before the flush shares one
			// Append, as the writer goroutine would batch it.
			s.flushQueued = true
			ctx.Send(ctx.Self(), &storageFlush{})
		}
	}
}

func (s *storageActor) receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *storageFlush:
		s.flushQueued = false
		s.w.runJobs(s.w.take())
	case *messages.StorageAppend:
		if !s.w.submit(storageJob{append: m, replyTo: ctx.Sender()}) {
			s.reply(ctx, ctx.Sender(), &messages.StorageAppendResult{GroupId: m.GetGroupId(), Seq: m.GetSeq(),
				Error: newError(messages.ErrorCode_ERROR_CODE_STOPPED, "storage stopped")})
		}
	case *storageLoad:
		group, replyTo := s.group, m.replyTo
		s.w.submit(storageJob{run: func(w *storageWriter) {
			st, err := w.st.Load(group)
			res := &messages.StorageLoadResult{GroupId: group, State: st, Error: store.ToProto(err)}
			if err == nil && st != nil && st.Identity == nil {
				st.Identity = w.st.Identity()
			}
			w.system.Root.Send(replyTo, res)
		}})
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
		s.w.submit(storageJob{run: func(w *storageWriter) {
			first, err := w.st.Purge(m.GetGroupId(), m.GetIndex())
			if replyTo != nil {
				w.system.Root.Send(replyTo, &messages.StoragePurgeResult{GroupId: m.GetGroupId(), FirstIndex: first, Error: store.ToProto(err)})
			}
		}})
	case *messages.StorageWriteSnapshotChunk:
		replyTo := ctx.Sender()
		s.w.submit(storageJob{run: func(w *storageWriter) {
			res := w.writeChunk(m)
			if replyTo != nil {
				w.system.Root.Send(replyTo, res)
			}
		}})
	case *storageBuildSnapshot:
		s.w.submit(storageJob{run: func(w *storageWriter) {
			meta, err := writeSnapshot(w.st, s.group, m.meta, m.body)
			w.system.Root.Send(m.replyTo, &messages.SnapshotBuilt{Seq: m.seq, Meta: meta, Error: store.ToProto(err)})
		}})
	case *actor.Stopping:
		// Finish what was asked: every append queued gets its result.
		s.w.close()
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
