package cluster

import (
	"fmt"
	"testing"

	pcluster "github.com/asynkron/protoactor-go/cluster"
)

func members(n int) []*pcluster.Member {
	var ms []*pcluster.Member
	for i := range n {
		ms = append(ms, &pcluster.Member{Host: "10.0.0.1", Port: int32(7000 + i), Id: fmt.Sprint(i)})
	}
	return ms
}

// Every member computes the same placement from the same member list, in
// whatever order the list comes, and a new member moves few groups.
func TestReplicasFromMembersIsStableAndSpread(t *testing.T) {
	five := members(5)
	reversed := append([]*pcluster.Member(nil), five...)
	for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
		reversed[i], reversed[j] = reversed[j], reversed[i]
	}
	six := members(6)
	moved, load := 0, map[string]int{}
	for g := range 200 {
		name := fmt.Sprintf("g-%d", g)
		a, err := ReplicasFromMembers(five, name, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ReplicasFromMembers(reversed, name, 3, nil)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s: %v from one order, %v from another", name, a, b)
		}
		seen := map[string]bool{}
		for _, r := range a {
			if seen[r.Address] {
				t.Fatalf("%s: two replicas at %s", name, r.Address)
			}
			seen[r.Address] = true
			load[r.Address]++
			if r.NodeID != NodeIDFromAddress(r.Address) {
				t.Fatalf("%s: node ID %d for %s", name, r.NodeID, r.Address)
			}
		}
		c, _ := ReplicasFromMembers(six, name, 3, nil)
		if fmt.Sprint(a) != fmt.Sprint(c) {
			moved++
		}
	}
	// A sixth member takes over about 3/6 of the groups' replica sets
	// (one slot each); rehashing everything would move nearly all.
	if moved > 140 {
		t.Fatalf("a new member changed %d of 200 placements", moved)
	}
	for addr, n := range load {
		if n < 60 || n > 180 {
			t.Fatalf("member %s holds %d of 600 replicas: placement is lopsided (%v)", addr, n, load)
		}
	}
	if _, err := ReplicasFromMembers(members(2), "g", 3, nil); err == nil {
		t.Fatal("placed 3 replicas on 2 members")
	}
}
