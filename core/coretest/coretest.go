// Package coretest is a small deterministic harness for multi-node tests of
// package core. A Network holds nodes, each made of a core.Core, the
// replication.Peer and replication.Stream of every peer it replicates to
// while it leads, an in-memory log with a durable and a not-yet-durable
// part, and a trivial state machine that records what it applied.
//
// Everything inside a node happens at once (storage, apply, replication
// actors); only wire messages between nodes wait in the network's queue,
// where a test delivers them one at a time or all at once, drops them, or
// cuts links. Crash makes a node lose what it had not made durable and
// restarts it from its storage.
//
// Invariants (one leader per term, logs agree on committed prefixes,
// applied entries agree across nodes, commit never decreases) are checked
// after every delivery and tick; a violation fails the test.
package coretest

import (
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
)

// TB is the part of testing.TB the harness uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Envelope is a wire message in flight between two nodes.
type Envelope struct {
	From, To uint64
	Msg      proto.Message
}

func (e Envelope) String() string {
	return fmt.Sprintf("%d->%d %T", e.From, e.To, e.Msg)
}

// Options configure every node of a Network.
type Options struct {
	ElectionTicks  int
	HeartbeatTicks int
	PreVote        bool
	CheckQuorum    bool
	LeaseRead      bool
	// Seed seeds every node's election randomness (with its ID).
	Seed        uint64
	Replication replication.Config
	// SnapshotEntries and SnapshotTrailing are passed to core.Config.
	SnapshotEntries, SnapshotTrailing uint64
	// Tweak, when set, may change each node's core.Config.
	Tweak func(*core.Config)
}

// Network is a set of nodes and the wire messages between them.
type Network struct {
	tb    TB
	opts  Options
	Nodes map[uint64]*Node
	queue []Envelope
	// cut[a][b] drops every message from a to b.
	cut map[[2]uint64]bool
	// Drop, when set, drops any envelope for which it returns true.
	Drop func(Envelope) bool
	// Trace, when set, receives a line for every change of role, term or
	// leader of any node.
	Trace func(string)

	// leaders records the leader of every term ever seen (election safety).
	leaders map[uint64]uint64
	// applied records, per index, the entry some node applied first.
	applied map[uint64]*messages.Entry
	steps   int
	// lastDelivered is the envelope delivered last, for failure output.
	lastDelivered Envelope
}

// New makes a network of fresh nodes that all hold the same initial
// membership of voters (entry 1 of term 1, as Initialize writes it).
func New(tb TB, opts Options, voters ...uint64) *Network {
	tb.Helper()
	n := &Network{tb: tb, opts: opts, Nodes: map[uint64]*Node{}, cut: map[[2]uint64]bool{},
		leaders: map[uint64]uint64{}, applied: map[uint64]*messages.Entry{}}
	m := &messages.Membership{Voters: slices.Clone(voters), Addresses: map[uint64]string{}}
	for _, id := range voters {
		m.Addresses[id] = Address(id)
	}
	for _, id := range voters {
		nd := n.newNode(id)
		nd.store.hs = &messages.HardState{Term: 1}
		nd.store.ents = []*messages.Entry{{Term: 1, Index: 1, Kind: messages.EntryKind_ENTRY_KIND_MEMBERSHIP, Membership: m}}
		n.start(nd)
	}
	return n
}

// Address is the address the harness gives node id.
func Address(id uint64) string { return fmt.Sprintf("node-%d:7000", id) }

// AddEmpty adds a node with empty storage (a future learner).
func (n *Network) AddEmpty(id uint64) *Node {
	n.tb.Helper()
	nd := n.newNode(id)
	n.start(nd)
	return nd
}

func (n *Network) newNode(id uint64) *Node {
	nd := &Node{ID: id, net: n, store: &store{hs: &messages.HardState{}, snaps: map[string][]byte{}}}
	n.Nodes[id] = nd
	return nd
}

func (n *Network) config(id uint64) core.Config {
	cfg := core.Config{
		ClusterID: "test", GroupID: 1, ID: id,
		ElectionTicks: n.opts.ElectionTicks, HeartbeatTicks: n.opts.HeartbeatTicks,
		PreVote: n.opts.PreVote, CheckQuorum: n.opts.CheckQuorum, LeaseRead: n.opts.LeaseRead,
		SnapshotEntries: n.opts.SnapshotEntries, SnapshotTrailing: n.opts.SnapshotTrailing,
	}
	if n.opts.Tweak != nil {
		n.opts.Tweak(&cfg)
	}
	if cfg.Rand == nil {
		cfg.Rand = newRand(n.opts.Seed, id)
	}
	return cfg
}

