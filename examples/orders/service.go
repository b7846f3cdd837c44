package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// service is the three members and the shard directory they share.
type service struct {
	dir     *cluster.Directory
	members []*member
}

// member is one protoactor cluster member: its Raft replicas (the host),
// a group client, and the application's order desk actor.
type member struct {
	system  *actor.ActorSystem
	cluster *pcluster.Cluster
	host    *cluster.Host
	st      store.Store
	desk    *actor.PID
	svc     *service
	stopped bool
}

// startService starts three members on free loopback ports, every shard
// with a replica on each, and founds the shards.
func startService(dir string, shards int, quiet *slog.Logger) (*service, error) {
	addrs, err := freeAddrs(3)
	if err != nil {
		return nil, err
	}
	var replicas []cluster.Replica
	for _, a := range addrs {
		replicas = append(replicas, cluster.Replica{NodeID: cluster.NodeIDFromAddress(a), Address: a})
	}
	var groups []cluster.Group
	for i := 1; i <= shards; i++ {
		groups = append(groups, cluster.Group{Name: fmt.Sprintf("orders-%d", i), ID: uint64(i), Replicas: replicas})
	}
	gdir, err := cluster.NewDirectory("orders", groups...)
	if err != nil {
		return nil, err
	}
	svc := &service{dir: gdir}
	registry := test.NewInMemAgent() // the in-process provider: no external service
	for i, a := range addrs {
		m, err := svc.startMember(registry, a, replicas[i].NodeID, filepath.Join(dir, fmt.Sprintf("member-%d", i+1)), quiet)
		if err != nil {
			svc.stop()
			return nil, err
		}
		svc.members = append(svc.members, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, g := range groups {
		// Once, on one member, for a new shard.
		if err := svc.members[0].host.Initialize(ctx, g); err != nil {
			svc.stop()
			return nil, fmt.Errorf("found %s: %w", g.Name, err)
		}
	}
	return svc, nil
}

func (s *service) startMember(registry *test.InMemAgent, addr string, nodeID uint64, dir string, quiet *slog.Logger) (*member, error) {
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	leaders := cluster.NewLeaderTable()
	ccfg := cluster.ClientConfig{Directory: s.dir, Leaders: leaders, AttemptTimeout: 500 * time.Millisecond}
	kind, err := cluster.Kind(ccfg)
	if err != nil {
		return nil, err
	}
	rc, err := cluster.RemoteConfig(system, remote.Config{Address: addr})
	if err != nil {
		return nil, err
	}
	c, err := cluster.StartMember(system, pcluster.Configure("orders", test.NewTestProvider(registry), disthash.New(), rc, pcluster.WithKinds(kind)))
	if err != nil {
		return nil, err
	}
	st, err := store.OpenPebble(filepath.Join(dir, "log"), store.PebbleOptions{Options: store.Options{ClusterID: "orders", NodeID: nodeID}, Logger: quiet})
	if err != nil {
		c.Shutdown(false)
		return nil, err
	}
	host, err := cluster.NewHost(system, cluster.HostConfig{
		ClusterID: "orders", NodeID: nodeID, Address: addr, Store: st, Leaders: leaders,
		// Each shard's orders live in a kvsm of their own, next to the log.
		StateMachine: func(g cluster.Group) (store.StateMachine, error) {
			return kvsm.Open(filepath.Join(dir, g.Name), kvsm.Options{Logger: quiet})
		},
		// A query is an order ID; the answer is the order, empty if none.
		Query: func(_ cluster.Group, sm store.StateMachine, q []byte) ([]byte, error) {
			v, _, err := sm.(*kvsm.SM).Get(q)
			return v, err
		},
		Node: actors.Config{TickInterval: 50 * time.Millisecond, Logger: quiet},
	})
	if err != nil {
		_ = st.Close()
		c.Shutdown(false)
		return nil, err
	}
	m := &member{system: system, cluster: c, host: host, st: st, svc: s}
	for _, g := range s.dir.Groups() {
		if _, err := host.StartGroup(g); err != nil {
			m.stop()
			return nil, err
		}
	}
	clientProps, err := cluster.NewClientProps(ccfg)
	if err != nil {
		m.stop()
		return nil, err
	}
	client := system.Root.Spawn(clientProps)
	m.desk = system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return newDesk(client, s.shardOf) }))
	return m, nil
}

// shardOf is the shard an order belongs to.
func (s *service) shardOf(orderID string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(orderID))
	gs := s.dir.Groups()
	return gs[int(h.Sum32())%len(gs)].Name
}

