//go:build !race

package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// member is one member of an in-process protoactor cluster that hosts
// Raft groups.
type member struct {
	system  *actor.ActorSystem
	cluster *pcluster.Cluster
	host    *Host
	client  *GroupClient
	st      store.Store
	stopped bool
}

func (m *member) stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	m.client.Stop()
	_ = m.host.Stop()
	m.cluster.Shutdown(true)
	_ = m.st.Close()
	// Cluster.Shutdown shuts the actor system down too.
}

func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return out
}

// kvQuery answers a query with the value of the key it names.
func kvQuery(_ Group, sm store.StateMachine, key []byte) ([]byte, error) {
	v, _, err := sm.(*kvsm.SM).Get(key)
	return v, err
}

type clusterOpts struct {
	members, groups int
	// stateMachine, when set, replaces kvsm (the benchmark uses a light one).
	stateMachine func(dir string, g Group) (store.StateMachine, error)
	node         actors.Config
	// deferGroups leaves the groups to startGroups.
	deferGroups bool
}

// startCluster starts opts.members members with the test provider, each
// hosting a replica of every group, and founds every group.
func startCluster(t testing.TB, opts clusterOpts) ([]*member, *Directory) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	addrs := freeAddrs(t, opts.members)
	var replicas []Replica
	for _, a := range addrs {
		replicas = append(replicas, Replica{NodeID: NodeIDFromAddress(a), Address: a})
	}
	var groups []Group
	for i := 1; i <= opts.groups; i++ {
		groups = append(groups, Group{Name: fmt.Sprintf("orders-%d", i), ID: uint64(i), Replicas: replicas})
	}
	dir, err := NewDirectory("shop", groups...)
	if err != nil {
		t.Fatal(err)
	}
	if opts.stateMachine == nil {
		opts.stateMachine = func(d string, g Group) (store.StateMachine, error) {
			return kvsm.Open(filepath.Join(d, fmt.Sprint(g.ID)), kvsm.Options{Logger: quiet, NoSync: true})
		}
	}
	if opts.node.TickInterval == 0 {
		opts.node.TickInterval = 50 * time.Millisecond
	}
	opts.node.Logger = quiet
	registry := test.NewInMemAgent()
	// The directories first: cleanups run last-registered first, and the
	// members must stop before their directories are removed.
	dirs := make([]string, len(addrs))
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	var ms []*member
	t.Cleanup(func() {
		// A member's shutdown waits seconds for its remote's writers:
		// stop them all at once.
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
		cfg := pcluster.Configure("shop", test.NewTestProvider(registry), disthash.New(), rc, pcluster.WithKinds(kind))
		c, err := StartMember(system, cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := dirs[i]
		st, err := store.OpenPebble(filepath.Join(d, "log"), store.PebbleOptions{Options: store.Options{ClusterID: "shop", NodeID: replicas[i].NodeID}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		h, err := NewHost(system, HostConfig{ClusterID: "shop", NodeID: replicas[i].NodeID, Address: a, Store: st, Leaders: leaders,
			StateMachine: func(g Group) (store.StateMachine, error) { return opts.stateMachine(d, g) },
			Query:        kvQuery, Node: opts.node})
		if err != nil {
			t.Fatal(err)
		}
		client, err := NewGroupClient(system, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, &member{system: system, cluster: c, host: h, client: client, st: st})
	}
	if err := WaitMembers(ms[0].cluster, opts.members, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !opts.deferGroups {
		startGroups(t, ms, dir)
	}
	return ms, dir
}

// startGroups starts every group of dir on every member and founds it.
func startGroups(t testing.TB, ms []*member, dir *Directory) {
	t.Helper()
	for _, m := range ms {
		for _, g := range dir.Groups() {
			if _, err := m.host.StartGroup(g); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, g := range dir.Groups() {
		if err := ms[0].host.Initialize(ctx, g); err != nil {
			t.Fatalf("initialize %s: %v", g.Name, err)
		}
	}
}