func (n *Network) start(nd *Node) {
	n.tb.Helper()
	c, err := core.New(n.config(nd.ID), nd.store.initialState(n.config(nd.ID)))
	if err != nil {
		n.tb.Fatalf("coretest: start node %d: %v", nd.ID, err)
	}
	nd.Core = c
	nd.peers = map[uint64]*peerPair{}
	nd.sm = &stateMachine{applied: nd.store.snapIndex()}
	if nd.store.snap != nil {
		nd.sm.restore(n.tb, nd.store.snaps[nd.store.snap.GetId()])
	}
	nd.lastCommit = c.Status().Commit
	nd.drain()
}

// Node returns node id.
func (n *Network) Node(id uint64) *Node {
	nd := n.Nodes[id]
	if nd == nil {
		n.tb.Fatalf("coretest: no node %d", id)
	}
	return nd
}

// Queue returns the envelopes in flight, oldest first.
func (n *Network) Queue() []Envelope { return slices.Clone(n.queue) }

// DropIf removes the envelopes in flight for which f returns true and
// returns how many it removed.
func (n *Network) DropIf(f func(Envelope) bool) int {
	before := len(n.queue)
	n.queue = slices.DeleteFunc(n.queue, f)
	return before - len(n.queue)
}

// Cut drops every message between a and b, both ways, until Heal.
func (n *Network) Cut(a, b uint64) { n.cut[[2]uint64{a, b}], n.cut[[2]uint64{b, a}] = true, true }

// Isolate cuts id off from every other node.
func (n *Network) Isolate(id uint64) {
	for other := range n.Nodes {
		if other != id {
			n.Cut(id, other)
		}
	}
}

// Heal restores every link.
func (n *Network) Heal() { n.cut = map[[2]uint64]bool{} }

func (n *Network) post(from uint64, msgs []proto.Message) {
	for _, m := range msgs {
		h := m.(interface{ GetHeader() *messages.Header }).GetHeader()
		n.queue = append(n.queue, Envelope{From: from, To: h.GetTo(), Msg: m})
	}
}

// DeliverOne delivers the oldest envelope in flight (or drops it when its
// link is cut). It reports false when nothing was in flight.
func (n *Network) DeliverOne() bool {
	n.tb.Helper()
	if len(n.queue) == 0 {
		return false
	}
	e := n.queue[0]
	n.queue = n.queue[1:]
	n.deliver(e)
	return true
}

func (n *Network) deliver(e Envelope) {
	n.tb.Helper()
	if n.cut[[2]uint64{e.From, e.To}] || (n.Drop != nil && n.Drop(e)) {
		return
	}
	nd := n.Nodes[e.To]
	if nd == nil || nd.Down {
		return
	}
	n.lastDelivered = e
	nd.receive(e)
	n.check()
}

// DeliverAt delivers the k-th envelope in flight (0 is the oldest), so a
// test can reorder messages. It reports false when there is no such
// envelope.
func (n *Network) DeliverAt(k int) bool {
	n.tb.Helper()
	if k < 0 || k >= len(n.queue) {
		return false
	}
	e := n.queue[k]
	n.queue = append(n.queue[:k], n.queue[k+1:]...)
	n.deliver(e)
	return true
}

// Duplicate queues a second copy of the k-th envelope in flight.
func (n *Network) Duplicate(k int) {
	if k >= 0 && k < len(n.queue) {
		n.queue = append(n.queue, n.queue[k])
	}
}

// DeliverAll delivers until nothing is in flight.
func (n *Network) DeliverAll() {
	n.tb.Helper()
	for k := 0; ; k++ {
		if k > 200_000 {
			var b strings.Builder
			for _, e := range n.queue[:min(len(n.queue), 12)] {
				fmt.Fprintf(&b, "%s %v\n", e, e.Msg)
			}
			n.tb.Fatalf("coretest: messages keep flowing after 200000 deliveries; next:\n%s\n%s", b.String(), n.Dump())
		}
		if !n.DeliverOne() {
			return
		}
	}
}

// Tick ticks the given nodes once (every live node when none is given),
// without delivering.
func (n *Network) Tick(ids ...uint64) {
	n.tb.Helper()
	if len(ids) == 0 {
		ids = n.IDs()
	}
	for _, id := range ids {
		nd := n.Node(id)
		if nd.Down {
			continue
		}
		nd.Core.Tick()
		for _, pid := range nd.peerIDs() {
			nd.peers[pid].peer.Tick()
			nd.peers[pid].stream.Tick()
		}
		nd.drain()
	}
	n.check()
}

// Run ticks every live node rounds times, delivering everything after each
// round.
func (n *Network) Run(rounds int) {
	n.tb.Helper()
	for range rounds {
		n.Tick()
		n.DeliverAll()
	}
}

