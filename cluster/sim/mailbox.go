package sim

import "time"

// mailbox is one part of a simulated node (RaftCore, storage, apply, a
// replication actor) with its queue of messages. Posting schedules a run a
// seed-chosen moment later; a run handles a seed-chosen number of the queued
// messages. The parts of one node thus interleave differently from seed to
// seed, as actors on a real dispatcher do, while each part sees its own
// messages in order.
type mailbox struct {
	n         *Node
	name      string
	msgs      []any
	scheduled bool
	// latency bounds the delay between a post and the run (a disk's fsync
	// is slower than a mailbox hop).
	minLatency, maxLatency time.Duration
	handle                 func(msg any)
}

func (n *Node) newMailbox(name string, lo, hi time.Duration, handle func(any)) *mailbox {
	return &mailbox{n: n, name: name, minLatency: lo, maxLatency: hi, handle: handle}
}

func (mb *mailbox) post(msg any) {
	mb.msgs = append(mb.msgs, msg)
	mb.schedule(mb.n.s.rng.Duration(mb.minLatency, mb.maxLatency))
}

func (mb *mailbox) schedule(d time.Duration) {
	if mb.scheduled {
		return
	}
	mb.scheduled = true
	inc := mb.n.incarnation
	mb.n.s.q.After(d, func() { mb.run(inc) })
}

func (mb *mailbox) run(inc uint64) {
	n := mb.n
	if !n.up || n.incarnation != inc {
		return // the node crashed since: the run died with it
	}
	mb.scheduled = false
	if now := n.s.q.Now(); n.pausedUntil > now {
		mb.schedule(n.pausedUntil - now)
		return
	}
	if len(mb.msgs) == 0 {
		return
	}
	n.touched = true
	k := n.s.rng.Between(1, len(mb.msgs))
	batch := mb.msgs[:k]
	for _, m := range batch {
		if !n.up || n.incarnation != inc {
			return
		}
		mb.handle(m)
	}
	if !n.up || n.incarnation != inc {
		return
	}
	mb.msgs = append(mb.msgs[:0], mb.msgs[k:]...)
	if len(mb.msgs) > 0 {
		mb.schedule(n.s.rng.Duration(mb.minLatency, mb.maxLatency))
	}
}

// clear drops everything queued (the node crashed).
func (mb *mailbox) clear() {
	mb.msgs = nil
	mb.scheduled = false
}
