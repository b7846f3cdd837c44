package cluster

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"sort"
	"strconv"

	pcluster "github.com/asynkron/protoactor-go/cluster"

	"github.com/raftor/raftor/messages"
)

// Replica is one member's place in a group: the member's node ID (the same
// for every group the member hosts, since they share its store) and its
// remote address.
type Replica struct {
	NodeID  uint64
	Address string
}

// Group is one Raft group: a name applications use, the ID the log and the
// actor names use, and its founding replicas.
type Group struct {
	Name     string
	ID       uint64
	Replicas []Replica
}

// Membership is the group's founding configuration, every replica a voter.
func (g Group) Membership() *messages.Membership {
	m := &messages.Membership{Addresses: map[uint64]string{}}
	for _, r := range g.Replicas {
		m.Voters = append(m.Voters, r.NodeID)
		m.Addresses[r.NodeID] = r.Address
	}
	return m
}

// replica returns the replica with node ID id.
func (g Group) replica(id uint64) (Replica, bool) {
	for _, r := range g.Replicas {
		if r.NodeID == id {
			return r, true
		}
	}
	return Replica{}, false
}

func (g Group) validate() error {
	switch {
	case g.Name == "":
		return errors.New("a group needs a name")
	case g.ID == 0:
		return fmt.Errorf("group %q: ID must not be 0", g.Name)
	case len(g.Replicas) == 0:
		return fmt.Errorf("group %q: no replicas", g.Name)
	}
	seen := map[uint64]bool{}
	addrs := map[string]bool{}
	for _, r := range g.Replicas {
		if r.NodeID == 0 {
			return fmt.Errorf("group %q: a replica has node ID 0", g.Name)
		}
		if seen[r.NodeID] {
			return fmt.Errorf("group %q: node %d is listed twice", g.Name, r.NodeID)
		}
		if _, _, err := net.SplitHostPort(r.Address); err != nil {
			return fmt.Errorf("group %q: node %d: address %q: %v", g.Name, r.NodeID, r.Address, err)
		}
		// Two replicas on one member would share one store under one node
		// ID: a member that fails takes two votes with it.
		if addrs[r.Address] {
			return fmt.Errorf("group %q: two replicas at %s", g.Name, r.Address)
		}
		seen[r.NodeID], addrs[r.Address] = true, true
	}
	return nil
}

// Directory is the set of groups of one Raft cluster ID, the same on every
// member. It is immutable once built.
type Directory struct {
	clusterID string
	byName    map[string]Group
	byID      map[uint64]Group
}

// NewDirectory checks the groups (unique names and IDs, distinct node IDs
// and addresses within a group) and indexes them.
func NewDirectory(clusterID string, groups ...Group) (*Directory, error) {
	if clusterID == "" {
		return nil, errors.New("raftor: a directory needs a cluster ID")
	}
	d := &Directory{clusterID: clusterID, byName: map[string]Group{}, byID: map[uint64]Group{}}
	for _, g := range groups {
		if err := g.validate(); err != nil {
			return nil, fmt.Errorf("raftor: %w", err)
		}
		if _, dup := d.byName[g.Name]; dup {
			return nil, fmt.Errorf("raftor: group name %q is used twice", g.Name)
		}
		if other, dup := d.byID[g.ID]; dup {
			return nil, fmt.Errorf("raftor: groups %q and %q have the same ID %d", other.Name, g.Name, g.ID)
		}
		g.Replicas = append([]Replica(nil), g.Replicas...)
		d.byName[g.Name], d.byID[g.ID] = g, g
	}
	return d, nil
}

// ClusterID is the Raft cluster ID of every group in the directory.
func (d *Directory) ClusterID() string { return d.clusterID }

// Group returns the group named name.
func (d *Directory) Group(name string) (Group, bool) {
	g, ok := d.byName[name]
	return g, ok
}

// Groups returns every group, ordered by ID.
func (d *Directory) Groups() []Group {
	out := make([]Group, 0, len(d.byID))
	for _, g := range d.byID {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// NodeIDFromAddress derives a stable, non-zero node ID from a member's
// remote address. A member keeps its ID as long as it keeps its address;
// a member whose address changes must be given its old ID explicitly
// (its store refuses another).
func NodeIDFromAddress(address string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(address))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

// ReplicasFromMembers picks n replicas for the group named name among the
// cluster's members, by rendezvous hashing of the name over the members'
// addresses: every member computes the same answer from the same member
// list, and adding a member moves only the groups it now ranks first for.
// The node IDs come from nodeID (NodeIDFromAddress when nil).
//
// The result is a founding configuration: once a group runs, it changes
// its replicas only through Raft (AddLearner, ChangeMembership), never by
// calling this again with a new member list.
func ReplicasFromMembers(members []*pcluster.Member, name string, n int, nodeID func(address string) uint64) ([]Replica, error) {
	if n <= 0 {
		return nil, fmt.Errorf("raftor: group %q: %d replicas asked", name, n)
	}
	if nodeID == nil {
		nodeID = NodeIDFromAddress
	}
	type ranked struct {
		addr  string
		score uint64
	}
	var all []ranked
	seen := map[string]bool{}
	for _, m := range members {
		addr := net.JoinHostPort(m.GetHost(), strconv.Itoa(int(m.GetPort())))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(addr))
		all = append(all, ranked{addr, h.Sum64()})
	}
	if len(all) < n {
		return nil, fmt.Errorf("raftor: group %q needs %d members, the cluster has %d", name, n, len(all))
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].addr < all[j].addr
	})
	out := make([]Replica, n)
	for i := range out {
		out[i] = Replica{NodeID: nodeID(all[i].addr), Address: all[i].addr}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out, nil
}