// RunUntil runs rounds until cond holds, failing after limit rounds.
func (n *Network) RunUntil(limit int, what string, cond func() bool) {
	n.tb.Helper()
	for k := 0; !cond(); k++ {
		if k >= limit {
			n.tb.Fatalf("coretest: %s did not happen within %d rounds\n%s", what, limit, n.Dump())
		}
		n.Tick()
		n.DeliverAll()
	}
}

// IDs lists the nodes, sorted.
func (n *Network) IDs() []uint64 {
	ids := make([]uint64, 0, len(n.Nodes))
	for id := range n.Nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Leader returns the live node that leads in the highest term, or 0.
func (n *Network) Leader() uint64 {
	var best, term uint64
	for _, id := range n.IDs() {
		nd := n.Nodes[id]
		if s := nd.Core.Status(); !nd.Down && s.Role == messages.Role_ROLE_LEADER && s.Term >= term {
			best, term = id, s.Term
		}
	}
	return best
}

// Elect makes id campaign and delivers until quiet; it fails unless id
// leads afterwards.
func (n *Network) Elect(id uint64) {
	n.tb.Helper()
	n.Node(id).Core.Campaign()
	n.Node(id).drain()
	n.DeliverAll()
	if s := n.Node(id).Core.Status(); s.Role != messages.Role_ROLE_LEADER {
		n.tb.Fatalf("coretest: node %d did not become leader: %+v", id, s.Role)
	}
}

// Crash stops id, losing whatever it had not made durable, and restarts it
// from its storage.
func (n *Network) Crash(id uint64) {
	n.tb.Helper()
	nd := n.Node(id)
	nd.Core.Stop()
	nd.unsynced = nil
	nd.Responses = nil
	n.start(nd)
}

// check verifies the invariants after a step.
func (n *Network) check() {
	n.tb.Helper()
	n.steps++
	for _, id := range n.IDs() {
		nd := n.Nodes[id]
		s := nd.Core.Status()
		if s.Role == messages.Role_ROLE_LEADER {
			if l, ok := n.leaders[s.Term]; ok && l != id {
				n.tb.Fatalf("coretest: election safety: nodes %d and %d both lead term %d", l, id, s.Term)
			}
			n.leaders[s.Term] = id
		}
		if s.Commit < nd.lastCommit {
			n.tb.Fatalf("coretest: node %d commit went back from %d to %d", id, nd.lastCommit, s.Commit)
		}
		nd.lastCommit = s.Commit
		if s.Role == messages.Role_ROLE_LEADER {
			// A peer's match is durable on the peer while it follows the
			// same term: acknowledged entries are never taken back.
			for _, pid := range nd.peerIDs() {
				f := n.Nodes[pid]
				if f == nil || f.Core.Status().Term != s.Term {
					continue
				}
				if m := nd.peers[pid].peer.Match(); m > f.store.last() {
					n.tb.Fatalf("coretest: leader %d believes node %d holds %d, its disk ends at %d (last delivered %s %v)\n%s", id, pid, m, f.store.last(), n.lastDelivered, n.lastDelivered.Msg, n.Dump())
				}
			}
		}
		if err := nd.Core.TermIndex().Validate(); err != nil {
			n.tb.Fatalf("coretest: node %d: %v", id, err)
		}
		if s.Commit > s.LastIndex {
			n.tb.Fatalf("coretest: node %d commit %d beyond last index %d", id, s.Commit, s.LastIndex)
		}
	}
}

// Dump describes every node, for failure output.
func (n *Network) Dump() string {
	var b strings.Builder
	for _, id := range n.IDs() {
		nd := n.Nodes[id]
		s := nd.Core.Status()
		fmt.Fprintf(&b, "node %d: %v term %d vote %d leader %d commit %d applied %d durable %d log %d..%d (last term %d) conf %v@%d down=%v hold=%v unsynced=%d\n",
			id, s.Role, s.Term, s.Vote, s.Leader, s.Commit, s.Applied, s.Durable, s.FirstIndex, s.LastIndex, s.LastTerm,
			s.Membership, s.MembershipIndex, nd.Down, nd.HoldPersist, len(nd.unsynced))
		for _, pid := range nd.peerIDs() {
			p := nd.peers[pid].peer
			fl, fb := p.Inflight()
			sent, reading := nd.peers[pid].stream.Pending()
			fmt.Fprintf(&b, "    peer %d: match %d next %d %v inflight %d/%dB; stream sent %d reading %d\n", pid, p.Match(), p.Next(), p.Mode(), fl, fb, sent, reading)
		}
	}
	fmt.Fprintf(&b, "cut: %v, in flight: %d\n", n.cut, len(n.queue))
	return b.String()
}

// Pending returns the messages in flight as strings, for failure output.
func (n *Network) Pending() string {
	var b strings.Builder
	for _, e := range n.queue {
		fmt.Fprintf(&b, "%s\n", e)
	}
	return b.String()
}

func checksum(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
