package store

import (
	"runtime"
	"sync"

	"github.com/raftor/raftor/messages"
)

// CommitterOptions bounds the batches a Committer writes.
type CommitterOptions struct {
	// MaxBatchAppends is the most appends in one batch (default 4096).
	MaxBatchAppends int
	// MaxBatchBytes is roughly the most entry bytes in one batch (default
	// 16 MiB); a single larger append still goes in a batch of its own.
	MaxBatchBytes int
}

// CommitStats counts the Committer's work. Appends/Batches is the number of
// appends that shared one fsync.
type CommitStats struct {
	Batches uint64 // batches written, each with one sync
	Appends uint64 // appends answered after a successful write
	Entries uint64
	Bytes   uint64 // approximate entry bytes
	// MaxBatch is the largest number of appends written in one batch.
	MaxBatch uint64
	// Failed counts appends answered with an error.
	Failed uint64
}

// AppendsPerSync is Appends/Batches, 0 before the first batch.
func (s CommitStats) AppendsPerSync() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Appends) / float64(s.Batches)
}

// Committer is group commit in front of a LogStore: any number of
// goroutines Submit appends for any groups, and one writer goroutine takes
// everything waiting, writes it with one Append (one batch, one sync) and
// then answers each. While a batch is being synced the next one gathers, so
// the more concurrent appenders there are, the more appends share an fsync.
//
// Once a write fails the Committer is failed: every later append is answered
// with STORAGE_FAILED and the cause, and nothing more is written.
type Committer struct {
	store LogStore
	opts  CommitterOptions

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []pendingAppend
	closing bool
	failed  error
	stats   CommitStats
	stopped chan struct{}
}

type pendingAppend struct {
	req  *messages.StorageAppend
	done func(*messages.StorageAppendResult)
}

// NewCommitter starts a Committer's writer goroutine. Close stops it.
func NewCommitter(s LogStore, o CommitterOptions) *Committer {
	if o.MaxBatchAppends <= 0 {
		o.MaxBatchAppends = 4096
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 16 << 20
	}
	c := &Committer{store: s, opts: o, stopped: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.run()
	return c
}

// Submit queues req. done is called exactly once, from the writer goroutine,
// after req is durable or with the error that prevented it; appends are
// answered in the order they were submitted. done must not block (an actor
// sends itself a message): the next batch waits for it. After Close, done is called at
// once with STOPPED. The Committer owns req until done is called.
func (c *Committer) Submit(req *messages.StorageAppend, done func(*messages.StorageAppendResult)) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.answer(done, req, ToProto(errClosed("append")))
		return
	}
	c.queue = append(c.queue, pendingAppend{req: req, done: done})
	c.mu.Unlock()
	c.cond.Signal()
}

// Close stops accepting appends, writes and answers everything already
// submitted, and waits for the writer goroutine to exit.
func (c *Committer) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.cond.Signal()
	<-c.stopped
	return nil
}

// Err returns the failure that stopped the Committer's writes, nil before.
func (c *Committer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// Stats returns the counters so far.
func (c *Committer) Stats() CommitStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Committer) answer(done func(*messages.StorageAppendResult), req *messages.StorageAppend, e *messages.Error) {
	if done != nil {
		done(&messages.StorageAppendResult{GroupId: req.GetGroupId(), Seq: req.GetSeq(), Error: e})
	}
}

func approxSize(req *messages.StorageAppend) int {
	n := 64
	for _, e := range req.GetEntries() {
		n += 32 + len(e.GetData()) + len(e.GetCommand().GetValue())
	}
	return n
}

func (c *Committer) run() {
	defer close(c.stopped)
	var batch []pendingAppend
	reqs := make([]*messages.StorageAppend, 0, 64)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.cond.Wait()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		// Take everything waiting, up to the limits.
		n, bytes := 0, 0
		for n < len(c.queue) && n < c.opts.MaxBatchAppends {
			sz := approxSize(c.queue[n].req)
			if n > 0 && bytes+sz > c.opts.MaxBatchBytes {
				break
			}
			bytes += sz
			n++
		}
		batch = append(batch[:0], c.queue[:n]...)
		rest := copy(c.queue, c.queue[n:])
		clear(c.queue[rest:])
		c.queue = c.queue[:rest]
		failed := c.failed
		c.mu.Unlock()

		if failed != nil {
			perr := ToProto(failed)
			for _, p := range batch {
				c.answer(p.done, p.req, perr)
			}
			c.mu.Lock()
			c.stats.Failed += uint64(len(batch))
			c.mu.Unlock()
			continue
		}

		reqs = reqs[:0]
		entries := 0
		for _, p := range batch {
			reqs = append(reqs, p.req)
			entries += len(p.req.GetEntries())
		}
		results, err := c.store.Append(reqs)

		c.mu.Lock()
		if err != nil {
			c.failed = err
		} else {
			c.stats.Batches++
			c.stats.Entries += uint64(entries)
			c.stats.Bytes += uint64(bytes)
			c.stats.MaxBatch = max(c.stats.MaxBatch, uint64(len(batch)))
		}
		for _, r := range results {
			if r.GetError() != nil {
				c.stats.Failed++
			} else {
				c.stats.Appends++
			}
		}
		c.mu.Unlock()
		if err != nil {
			// Nothing of this batch is durable, whatever results says.
			perr := ToProto(err)
			for _, p := range batch {
				c.answer(p.done, p.req, perr)
			}
		} else {
			for i, p := range batch {
				if p.done != nil {
					p.done(results[i])
				}
			}
		}
		clear(batch)
		// Let the appenders just answered submit their next appends before
		// the next batch is taken; otherwise appenders split into two
		// cohorts that alternate batches, and share half as many fsyncs.
		runtime.Gosched()
	}
}