// leads counts the shards member i leads, from member i's leader table.
func (s *service) leads(i int) int {
	m := s.members[i]
	n := 0
	for _, g := range s.dir.Groups() {
		if m.host.Leaders().Leader(g.ID) == m.host.Node(g.ID).ID() {
			n++
		}
	}
	return n
}

func (s *service) busiestLeader() int {
	best := 0
	for i := range s.members {
		if s.leads(i) > s.leads(best) {
			best = i
		}
	}
	return best
}

func (s *service) stop() {
	for _, m := range s.members {
		m.stop()
	}
}

func (m *member) stop() {
	if m.stopped {
		return
	}
	m.stopped = true
	_ = m.host.Stop()
	_ = m.st.Close()
	m.cluster.Shutdown(false)
}

// place asks this member's order desk to place an order and waits for the
// answer; lookup reads an order through it.
func (m *member) place(ctx context.Context, id, what string) (string, error) {
	return m.ask(ctx, &placeOrder{id: id, what: what})
}

func (m *member) lookup(ctx context.Context, id string) (string, error) {
	return m.ask(ctx, &getOrder{id: id})
}

func (m *member) ask(ctx context.Context, msg any) (string, error) {
	res, err := m.system.Root.RequestFuture(m.desk, msg, 20*time.Second).Result()
	if err != nil {
		return "", err
	}
	a := res.(*deskAnswer)
	return a.text, a.err
}

func freeAddrs(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

var errNoOrder = errors.New("no such order")

// The order desk: the application's actor. It never blocks its mailbox:
// it sends group requests to the group client and answers its own caller
// when the group client answers it.

type placeOrder struct{ id, what string }
type getOrder struct{ id string }
type deskAnswer struct {
	text string
	err  error
}

type desk struct {
	client  *actor.PID
	shardOf func(string) string
	// clientID and seq are the desk's own RequestIDs: a placement sent
	// again under the same ID is applied by its shard once.
	clientID, seq uint64
	writes        map[uint64]*actor.PID
	reads         map[uint64]*actor.PID
}

func newDesk(client *actor.PID, shardOf func(string) string) *desk {
	return &desk{client: client, shardOf: shardOf, writes: map[uint64]*actor.PID{}, reads: map[uint64]*actor.PID{}}
}

func (d *desk) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		// Random, so that two desks never share a client ID. A desk that
		// must resend after its own restart would keep its client ID and
		// sequence in its journal with the orders.
		d.clientID = rand.Uint64() | 1
	case *placeOrder:
		d.seq++
		// CreateIfAbsent: an order ID is placed once, whoever asks again.
		cmd, _ := anypb.New(kvsm.CreateIfAbsent([]byte(m.id), []byte(m.what)))
		d.writes[d.seq] = ctx.Sender()
		ctx.Request(d.client, &messages.GroupWriteRequest{Group: d.shardOf(m.id), Command: cmd,
			Request: &messages.RequestID{ClientId: d.clientID, Sequence: d.seq}, TimeoutMs: 15000})
	case *messages.GroupWriteResponse:
		to := d.writes[m.GetRequest().GetSequence()]
		delete(d.writes, m.GetRequest().GetSequence())
		if err := actors.FromProto(m.GetError()); err != nil {
			ctx.Send(to, &deskAnswer{err: err})
			return
		}
		res := &messages.KVResult{}
		_ = m.GetTypedResult().UnmarshalTo(res)
		text := fmt.Sprintf("placed (log index %d)", m.GetIndex())
		if !res.GetOk() {
			text = fmt.Sprintf("refused: already placed as %q", res.GetPrevious())
		}
		ctx.Send(to, &deskAnswer{text: text})
	case *getOrder:
		d.seq++
		d.reads[d.seq] = ctx.Sender()
		ctx.Request(d.client, &messages.GroupQueryRequest{Group: d.shardOf(m.id), Query: []byte(m.id), Id: d.seq, TimeoutMs: 15000})
	case *messages.GroupQueryResponse:
		to := d.reads[m.GetId()]
		delete(d.reads, m.GetId())
		if err := actors.FromProto(m.GetError()); err != nil {
			ctx.Send(to, &deskAnswer{err: err})
			return
		}
		if len(m.GetResult()) == 0 {
			ctx.Send(to, &deskAnswer{err: errNoOrder})
			return
		}
		ctx.Send(to, &deskAnswer{text: string(m.GetResult())})
	}
}
