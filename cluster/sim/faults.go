package sim

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// FaultKind names a kind of injected fault.
type FaultKind int

const (
	FaultNetwork   FaultKind = iota // loss, duplication, reordering, delay
	FaultPartition                  // any PartitionKind
	FaultCrash                      // crash (losing unsynced writes) and later restart
	FaultPause                      // a node stops running for a while
	FaultClockSkew                  // a node's ticks run fast or slow
	FaultClockJump                  // a node's clock jumps: many ticks at once
	numFaultKinds
)

var faultNames = [...]string{"network", "partition", "crash", "pause", "clock-skew", "clock-jump"}

func (k FaultKind) String() string { return faultNames[k] }

// FaultCounts counts injected faults and what they did, in a fixed order.
type FaultCounts struct {
	Injected   [numFaultKinds]uint64
	Partitions [numPartitionKinds]uint64
	// LostWrites is the number of unsynced disk writes crashes took away.
	LostWrites uint64
	Net        NetStats
}

// Add accumulates o into f.
func (f *FaultCounts) Add(o FaultCounts) {
	for i := range f.Injected {
		f.Injected[i] += o.Injected[i]
	}
	for i := range f.Partitions {
		f.Partitions[i] += o.Partitions[i]
	}
	f.LostWrites += o.LostWrites
	f.Net.Sent += o.Net.Sent
	f.Net.Delivered += o.Net.Delivered
	f.Net.Lost += o.Net.Lost
	f.Net.Duplicated += o.Net.Duplicated
	f.Net.Reordered += o.Net.Reordered
	f.Net.Cut += o.Net.Cut
	f.Net.ToDown += o.Net.ToDown
}

func (f FaultCounts) String() string {
	var b strings.Builder
	for k := FaultKind(0); k < numFaultKinds; k++ {
		fmt.Fprintf(&b, "%s=%d ", k, f.Injected[k])
	}
	b.WriteString("partitions{")
	for k := PartitionKind(1); k < numPartitionKinds; k++ {
		if k > 1 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, f.Partitions[k])
	}
	fmt.Fprintf(&b, "} unsynced-writes-lost=%d messages{sent=%d lost=%d duplicated=%d reordered=%d cut=%d to-down=%d}",
		f.LostWrites, f.Net.Sent, f.Net.Lost, f.Net.Duplicated, f.Net.Reordered, f.Net.Cut, f.Net.ToDown)
	return b.String()
}

// FaultPlan is the seed's choice of which faults a run injects and how
// often.
type FaultPlan struct {
	Enabled [numFaultKinds]bool
	// MeanGap is the mean time between fault injections.
	MeanGap time.Duration
	// Worst network: upper bounds for the random network profiles.
	MaxLoss, MaxDup, MaxReorder float64
	MaxDelay                    time.Duration
}

// RandomFaultPlan draws a plan: every kind is on with probability 0.6, so
// runs mix faults differently; a few runs are fault-free baselines.
func RandomFaultPlan(rng *Rand) FaultPlan {
	var p FaultPlan
	if rng.Chance(0.05) {
		return p
	}
	for k := range p.Enabled {
		p.Enabled[k] = rng.Chance(0.6)
	}
	p.MeanGap = rng.Duration(100*time.Millisecond, 800*time.Millisecond)
	p.MaxLoss = Pick(rng, []float64{0.02, 0.1, 0.3})
	p.MaxDup = Pick(rng, []float64{0.01, 0.05, 0.2})
	p.MaxReorder = Pick(rng, []float64{0.05, 0.2, 0.5})
	p.MaxDelay = Pick(rng, []time.Duration{5 * time.Millisecond, 30 * time.Millisecond, 150 * time.Millisecond})
	return p
}

// Any reports whether the plan injects anything.
func (p FaultPlan) Any() bool {
	for _, on := range p.Enabled {
		if on {
			return true
		}
	}
	return false
}

// randomNet draws a misbehaving network profile within the plan's bounds.
func (p FaultPlan) randomNet(rng *Rand) NetFaults {
	f := CalmNet
	f.Loss = rng.Float64() * p.MaxLoss
	f.Dup = rng.Float64() * p.MaxDup
	f.Reorder = rng.Float64() * p.MaxReorder
	f.ReorderDelay = p.MaxDelay
	f.MaxDelay = CalmNet.MaxDelay + rng.Duration(0, p.MaxDelay)
	return f
}

// pickKind draws one of the enabled kinds.
func (p FaultPlan) pickKind(rng *Rand) (FaultKind, bool) {
	var kinds []FaultKind
	for k, on := range p.Enabled {
		if on {
			kinds = append(kinds, FaultKind(k))
		}
	}
	if len(kinds) == 0 {
		return 0, false
	}
	return Pick(rng, kinds), true
}

// schedule draws the fault period's injections from rng: at exponentially
// distributed gaps until faultTime, each one's kind and seed drawn here and
// handed to inject at its time. Both simulators use it, so that a plan
// means the same schedule in either.
func (p FaultPlan) schedule(rng *Rand, faultTime time.Duration, q *Queue, inject func(FaultKind, *Rand)) {
	at := time.Duration(0)
	for {
		at += time.Duration(-math.Log(1-rng.Float64()) * float64(p.MeanGap))
		if at >= faultTime {
			return
		}
		kind, _ := p.pickKind(rng)
		seed := rng.Uint64()
		q.At(at, func() { inject(kind, NewRand(seed)) })
	}
}

// netFaults is the network side of a simulator, which both simulators
// fault the same way.
type netFaults struct {
	plan   FaultPlan
	q      *Queue
	net    *Network
	trace  *Trace
	counts *FaultCounts
}

// start starts a network or partition fault of kind, with victim (one of
// ids) the isolated node of an isolating partition, and schedules its end.
// It reports whether kind is one of those two; the caller handles the
// others.
func (f netFaults) start(kind FaultKind, rng *Rand, victim uint64, ids []uint64) bool {
	switch kind {
	case FaultNetwork:
		nf := f.plan.randomNet(rng)
		f.net.SetFaults(nf)
		f.trace.Add(f.q.Now(), 0, "network faults %+v", nf)
		f.q.After(rng.Duration(100*time.Millisecond, 2*time.Second), func() {
			f.net.SetFaults(CalmNet)
			f.trace.Add(f.q.Now(), 0, "network calm")
		})
		return true
	case FaultPartition:
		if len(ids) < 2 {
			return true
		}
		pk := PartitionKind(rng.Between(1, int(numPartitionKinds)-1))
		// RandomPartition shuffles: put the victim in the isolated
		// position afterwards.
		p := RandomPartition(rng, pk, ids)
		if pk == PartitionIsolate && victim != p.A[0] {
			p = Partition{Kind: pk, A: []uint64{victim}, B: without(ids, victim)}
		}
		f.counts.Partitions[p.Kind]++
		f.net.Partition(p)
		f.q.After(rng.Duration(100*time.Millisecond, 3*time.Second), func() {
			if f.net.partition.Kind == p.Kind && slices.Equal(f.net.partition.A, p.A) {
				f.net.Heal()
			}
		})
		return true
	}
	return false
}
