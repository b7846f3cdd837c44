package clustertest

import (
	"testing"
	"time"
)

func TestNetworkVerdicts(t *testing.T) {
	const vote = "raftor.v1.VoteRequest"
	addr := map[uint64]string{1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3", 4: "127.0.0.1:4"}
	all := []uint64{1, 2, 3, 4}
	tests := []struct {
		name  string
		setup func(n *network)
		// dropped lists the directed links [from, to] that must drop.
		dropped [][2]uint64
	}{
		{"healthy", func(n *network) {}, nil},
		{"one-way cut", func(n *network) { n.setCut(1, 2, true) }, [][2]uint64{{1, 2}}},
		{"cut and restored", func(n *network) { n.setCut(1, 2, true); n.setCut(1, 2, false) }, nil},
		{"split 12|34", func(n *network) { n.split(all, [][]uint64{{1, 2}, {3, 4}}) },
			[][2]uint64{{1, 3}, {1, 4}, {2, 3}, {2, 4}, {3, 1}, {3, 2}, {4, 1}, {4, 2}}},
		{"split with a node in no group", func(n *network) { n.split(all, [][]uint64{{1, 2, 3}}) },
			[][2]uint64{{1, 4}, {2, 4}, {3, 4}, {4, 1}, {4, 2}, {4, 3}}},
		{"healed", func(n *network) { n.split(all, [][]uint64{{1}, {2, 3, 4}}); n.heal() }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNetwork(1)
			for id, a := range addr {
				n.register(a, id)
			}
			tt.setup(n)
			for _, from := range all {
				for _, to := range all {
					if from == to {
						continue
					}
					want := false
					for _, d := range tt.dropped {
						want = want || d == [2]uint64{from, to}
					}
					if got := n.verdict(addr[from], to, vote).Drop; got != want {
						t.Errorf("%d->%d dropped=%v, want %v", from, to, got, want)
					}
				}
			}
		})
	}
}

// An unreliable network drops and duplicates about the shares asked for,
// delays within the bound, leaves protoactor's own messages and unknown
// senders alone, and repeats itself for a seed.
func TestNetworkUnreliableShares(t *testing.T) {
	run := func(seed uint64) (drops, dups int, delays []time.Duration) {
		n := newNetwork(seed)
		n.register("127.0.0.1:1", 1)
		n.setUnreliable(0.2, 0.1, 30*time.Millisecond)
		for i := 0; i < 10000; i++ {
			v := n.verdict("127.0.0.1:1", 2, "raftor.v1.AppendEntriesRequest")
			switch {
			case v.Drop:
				drops++
			default:
				dups += v.Duplicates
				delays = append(delays, v.Delay)
			}
		}
		if v := n.verdict("127.0.0.1:1", 2, "actor.Terminated"); v.Drop || v.Delay != 0 || v.Duplicates != 0 {
			t.Errorf("protoactor's own message got %+v", v)
		}
		if v := n.verdict("127.0.0.1:9", 2, "raftor.v1.AppendEntriesRequest"); v.Drop || v.Delay != 0 {
			t.Errorf("a message from an unknown address got %+v", v)
		}
		return drops, dups, delays
	}
	drops, dups, delays := run(7)
	if drops < 1700 || drops > 2300 {
		t.Errorf("dropped %d of 10000, want about 2000", drops)
	}
	if dups < 600 || dups > 1000 {
		t.Errorf("duplicated %d of %d delivered, want about 800", dups, 10000-drops)
	}
	for _, d := range delays {
		if d < 0 || d >= 30*time.Millisecond {
			t.Fatalf("delay %v outside [0, 30ms)", d)
		}
	}
	d2, u2, _ := run(7)
	if d2 != drops || u2 != dups {
		t.Errorf("seed 7 gave %d/%d then %d/%d drops/duplicates", drops, dups, d2, u2)
	}
}
