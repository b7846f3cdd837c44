package sim

import (
	"container/heap"
	"time"
)

// event is something that happens at a simulated time. Events at the same
// time run in the order they were scheduled (seq), so the queue's order is a
// function of the seed alone.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// Queue is the simulation's clock and agenda.
type Queue struct {
	now  time.Duration
	seq  uint64
	heap eventHeap
}

// Now is the current simulated time since the start of the run.
func (q *Queue) Now() time.Duration { return q.now }

// At schedules fn at time at (or now, if at is in the past).
func (q *Queue) At(at time.Duration, fn func()) {
	if at < q.now {
		at = q.now
	}
	q.seq++
	heap.Push(&q.heap, &event{at: at, seq: q.seq, fn: fn})
}

// After schedules fn d from now.
func (q *Queue) After(d time.Duration, fn func()) { q.At(q.now+d, fn) }

// Len is the number of scheduled events.
func (q *Queue) Len() int { return len(q.heap) }

// Step runs the next event, advancing the clock to it. It returns false when
// nothing is scheduled or the next event is after limit.
func (q *Queue) Step(limit time.Duration) bool {
	if len(q.heap) == 0 || q.heap[0].at > limit {
		return false
	}
	e := heap.Pop(&q.heap).(*event)
	q.now = e.at
	e.fn()
	return true
}
