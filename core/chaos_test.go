package core_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/raftor/raftor/core/coretest"
	"github.com/raftor/raftor/messages"
)

// TestChaos runs seeded random schedules of deliveries (reordered, dropped,
// duplicated), ticks, partitions, crashes with unsynced appends, writes,
// reads, transfers and membership changes over five nodes. The harness
// checks election safety, commit monotonicity and state machine safety at
// every step; at the end the cluster must heal, agree, and hold every
// acknowledged write. RAFTOR_CHAOS_SEEDS raises the number of seeds.
func TestChaos(t *testing.T) {
	seeds := 12
	if v, err := strconv.Atoi(os.Getenv("RAFTOR_CHAOS_SEEDS")); err == nil {
		seeds = v
	}
	only, _ := strconv.ParseUint(os.Getenv("RAFTOR_CHAOS_SEED"), 10, 64)
	for seed := range uint64(seeds) {
		if only != 0 && seed != only {
			continue
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runChaos(t, seed, 3000) })
	}
}

func runChaos(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	opts := coretest.Options{ElectionTicks: 10, HeartbeatTicks: 2, PreVote: seed%2 == 0, CheckQuorum: seed%3 != 0, Seed: seed,
		SnapshotEntries: []uint64{0, 5, 20}[rng.IntN(3)], SnapshotTrailing: 1 + rng.Uint64N(5)}
	opts.Replication.MaxAppendEntries = 1 + rng.IntN(8)
	opts.Replication.MaxAppendBytes = []uint64{0, 40, 200}[rng.IntN(3)]
	opts.Replication.MaxInflight = 1 + rng.IntN(6)
	opts.Replication.SnapshotChunkBytes = []uint64{0, 8}[rng.IntN(2)]
	ids := []uint64{1, 2, 3, 4, 5}
	net := coretest.New(t, opts, ids...)
	pick := func() uint64 { return ids[rng.IntN(len(ids))] }
	acked := map[string]bool{}
	type pending struct {
		node uint64
		h    uint64
		data string
	}
	var writes []pending
	next := 0
	// A read index must cover every write acknowledged before the read was
	// asked (linearizability of read index).
	type read struct {
		node, h uint64
		floor   uint64
	}
	var reads []read
	var ackedIndex uint64
	for step := 0; step < steps; step++ {
		q := len(net.Queue())
		switch a := rng.IntN(100); {
		case a < 45 && q > 0:
			// Mostly in order, sometimes reordered.
			k := 0
			if rng.IntN(4) == 0 {
				k = rng.IntN(q)
			}
			net.DeliverAt(k)
		case a < 47 && q > 0:
			net.DropIf(func(coretest.Envelope) bool { return rng.IntN(q) == 0 })
		case a < 48 && q > 0:
			net.Duplicate(rng.IntN(q))
		case a < 65:
			net.Tick(pick())
		case a < 75:
			if l := net.Leader(); l != 0 {
				next++
				d := fmt.Sprintf("w%d", next)
				before := net.Node(l).Status()
				h := net.Node(l).Propose(d)
				if os.Getenv("DBG") != "" {
					t.Logf("DBG propose on %d: last %d -> %d, %v", l, before.LastIndex, net.Node(l).Status().LastIndex, net.Node(l).Response(h))
				}
				writes = append(writes, pending{l, uint64(h), d})
			}
		case a < 77:
			net.Cut(pick(), pick())
		case a < 78:
			net.Isolate(pick())
		case a < 80:
			net.Heal()
		case a < 81:
			id := pick()
			nd := net.Node(id)
			nd.HoldPersist = rng.IntN(2) == 0
			if nd.HoldPersist && rng.IntN(2) == 0 {
				nd.Sync()
			}
			net.Crash(id)
			// Answers from before the crash stay counted in acked.
			writes = slices.DeleteFunc(writes, func(p pending) bool { return p.node == id })
			reads = slices.DeleteFunc(reads, func(r read) bool { return r.node == id })
		case a < 84:
			nd := net.Node(pick())
			if nd.HoldPersist {
				nd.Sync()
			}
		case a < 86:
			if l := net.Leader(); l != 0 {
				h := net.Node(l).Request(&messages.ReadIndexRequest{})
				reads = append(reads, read{l, uint64(h), ackedIndex})
			}
		case a < 87:
			if l := net.Leader(); l != 0 {
				net.Node(l).Request(&messages.TransferLeaderRequest{Target: pick()})
			}
		case a < 89:
			if l := net.Leader(); l != 0 {
				voters := slices.DeleteFunc(slices.Clone(ids), func(uint64) bool { return rng.IntN(3) == 0 })
				if len(voters) > 0 {
					net.Node(l).Request(&messages.ChangeMembershipRequest{Voters: voters, RetainAsLearners: true})
				}
			}
		default:
			net.Tick()
		}
		for _, p := range writes {
			if r, ok := net.Node(p.node).Response(coreHandle(p.h)).(*messages.ClientWriteResponse); ok && r.GetError() == nil {
				acked[p.data] = true
				ackedIndex = max(ackedIndex, r.GetIndex())
			}
		}
		for _, rd := range reads {
			if r, ok := net.Node(rd.node).Response(coreHandle(rd.h)).(*messages.ReadIndexResponse); ok && r.GetError() == nil && r.GetReadIndex() < rd.floor {
				t.Fatalf("read index %d below the write acknowledged at %d before the read", r.GetReadIndex(), rd.floor)
			}
		}
	}
	// Heal everything and let the cluster settle.
	net.Drop = nil
	net.Heal()
	for _, id := range ids {
		net.Node(id).HoldPersist = false
		net.Node(id).Sync()
	}
	// A write whose entry was cut from its leader's log is answered only
	// once its index is applied, which an idle cluster may never reach:
	// retry on the current leader until one is acknowledged.
	var l uint64
	final := ""
	var lastErr *messages.Error
	for try := 0; final == ""; try++ {
		if try > 20 {
			t.Fatalf("no final write acknowledged (last error %v)\n%s", lastErr, net.Dump())
		}
		net.RunUntil(300, "a leader", func() bool { return net.Leader() != 0 })
		l = net.Leader()
		d := fmt.Sprintf("final%d", try)
		before := net.Node(l).Status()
		h := net.Node(l).Propose(d)
		if os.Getenv("DBG") != "" {
			t.Logf("DBG propose on %d: last %d -> %d, %v", l, before.LastIndex, net.Node(l).Status().LastIndex, net.Node(l).Response(h))
		}
		for range 50 {
			if r, ok := net.Node(l).Response(h).(*messages.ClientWriteResponse); ok {
				if r.GetError() == nil {
					final = d
				} else {
					lastErr = r.GetError()
					net.Run(5)
				}
				break
			}
			net.Run(1)
		}
	}
	if os.Getenv("DBG") != "" {
		for range 12 {
			net.Tick()
			for len(net.Queue()) > 0 {
				e := net.Queue()[0]
				if e.To == 5 || e.From == 5 {
					t.Logf("DBG %s %v", e, e.Msg)
				}
				net.DeliverOne()
			}
		}
	}
	net.RunUntil(300, "every node applied the final write", func() bool {
		for _, id := range ids {
			d := net.Node(id).AppliedData()
			if !slices.Contains(d, final) {
				if m := net.Node(l).Status().Membership; !slicesContains(m, id) {
					continue
				}
				return false
			}
		}
		return true
	})
	applied := net.Node(l).AppliedData()
	for d := range acked {
		if !slices.Contains(applied, d) {
			t.Fatalf("acknowledged write %s lost (applied %v)", d, applied)
		}
	}
}

func slicesContains(m *messages.Membership, id uint64) bool {
	return slices.Contains(m.GetVoters(), id) || slices.Contains(m.GetLearners(), id) || slices.Contains(m.GetVotersOutgoing(), id)
}

// FuzzChaos lets the fuzzer pick chaos seeds, coverage-guided:
//
//	go test ./core -run '^$' -fuzz FuzzChaos -fuzztime 60s
func FuzzChaos(f *testing.F) {
	f.Add(uint64(1))
	f.Fuzz(func(t *testing.T, seed uint64) { runChaos(t, seed, 800) })
}
