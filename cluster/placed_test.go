//go:build !race

package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// startPlacedCluster starts len(addrs) members with the test provider; each
// runs the replicas the directory places on it, all of them on the
// member's one store and shared writer.
func startPlacedCluster(t *testing.T, addrs []string, dir *Directory) []*member {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	registry := test.NewInMemAgent()
	dirs := make([]string, len(addrs))
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	var ms []*member
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, m := range ms {
			wg.Add(1)
			go func() { defer wg.Done(); m.stop() }()
		}
		wg.Wait()
	})
	for i, a := range addrs {
		system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
		leaders := NewLeaderTable()
		ccfg := ClientConfig{Directory: dir, Leaders: leaders, AttemptTimeout: 500 * time.Millisecond}
		kind, err := Kind(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := RemoteConfig(system, remote.Config{Address: a})
		if err != nil {
			t.Fatal(err)
		}
		c, err := StartMember(system, pcluster.Configure("ledger", test.NewTestProvider(registry), disthash.New(), rc, pcluster.WithKinds(kind)))
		if err != nil {
			t.Fatal(err)
		}
		id := NodeIDFromAddress(a)
		st, err := store.OpenPebble(filepath.Join(dirs[i], "log"), store.PebbleOptions{Options: store.Options{ClusterID: dir.ClusterID(), NodeID: id}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		d := dirs[i]
		h, err := NewHost(system, HostConfig{ClusterID: dir.ClusterID(), NodeID: id, Address: a, Store: st, Leaders: leaders,
			StateMachine: func(g Group) (store.StateMachine, error) {
				return kvsm.Open(filepath.Join(d, g.Name), kvsm.Options{Logger: quiet, NoSync: true})
			},
			Query: kvQuery, Node: actors.Config{TickInterval: 50 * time.Millisecond, Logger: quiet}})
		if err != nil {
			t.Fatal(err)
		}
		client, err := NewGroupClient(system, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, &member{system: system, cluster: c, host: h, client: client, st: st})
	}
	if err := WaitMembers(ms[0].cluster, len(addrs), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return ms
}

// Groups of three replicas placed by ReplicasFromMembers on a five-member
// cluster: each member runs exactly the replicas placed on it, all on one
// shared writer; every member reaches every group through its client; and
// when a member hosting several groups stops, each of those groups goes on
// with the two replicas left.
func TestPlacedGroupsSurviveAMemberHostingSeveral(t *testing.T) {
	addrs := freeAddrs(t, 5)
	// The placement each member computes from the member list it will see.
	var planned []*pcluster.Member
	for _, a := range addrs {
		host, port, _ := splitAddr(a)
		planned = append(planned, &pcluster.Member{Host: host, Port: port, Id: a})
	}
	var groups []Group
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("ledger-%d", i)
		reps, err := ReplicasFromMembers(planned, name, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, Group{Name: name, ID: uint64(i), Replicas: reps})
	}
	dir, err := NewDirectory("ledger", groups...)
	if err != nil {
		t.Fatal(err)
	}
	ms := startPlacedCluster(t, addrs, dir)

	// The live member list places every group where the plan did, on three
	// distinct members.
	live := ms[0].cluster.MemberList.Members().Members()
	for _, g := range dir.Groups() {
		reps, err := ReplicasFromMembers(live, g.Name, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(reps, g.Replicas) {
			t.Fatalf("%s: the live members place it on %v, the plan on %v", g.Name, reps, g.Replicas)
		}
		seen := map[string]bool{}
		for _, r := range reps {
			seen[r.Address] = true
		}
		if len(seen) != 3 {
			t.Fatalf("%s: replicas %v are not on three members", g.Name, reps)
		}
	}

	// Every member starts the replicas placed on it; one replica per group
	// founds it.
	hosts := map[uint64][]int{} // group -> members running a replica
	for i, m := range ms {
		for _, g := range dir.Groups() {
			if _, ok := g.replica(m.host.cfg.NodeID); !ok {
				if _, err := m.host.StartGroup(g); err == nil {
					t.Fatalf("member %d started %s, which does not list it", i, g.Name)
				}
				continue
			}
			if _, err := m.host.StartGroup(g); err != nil {
				t.Fatal(err)
			}
			hosts[g.ID] = append(hosts[g.ID], i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, g := range dir.Groups() {
		if err := ms[hosts[g.ID][0]].host.Initialize(ctx, g); err != nil {
			t.Fatalf("initialize %s: %v", g.Name, err)
		}
	}
	for i, m := range ms {
		var want []uint64
		for _, g := range dir.Groups() {
			if slices.Contains(hosts[g.ID], i) {
				want = append(want, g.ID)
			}
		}
		if got := m.host.writer.Groups(); !slices.Equal(got, want) {
			t.Fatalf("member %d's shared writer serves groups %v, it hosts %v", i, got, want)
		}
	}

	put := func(c *GroupClient, group, key, value string) error {
		cmd, _ := anypb.New(kvsm.Put([]byte(key), []byte(value)))
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		_, err := c.WriteRequest(wctx, &messages.GroupWriteRequest{Group: group, Command: cmd})
		return err
	}
	// Every member writes to every group, hosting a replica or not.
	for i, m := range ms {
		for _, g := range dir.Groups() {
			if err := put(m.client, g.Name, fmt.Sprintf("from-%d", i), "booked"); err != nil {
				t.Fatalf("member %d, %s: %v", i, g.Name, err)
			}
		}
	}

	// Stop the member that hosts the most groups.
	victim, most := 0, 0
	for i := range ms {
		n := 0
		for _, hs := range hosts {
			if slices.Contains(hs, i) {
				n++
			}
		}
		if n > most {
			victim, most = i, n
		}
	}
	if most < 2 {
		t.Fatalf("no member hosts two groups: %v", hosts)
	}
	appends := ms[victim].host.StorageStats()
	t.Logf("stopping member %d, which hosts %d groups (its writer: %d appends in %d syncs)", victim, most, appends.Appends, appends.Batches)
	ms[victim].stop()
	reader := (victim + 1) % len(ms)
	for _, g := range dir.Groups() {
		for i, m := range ms {
			if i == victim {
				continue
			}
			if err := put(m.client, g.Name, fmt.Sprintf("after-%d", i), "booked"); err != nil {
				t.Fatalf("member %d, %s, after member %d stopped: %v", i, g.Name, victim, err)
			}
		}
		for i := range ms {
			if v := readKey(t, ms[reader].client, g.Name, fmt.Sprintf("from-%d", i)); v != "booked" {
				t.Fatalf("%s from-%d = %q after member %d stopped", g.Name, i, v, victim)
			}
		}
	}
}

func splitAddr(a string) (string, int32, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	return host, int32(p), err
}
