package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// SharedWriter is the storage writer of one store, shared by every node
// (one per Raft group) whose log is in that store. It takes the appends
// waiting from all of those groups and writes them with one
// LogStore.Append call, so a member hosting many busy groups pays one
// fsync per round instead of one per group.
//
// Create one per store with NewSharedWriter, hand it to every node on the
// store through Config.SharedWriter, stop those nodes, then Close it. Each
// group's work stays in the order its node asked for it: a group's
// appends complete in order and only once durable, and its loads, purges
// and snapshot writes run after its earlier appends. Groups do not wait
// for each other except to share a batch: the snapshot one group's state
// machine is writing holds up that group's later work only (a snapshot
// received from a leader is written in line, one chunk of at most
// Config.SnapshotChunkBytes at a time).
//
// A failed write or sync fails every append in the batch and every later
// one, of every group, with STORAGE_FAILED: the store may have lost data
// that it had reported written, so no group on it takes more writes.
type SharedWriter struct {
	w *storageWriter
}

// WriterOptions configures a SharedWriter.
type WriterOptions struct {
	// Logger receives the writer's log lines (a failed store); nil
	// discards them.
	Logger *slog.Logger
}

// NewSharedWriter starts the writer of st. It runs one goroutine until
// Close; it does not close st.
func NewSharedWriter(st store.Store, opts WriterOptions) (*SharedWriter, error) {
	if st == nil {
		return nil, errors.New("raftor: NewSharedWriter needs a store")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SharedWriter{w: newStorageWriter(st, log, false)}, nil
}

// Store is the store the writer writes.
func (s *SharedWriter) Store() store.Store { return s.w.st }

// Stats counts the writer's work over all its groups since it started:
// Batches is the LogStore.Append calls (one fsync each), Appends the
// StorageAppend requests of every group they carried.
func (s *SharedWriter) Stats() StorageStats { return s.w.stats() }

// Groups returns the IDs of the groups whose nodes use the writer now.
func (s *SharedWriter) Groups() []uint64 {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	out := make([]uint64, 0, len(s.w.lanes))
	for g := range s.w.lanes {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Close finishes the work queued and stops the writer. Stop the nodes
// using it first: a node still running when the writer closes gets
// STOPPED for every write after it (and stops taking writes), and Close
// reports which groups those were. A node cannot start on a closed
// writer. Close is idempotent.
func (s *SharedWriter) Close() error {
	users := s.w.close()
	if len(users) > 0 {
		return fmt.Errorf("raftor: shared writer closed while groups %v still used it; their writes now fail with STOPPED", users)
	}
	return nil
}

// storageWriter runs the writes of one store on its own goroutine, for one
// node (a private writer) or for every node on the store (a SharedWriter).
// Each node has a lane: its queue of work, in the order the node's storage
// actor submitted it.
//
// Each round the writer takes the queued work of every lane, writes the
// appends at the head of every lane with one Append call, then runs each
// lane's other work up to its next append, and repeats until the work taken
// is done. Work of one lane thus keeps its order; lanes only share batches.
type storageWriter struct {
	st  store.Store
	log *slog.Logger
	// inline runs the work on the storage actor's own mailbox runs (see
	// Config.InlineStorage): no goroutine, and nothing is offloaded.
	inline bool

	mu      sync.Mutex
	work    *sync.Cond // the writer goroutine waits for work
	idle    *sync.Cond // a closing lane waits for its work to finish
	lanes   map[uint64]*storageLane
	ready   []*storageLane // lanes with queued work, not busy
	closed  bool
	helpers int // offloaded jobs running
	done    chan struct{}

	// Owned by the goroutine running the work (the writer's, or the
	// storage actor's when inline).
	failed   error
	batchSeq uint64
	batch    []laneJob
	// appendsBlock says the last Append took long enough to have held
	// its processor in a system call (a sync to disk, not memory).
	appendsBlock bool

	batches, appends atomic.Uint64
	isFailed         atomic.Bool
}

// storageLane is one node's view of a writer: its queue and its counters.
type storageLane struct {
	w      *storageWriter
	group  uint64
	system *actor.ActorSystem
	// owned is set when the node owns the writer and closes it with the lane.
	owned bool

	// Guarded by w.mu.
	queue   []storageJob
	queued  bool // in w.ready
	busy    bool // an offloaded job of the lane runs
	pending int  // jobs submitted and not finished
	closed  bool

	// Owned by whoever runs the lane's jobs (one at a time: see busy).
	snapIn    map[string]*snapshotIn
	lastBatch uint64

	batches, appends atomic.Uint64
}

// storageJob is one unit of writer work: an append, or a function run in
// order with the lane's appends around it.
type storageJob struct {
	append  *messages.StorageAppend
	replyTo *actor.PID
	run     func(l *storageLane)
	// slow marks a job that may take long (a whole snapshot body): a
	// writer with a goroutine runs it on a goroutine of its own, so that
	// only its lane waits for it.
	slow bool
}

type laneJob struct {
	lane *storageLane
	job  storageJob
}

// laneWork is the work of one lane taken for one drain.
type laneWork struct {
	lane *storageLane
	jobs []storageJob
	// finished counts the jobs done (or handed to a helper that accounts
	// for itself).
	finished int
}

// snapshotIn is a snapshot body being received from a leader.
type snapshotIn struct {
	meta *messages.SnapshotMeta
	w    store.SnapshotWriter
	next uint64
}

// StorageStats counts storage writer work. For a node (Node.StorageStats)
// Appends is the node's own StorageAppend requests and Batches the
// LogStore.Append calls (one fsync each) that carried at least one of them:
// Appends/Batches is the group commit factor the node saw. On a
// SharedWriter the fsyncs are shared, so the Batches of the nodes on it add
// up to more than the writer's own (SharedWriter.Stats, which counts every
// Append call once).
type StorageStats struct {
	Batches uint64
	Appends uint64
	// Failed is set once an append failed; the node (every node on a
	// shared writer) takes no more writes.
	Failed bool
}

func newStorageWriter(st store.Store, log *slog.Logger, inline bool) *storageWriter {
	w := &storageWriter{st: st, log: log, inline: inline, lanes: map[uint64]*storageLane{}, done: make(chan struct{})}
	w.work = sync.NewCond(&w.mu)
	w.idle = sync.NewCond(&w.mu)
	if inline {
		close(w.done)
	} else {
		go w.loop()
	}
	return w
}

// register opens the lane of a node of group.
func (w *storageWriter) register(group uint64, system *actor.ActorSystem, owned bool) (*storageLane, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Msg: "the shared writer is closed"}
	}
	if _, dup := w.lanes[group]; dup {
		return nil, fmt.Errorf("raftor: a node of group %d already writes through this writer", group)
	}
	l := &storageLane{w: w, group: group, system: system, owned: owned, snapIn: map[string]*snapshotIn{}}
	w.lanes[group] = l
	return l, nil
}

// submit queues j on the lane; false when the lane or the writer is closed.
func (l *storageLane) submit(j storageJob) bool {
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if l.closed || w.closed {
		return false
	}
	l.queue = append(l.queue, j)
	l.pending++
	if !l.queued && !l.busy {
		l.queued = true
		w.ready = append(w.ready, l)
		w.work.Signal()
	}
	return true
}

// hasQueued reports whether the lane has work no drain took yet.
func (l *storageLane) hasQueued() bool {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return len(l.queue) > 0
}

// close stops taking work for the lane, waits until its queued work is
// done and leaves the writer (closing it when the node owns it). Every
// append queued gets its result.
func (l *storageLane) close() {
	w := l.w
	w.mu.Lock()
	l.closed = true
	w.mu.Unlock()
	if w.inline {
		w.drainAll()
	}
	w.mu.Lock()
	for l.pending > 0 {
		w.idle.Wait()
	}
	if w.lanes[l.group] == l {
		delete(w.lanes, l.group)
	}
	w.mu.Unlock()
	l.abortSnapshots()
	if l.owned {
		w.close()
	}
}

func (l *storageLane) abortSnapshots() {
	for id, s := range l.snapIn {
		_ = s.w.Abort()
		delete(l.snapIn, id)
	}
}

func (l *storageLane) stats() StorageStats {
	return StorageStats{Batches: l.batches.Load(), Appends: l.appends.Load(), Failed: l.w.isFailed.Load()}
}

func (w *storageWriter) stats() StorageStats {
	return StorageStats{Batches: w.batches.Load(), Appends: w.appends.Load(), Failed: w.isFailed.Load()}
}

// close refuses new work, finishes the queued work and ends the writer's
// goroutine. It returns the groups whose lanes were still open.
func (w *storageWriter) close() []uint64 {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	var users []uint64
	for g, l := range w.lanes {
		if !l.closed {
			users = append(users, g)
		}
	}
	w.work.Broadcast()
	w.mu.Unlock()
	slices.Sort(users)
	if w.inline {
		w.drainAll()
	}
	<-w.done
	return users
}

// loop is the writer goroutine.
func (w *storageWriter) loop() {
	defer close(w.done)
	for {
		w.mu.Lock()
		idle := false
		for len(w.ready) == 0 && !(w.closed && w.helpers == 0) {
			idle = true
			w.work.Wait()
		}
		if idle && w.appendsBlock && len(w.ready) > 0 {
			// Woken from idle, and the store's appends block in a sync:
			// yield once before taking the work. The RaftCore that asked
			// for the append readied its replication sends in the same
			// run, and they may be queued on this processor, which the
			// sync would hold in a system call until it returns; yielding
			// lets them leave first, so that the followers write in
			// parallel with this node (a one-client write on a disk: 5 to
			// 10% off its latency). A writer that finds work waiting does
			// not yield.
			w.mu.Unlock()
			runtime.Gosched()
			w.mu.Lock()
		}
		if len(w.ready) == 0 {
			// Closed, and every job done: what a lane still holds is an
			// unfinished snapshot transfer of a node that never closed its
			// lane. Under the lock, which the lane's own close takes too.
			for _, l := range w.lanes {
				l.abortSnapshots()
			}
			w.mu.Unlock()
			return
		}
		work := w.takeLocked()
		w.mu.Unlock()
		w.process(work)
	}
}

// drainAll runs the queued work until none is left (inline writers).
func (w *storageWriter) drainAll() {
	for {
		w.mu.Lock()
		work := w.takeLocked()
		w.mu.Unlock()
		if len(work) == 0 {
			return
		}
		w.process(work)
	}
}

// drain runs the work queued so far (an inline writer's flush).
func (w *storageWriter) drain() {
	w.mu.Lock()
	work := w.takeLocked()
	w.mu.Unlock()
	w.process(work)
}

func (w *storageWriter) takeLocked() []laneWork {
	if len(w.ready) == 0 {
		return nil
	}
	work := make([]laneWork, 0, len(w.ready))
	for _, l := range w.ready {
		l.queued = false
		if l.busy {
			continue // its helper queues it again when done
		}
		work = append(work, laneWork{lane: l, jobs: l.queue})
		l.queue = nil
	}
	clear(w.ready)
	w.ready = w.ready[:0]
	return work
}

// process runs the work taken from the lanes: rounds of one Append for the
// appends at the head of every lane, then each lane's other work up to its
// next append.
func (w *storageWriter) process(work []laneWork) {
	for {
		var size int
		for i := range work {
			lw := &work[i]
			k := 0
			for k < len(lw.jobs) && lw.jobs[k].append != nil {
				n := appendSize(lw.jobs[k].append)
				if len(w.batch) > 0 && size+n > maxBatchBytes {
					// Many groups' big appends: write what is gathered
					// first, so one batch stays bounded in memory and in
					// the time its sync takes.
					w.flushBatch()
					size = 0
				}
				w.batch = append(w.batch, laneJob{lane: lw.lane, job: lw.jobs[k]})
				size += n
				k++
			}
			lw.jobs = lw.jobs[k:]
			lw.finished += k
		}
		w.flushBatch()
		more := false
		for i := range work {
			lw := &work[i]
			for len(lw.jobs) > 0 && lw.jobs[0].append == nil {
				j := lw.jobs[0]
				lw.jobs = lw.jobs[1:]
				if j.slow && !w.inline {
					w.offload(lw.lane, j, lw.jobs)
					lw.jobs = nil
					break
				}
				j.run(lw.lane)
				lw.finished++
			}
			more = more || len(lw.jobs) > 0
		}
		if !more {
			break
		}
	}
	w.mu.Lock()
	for _, lw := range work {
		lw.lane.pending -= lw.finished
		if lw.lane.pending == 0 {
			w.idle.Broadcast()
		}
	}
	w.mu.Unlock()
}

// maxBatchBytes bounds the entries of one Append call, which on a shared
// writer gathers the appends of many groups; a single append bigger than
// that still goes, alone.
const maxBatchBytes = 16 << 20

// appendSize estimates the bytes an append adds to a batch: its entries'
// payloads and a little for keys and headers.
func appendSize(a *messages.StorageAppend) int {
	n := 64
	for _, e := range a.GetEntries() {
		n += 64 + len(e.GetData()) + len(e.GetCommand().GetValue())
	}
	return n
}

// flushBatch writes the appends gathered in w.batch, if any.
func (w *storageWriter) flushBatch() {
	if len(w.batch) == 0 {
		return
	}
	w.appendBatch(w.batch)
	clear(w.batch)
	w.batch = w.batch[:0]
}

// offload runs j on a goroutine of its own; the lane's later jobs (rest,
// then whatever is queued) wait for it, the other lanes do not.
func (w *storageWriter) offload(l *storageLane, j storageJob, rest []storageJob) {
	w.mu.Lock()
	l.busy = true
	if len(rest) > 0 {
		l.queue = append(slices.Clip(rest), l.queue...)
	}
	w.helpers++
	w.mu.Unlock()
	go func() {
		j.run(l)
		w.mu.Lock()
		defer w.mu.Unlock()
		l.busy = false
		l.pending--
		w.helpers--
		if len(l.queue) > 0 && !l.queued {
			l.queued = true
			w.ready = append(w.ready, l)
		}
		if l.pending == 0 {
			w.idle.Broadcast()
		}
		w.work.Signal()
	}()
}

// blockingAppend is how long an Append takes before the writer counts its
// store as one that blocks in syncs: far above an in-memory append, far
// below a sync to disk.
const blockingAppend = 30 * time.Microsecond

// appendBatch writes the appends of every lane in jobs with one Append
// call and answers each in order.
func (w *storageWriter) appendBatch(jobs []laneJob) {
	reqs := make([]*messages.StorageAppend, len(jobs))
	for i, j := range jobs {
		reqs[i] = j.job.append
	}
	var results []*messages.StorageAppendResult
	if w.failed == nil {
		var err error
		start := time.Now()
		if stagesOn {
			markAppends(jobs, "storage append started")
		}
		results, err = w.st.Append(reqs)
		if stagesOn {
			markAppends(jobs, "storage append synced")
		}
		w.appendsBlock = time.Since(start) > blockingAppend
		w.batches.Add(1)
		w.appends.Add(uint64(len(reqs)))
		w.batchSeq++
		for _, j := range jobs {
			l := j.lane
			if l.lastBatch != w.batchSeq {
				l.lastBatch = w.batchSeq
				l.batches.Add(1)
			}
			l.appends.Add(1)
		}
		if err != nil {
			// A failed write or sync may have lost data that was reported
			// written before: the store is failed for good and so is every
			// group writing to it.
			w.failed = err
			w.isFailed.Store(true)
			w.log.Error("storage failed; no group on this store takes more writes", slog.Any("err", err))
		}
	}
	for i, j := range jobs {
		var res *messages.StorageAppendResult
		if w.failed != nil || i >= len(results) || results[i] == nil {
			res = &messages.StorageAppendResult{GroupId: j.job.append.GetGroupId(), Seq: j.job.append.GetSeq(),
				Error: failedError(w.failed)}
		} else {
			res = results[i]
		}
		j.lane.system.Root.Send(j.job.replyTo, res)
	}
}

func failedError(err error) *messages.Error {
	if err == nil {
		return newError(messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, "append returned no result")
	}
	return &messages.Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Message: err.Error()}
}

