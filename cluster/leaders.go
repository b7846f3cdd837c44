package cluster

import (
	"sync"

	"github.com/raftor/raftor/actors"
)

// LeaderTable is one member's view of who leads each group. For a group
// with a replica on this member it reads that replica's metrics (an atomic
// load, no goroutine and no message per group); for the others it keeps
// what not-leader hints and answers taught the clients. It is shared by
// every client on the member and safe for concurrent use.
type LeaderTable struct {
	mu      sync.Mutex
	learned map[uint64]uint64 // group ID -> node ID
	local   map[uint64]*actors.Node
}

// NewLeaderTable returns an empty table.
func NewLeaderTable() *LeaderTable {
	return &LeaderTable{learned: map[uint64]uint64{}, local: map[uint64]*actors.Node{}}
}

// Leader returns the node believed to lead group, 0 when unknown. A local
// replica's metrics win over hints: they carry the replica's own term.
func (t *LeaderTable) Leader(group uint64) uint64 {
	t.mu.Lock()
	n, learned := t.local[group], t.learned[group]
	t.mu.Unlock()
	if n != nil {
		if m := n.Metrics(); m != nil && m.GetLeaderId() != 0 {
			return m.GetLeaderId()
		}
	}
	return learned
}

// Learn records that node leads group (from a hint or an answer).
func (t *LeaderTable) Learn(group, node uint64) {
	if node == 0 {
		return
	}
	t.mu.Lock()
	t.learned[group] = node
	t.mu.Unlock()
}

// Forget drops a learned leader that stopped answering, unless another
// was learned since.
func (t *LeaderTable) Forget(group, node uint64) {
	t.mu.Lock()
	if t.learned[group] == node {
		delete(t.learned, group)
	}
	t.mu.Unlock()
}

func (t *LeaderTable) addLocal(group uint64, n *actors.Node) {
	t.mu.Lock()
	t.local[group] = n
	t.mu.Unlock()
}

func (t *LeaderTable) removeLocal(group uint64) {
	t.mu.Lock()
	delete(t.local, group)
	t.mu.Unlock()
}
