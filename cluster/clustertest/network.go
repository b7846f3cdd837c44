package clustertest

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/raftor/raftor/remote"
)

// network is the fault model between the nodes of a cluster. Every node's
// remote asks it, through remote.Config.Inbound, what to do with each
// message that arrives: a cut link drops everything, an unreliable network
// drops, duplicates and delays a share of Raftor's messages.
type network struct {
	mu sync.Mutex
	// addrs maps each node's remote address to its ID; an address stays
	// with its node across restarts.
	addrs map[string]uint64
	// cut holds the directed links that drop everything: [from, to].
	cut map[[2]uint64]bool
	// unreliable network, applied to Raftor's own messages only.
	drop, dup float64
	maxDelay  time.Duration
	rng       *rand.Rand
}

func newNetwork(seed uint64) *network {
	return &network{addrs: map[string]uint64{}, cut: map[[2]uint64]bool{},
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (n *network) register(addr string, id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs[addr] = id
}

// inbound is node to's remote.InboundFilter.
func (n *network) inbound(to uint64) remote.InboundFilter {
	return func(fromAddr, typeName string) remote.Verdict {
		return n.verdict(fromAddr, to, typeName)
	}
}

func (n *network) verdict(fromAddr string, to uint64, typeName string) remote.Verdict {
	n.mu.Lock()
	defer n.mu.Unlock()
	from, known := n.addrs[fromAddr]
	if !known {
		return remote.Verdict{}
	}
	if n.cut[[2]uint64{from, to}] {
		return remote.Verdict{Drop: true}
	}
	// protoactor's own messages (watches, terminations) keep their
	// guarantees; Raftor must cope with losing any of its own.
	if !strings.HasPrefix(typeName, "raftor.") {
		return remote.Verdict{}
	}
	var v remote.Verdict
	if n.drop > 0 && n.rng.Float64() < n.drop {
		return remote.Verdict{Drop: true}
	}
	if n.dup > 0 && n.rng.Float64() < n.dup {
		v.Duplicates = 1
	}
	if n.maxDelay > 0 {
		v.Delay = time.Duration(n.rng.Int64N(int64(n.maxDelay)))
	}
	return v
}

func (n *network) setCut(from, to uint64, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cut {
		n.cut[[2]uint64{from, to}] = true
	} else {
		delete(n.cut, [2]uint64{from, to})
	}
}

// split cuts every link between nodes of different groups; nodes in no
// group are cut from everyone.
func (n *network) split(all []uint64, groups [][]uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	group := map[uint64]int{}
	for i, g := range groups {
		for _, id := range g {
			group[id] = i + 1
		}
	}
	for _, a := range all {
		for _, b := range all {
			if a == b {
				continue
			}
			ga, gb := group[a], group[b]
			if ga == 0 || gb == 0 || ga != gb {
				n.cut[[2]uint64{a, b}] = true
			}
		}
	}
}

func (n *network) setUnreliable(drop, dup float64, maxDelay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop, n.dup, n.maxDelay = drop, dup, maxDelay
}

func (n *network) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	n.drop, n.dup, n.maxDelay = 0, 0, 0
}

func (n *network) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var links []string
	for l := range n.cut {
		links = append(links, fmt.Sprintf("%d->%d", l[0], l[1]))
	}
	sort.Strings(links)
	s := "cut links: none"
	if len(links) > 0 {
		s = "cut links: " + strings.Join(links, " ")
	}
	if n.drop > 0 || n.dup > 0 || n.maxDelay > 0 {
		s += fmt.Sprintf("; unreliable: drop %.0f%%, duplicate %.0f%%, delay up to %v", n.drop*100, n.dup*100, n.maxDelay)
	}
	return s
}