// writeChunk stores one chunk of a snapshot that a leader sends.
func (l *storageLane) writeChunk(m *messages.StorageWriteSnapshotChunk) *messages.StorageSnapshotChunkWritten {
	w := l.w
	res := &messages.StorageSnapshotChunkWritten{GroupId: m.GetGroupId(), Seq: m.GetSeq(), Meta: m.GetMeta()}
	if w.failed != nil {
		res.Error = failedError(w.failed)
		return res
	}
	id := m.GetMeta().GetId()
	in := l.snapIn[id]
	if m.GetOffset() == 0 && in != nil {
		// A restart from the beginning: drop what we had.
		_ = in.w.Abort()
		delete(l.snapIn, id)
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
		// Only the group's latest snapshot matters: abandon older ones.
		l.abortSnapshots()
		in = &snapshotIn{meta: m.GetMeta(), w: sw}
		l.snapIn[id] = in
	}
	if m.GetOffset() != in.next {
		res.NextOffset = in.next
		return res
	}
	if _, err := in.w.Write(m.GetData()); err != nil {
		_ = in.w.Abort()
		delete(l.snapIn, id)
		res.Error = store.ToProto(err)
		return res
	}
	in.next += uint64(len(m.GetData()))
	res.NextOffset = in.next
	if m.GetDone() {
		delete(l.snapIn, id)
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

// sameStore reports whether a and b are the same store, without the panic
// of comparing interfaces that hold incomparable values.
func sameStore(a, b store.Store) bool {
	if ta, tb := reflect.TypeOf(a), reflect.TypeOf(b); ta != tb || ta == nil || !ta.Comparable() {
		return false
	}
	return a == b
}
