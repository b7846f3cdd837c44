//go:build !race

package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store/kvsm"
)

// placeOrder asks an application actor to store key=value in group.
type placeOrder struct {
	group, key, value string
	done              chan error
}

// orderTaker is an application actor: it writes through its member's
// group client, under its own RequestIDs, and matches the answers to the
// requests by the RequestID they echo.
type orderTaker struct {
	client  *actor.PID
	id, seq uint64
	waiting map[uint64]chan error
}

func (o *orderTaker) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *placeOrder:
		o.seq++
		cmd, _ := anypb.New(kvsm.Put([]byte(m.key), []byte(m.value)))
		o.waiting[o.seq] = m.done
		ctx.Request(o.client, &messages.GroupWriteRequest{Group: m.group, Command: cmd,
			Request: &messages.RequestID{ClientId: o.id, Sequence: o.seq}, TimeoutMs: 15000})
	case *messages.GroupWriteResponse:
		if done := o.waiting[m.GetRequest().GetSequence()]; done != nil {
			delete(o.waiting, m.GetRequest().GetSequence())
			done <- actors.FromProto(m.GetError())
		}
	}
}

func readKey(t *testing.T, c *GroupClient, group, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	v, err := c.Query(ctx, group, []byte(key))
	if err != nil {
		t.Fatalf("read %s/%s: %v", group, key, err)
	}
	return string(v)
}

func TestGroupsServeEveryMemberAndSurviveAStoppedMember(t *testing.T) {
	ms, dir := startCluster(t, clusterOpts{members: 3, groups: 3})
	takers := make([]*actor.PID, len(ms))
	for i, m := range ms {
		takers[i] = m.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
			return &orderTaker{client: m.client.PID(), id: uint64(1000 + i), waiting: map[uint64]chan error{}}
		}))
	}
	place := func(i int, group, key, value string) error {
		done := make(chan error, 1)
		ms[i].system.Root.Send(takers[i], &placeOrder{group: group, key: key, value: value, done: done})
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("no answer")
		}
	}

	// Application actors on every member write to every group; every
	// write is read back from another member.
	for i := range ms {
		for _, g := range dir.Groups() {
			if err := place(i, g.Name, fmt.Sprintf("from-%d", i), "placed"); err != nil {
				t.Fatalf("member %d, %s: %v", i, g.Name, err)
			}
		}
	}
	for i := range ms {
		for _, g := range dir.Groups() {
			if v := readKey(t, ms[(i+1)%len(ms)].client, g.Name, fmt.Sprintf("from-%d", i)); v != "placed" {
				t.Fatalf("%s from-%d = %q after an acknowledged write", g.Name, i, v)
			}
		}
	}

	// The cluster kind reaches a group from any member by its name.
	cmd, _ := anypb.New(kvsm.Put([]byte("via-kind"), []byte("yes")))
	res, err := ms[2].cluster.Request("orders-2", KindName, &messages.GroupWriteRequest{Group: "orders-2", Command: cmd,
		Request: &messages.RequestID{ClientId: 5000, Sequence: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := res.(*messages.GroupWriteResponse); !ok || r.GetError() != nil {
		t.Fatalf("write through the kind: %v", res)
	}
	if v := readKey(t, ms[0].client, "orders-2", "via-kind"); v != "yes" {
		t.Fatalf("via-kind = %q", v)
	}

	// Stop the member that leads group 1; every group keeps serving.
	victim := -1
	leader := ms[0].host.Leaders().Leader(1)
	for i, m := range ms {
		if m.host.cfg.NodeID == leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no member leads group 1 (leader %d)", leader)
	}
	ms[victim].stop()
	for i := range ms {
		if i == victim {
			continue
		}
		for _, g := range dir.Groups() {
			if err := place(i, g.Name, fmt.Sprintf("after-%d", i), "placed"); err != nil {
				t.Fatalf("member %d, %s, after member %d stopped: %v", i, g.Name, victim, err)
			}
			for j := range ms {
				if v := readKey(t, ms[i].client, g.Name, fmt.Sprintf("from-%d", j)); v != "placed" {
					t.Fatalf("%s from-%d = %q after member %d stopped", g.Name, j, v, victim)
				}
			}
		}
	}
}

func TestRetriedWriteIsAppliedOnce(t *testing.T) {
	ms, _ := startCluster(t, clusterOpts{members: 3, groups: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write := func(c *GroupClient, rid *messages.RequestID, key, value string) *messages.KVResult {
		t.Helper()
		cmd, _ := anypb.New(kvsm.Put([]byte(key), []byte(value)))
		res, err := c.WriteRequest(ctx, &messages.GroupWriteRequest{Group: "orders-1", Command: cmd, Request: rid})
		if err != nil {
			t.Fatalf("put %s=%s: %v", key, value, err)
		}
		kv := &messages.KVResult{}
		if err := res.Decode(kv); err != nil {
			t.Fatal(err)
		}
		return kv
	}
	// A write, then another client's write of the same key, then the
	// first write sent again (same client ID and sequence) from another
	// member: it must not be applied again, or it would undo the second.
	first := &messages.RequestID{ClientId: 77, Sequence: 1}
	if r := write(ms[0].client, first, "stock", "10"); r.GetDuplicate() {
		t.Fatal("the first write was taken for a duplicate")
	}
	write(ms[1].client, nil, "stock", "9")
	if r := write(ms[2].client, first, "stock", "10"); !r.GetDuplicate() {
		t.Fatal("the retried write was applied again")
	}
	if v := readKey(t, ms[0].client, "orders-1", "stock"); v != "9" {
		t.Fatalf("stock = %q, want 9: the retry overwrote a later write", v)
	}

	// The same request twice through the cluster kind, as the cluster's
	// own retry would send it: applied once.
	cmd, _ := anypb.New(kvsm.Put([]byte("reserved"), []byte("1")))
	req := &messages.GroupWriteRequest{Group: "orders-1", Command: cmd, Request: &messages.RequestID{ClientId: 78, Sequence: 1}}
	dups := 0
	for range 3 {
		res, err := ms[1].cluster.Request("orders-1", KindName, req)
		if err != nil {
			t.Fatal(err)
		}
		r := res.(*messages.GroupWriteResponse)
		if r.GetError() != nil {
			t.Fatal(r.GetError())
		}
		kv := &messages.KVResult{}
		if err := r.GetTypedResult().UnmarshalTo(kv); err != nil {
			t.Fatal(err)
		}
		if kv.GetDuplicate() {
			dups++
		}
	}
	if dups != 2 {
		t.Fatalf("%d of 3 copies were duplicates, want 2 (one application)", dups)
	}
}
