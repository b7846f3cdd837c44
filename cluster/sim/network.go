package sim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// NetFaults are the network's current misbehaviours. The fault schedule
// changes them during a run; the calm period at the end sets them to Calm.
type NetFaults struct {
	// Loss and Dup are the probabilities that a message is dropped or
	// delivered twice.
	Loss, Dup float64
	// Reorder is the probability that a message leaves its link's FIFO order
	// (protoactor remote keeps per-link order; a reconnect or retry need not)
	// and is delayed by up to ReorderDelay more.
	Reorder      float64
	ReorderDelay time.Duration
	// MinDelay and MaxDelay bound a message's latency.
	MinDelay, MaxDelay time.Duration
}

// CalmNet is a healthy LAN: no loss, no duplicates, FIFO links, sub-ms to
// few-ms latency.
var CalmNet = NetFaults{MinDelay: 200 * time.Microsecond, MaxDelay: 2 * time.Millisecond}

type link struct{ from, to uint64 }

// NetStats counts what the network did to messages.
type NetStats struct {
	Sent, Delivered, Lost, Duplicated, Reordered, Cut, ToDown uint64
}

// Network carries messages between simulated nodes through the event queue.
// Each directed link keeps FIFO order unless a message is picked for
// reordering. A message on a cut link is dropped when it would arrive, so a
// partition also swallows what was in flight.
type Network struct {
	q      *Queue
	rng    *Rand
	trace  *Trace
	faults NetFaults
	cut    map[link]bool
	// partition describes the current cut for traces and reports.
	partition Partition
	// tail is the arrival time of the last in-order message on each link.
	tail map[link]time.Duration
	// deliver hands a message to its destination; it reports false when the
	// destination could not take it (down).
	deliver func(from, to uint64, msg any) bool
	Stats   NetStats
}

// NewNetwork returns a calm network whose arrivals are handed to deliver.
func NewNetwork(q *Queue, rng *Rand, trace *Trace, deliver func(from, to uint64, msg any) bool) *Network {
	return &Network{
		q: q, rng: rng, trace: trace, faults: CalmNet,
		cut: map[link]bool{}, tail: map[link]time.Duration{}, deliver: deliver,
	}
}

// SetFaults replaces the network's misbehaviours.
func (n *Network) SetFaults(f NetFaults) { n.faults = f }

// Faults returns the current misbehaviours.
func (n *Network) Faults() NetFaults { return n.faults }

// Connected reports whether from can currently reach to.
func (n *Network) Connected(from, to uint64) bool { return !n.cut[link{from, to}] }

// Send puts msg on the link from -> to.
func (n *Network) Send(from, to uint64, msg any) {
	n.Stats.Sent++
	f := n.faults
	if n.rng.Chance(f.Loss) {
		n.Stats.Lost++
		n.trace.Add(n.q.Now(), from, "lose  -> n%d %s", to, describeMsg(msg))
		return
	}
	copies := 1
	if n.rng.Chance(f.Dup) {
		copies = 2
		n.Stats.Duplicated++
	}
	for i := 0; i < copies; i++ {
		at := n.q.Now() + n.rng.Duration(f.MinDelay, f.MaxDelay)
		l := link{from, to}
		if n.rng.Chance(f.Reorder) {
			// Out of order: neither bound by nor moving the link's tail.
			at += n.rng.Duration(0, f.ReorderDelay)
			n.Stats.Reordered++
		} else {
			if t := n.tail[l]; at < t {
				at = t
			}
			n.tail[l] = at
		}
		n.q.At(at, func() { n.arrive(from, to, msg) })
	}
}

func (n *Network) arrive(from, to uint64, msg any) {
	if n.cut[link{from, to}] {
		n.Stats.Cut++
		n.trace.Add(n.q.Now(), to, "cut   <- n%d %s", from, describeMsg(msg))
		return
	}
	if !n.deliver(from, to, msg) {
		n.Stats.ToDown++
		return
	}
	n.Stats.Delivered++
}

// Partition installs p, replacing any previous one.
func (n *Network) Partition(p Partition) {
	n.cut = map[link]bool{}
	for _, l := range p.links() {
		n.cut[l] = true
	}
	n.partition = p
	n.trace.Add(n.q.Now(), 0, "partition %s", p)
}

// Heal removes every cut.
func (n *Network) Heal() {
	if len(n.cut) == 0 {
		return
	}
	n.cut = map[link]bool{}
	n.partition = Partition{}
	n.trace.Add(n.q.Now(), 0, "heal network")
}

// Partitioned reports whether any link is cut.
func (n *Network) Partitioned() bool { return len(n.cut) > 0 }

// PartitionKind names a shape of network partition.
type PartitionKind int

const (
	PartitionNone PartitionKind = iota
	// PartitionIsolate cuts one node off in both directions.
	PartitionIsolate
	// PartitionSplit splits the nodes into a minority and a majority side.
	PartitionSplit
	// PartitionAsymmetric cuts one direction only: a node that can send but
	// not hear (or the reverse).
	PartitionAsymmetric
	// PartitionBridge splits the nodes into two sides that cannot reach each
	// other, and one bridge node that reaches both.
	PartitionBridge
	numPartitionKinds
)

func (k PartitionKind) String() string {
	return [...]string{"none", "isolate", "split", "asymmetric", "bridge"}[k]
}

// Partition is a set of cut directed links, with the shape that produced it.
type Partition struct {
	Kind PartitionKind
	// A and B are the two sides: every link from A to B is cut, and, unless
	// OneWay, every link from B to A too.
	A, B   []uint64
	OneWay bool
	// Bridge is the node of a PartitionBridge that reaches both sides.
	Bridge uint64
}

func (p Partition) links() []link {
	var ls []link
	for _, a := range p.A {
		for _, b := range p.B {
			ls = append(ls, link{a, b})
			if !p.OneWay {
				ls = append(ls, link{b, a})
			}
		}
	}
	return ls
}

func (p Partition) String() string {
	if p.Kind == PartitionNone {
		return "none"
	}
	arrow := "<-/->"
	if p.OneWay {
		arrow = "-/->"
	}
	s := fmt.Sprintf("%s %v %s %v", p.Kind, p.A, arrow, p.B)
	if p.Kind == PartitionBridge {
		s += fmt.Sprintf(" via n%d", p.Bridge)
	}
	return s
}

// RandomPartition draws a partition of kind over nodes (at least 2).
func RandomPartition(rng *Rand, kind PartitionKind, nodes []uint64) Partition {
	ns := slices.Clone(nodes)
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	Shuffle(rng, ns)
	if len(ns) < 2 {
		return Partition{}
	}
	switch kind {
	case PartitionIsolate:
		return Partition{Kind: kind, A: ns[:1], B: ns[1:]}
	case PartitionSplit:
		k := rng.Between(1, len(ns)/2)
		return Partition{Kind: kind, A: ns[:k], B: ns[k:]}
	case PartitionAsymmetric:
		// ns[0] can send but not hear, or hear but not send.
		if rng.Chance(0.5) {
			return Partition{Kind: kind, A: ns[1:], B: ns[:1], OneWay: true}
		}
		return Partition{Kind: kind, A: ns[:1], B: ns[1:], OneWay: true}
	case PartitionBridge:
		if len(ns) < 3 {
			return Partition{Kind: PartitionIsolate, A: ns[:1], B: ns[1:]}
		}
		rest := ns[1:]
		k := rng.Between(1, len(rest)-1)
		return Partition{Kind: kind, A: rest[:k], B: rest[k:], Bridge: ns[0]}
	}
	return Partition{}
}

// lazyMsg formats a message only when the trace is printed.
type lazyMsg struct{ m any }

func (l lazyMsg) String() string { return formatMsg(l.m) }

// describeMsg wraps a message for a trace record.
func describeMsg(msg any) lazyMsg { return lazyMsg{msg} }

// formatMsg names a message briefly for traces.
func formatMsg(msg any) string {
	if w, ok := msg.(*wireMsg); ok {
		return w.String()
	}
	if s, ok := msg.(fmt.Stringer); ok {
		str := s.String()
		if len(str) > 160 {
			str = str[:160] + "…"
		}
		return strings.TrimSpace(fmt.Sprintf("%T %s", msg, str))
	}
	return fmt.Sprintf("%T", msg)
}
