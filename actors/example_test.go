package actors_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// startOneNode starts a one-node cluster named "orders" in system, with the
// key-value state machine in dir, and waits until it leads.
func startOneNode(system *actor.ActorSystem, dir string) (*actors.Node, *kvsm.SM, error) {
	quiet := slog.New(slog.DiscardHandler)
	// The log and hard state: a Pebble store in production, here the
	// in-memory one.
	st, err := store.NewMemStore(store.Options{ClusterID: "orders", NodeID: 1})
	if err != nil {
		return nil, nil, err
	}
	// The user's state machine: here the key-value one on Pebble.
	sm, err := kvsm.Open(filepath.Join(dir, "sm"), kvsm.Options{Logger: quiet})
	if err != nil {
		return nil, nil, err
	}
	node, err := actors.Start(system, actors.Config{
		ClusterID:    "orders",
		NodeID:       1,
		TickInterval: 10 * time.Millisecond,
	}, sm, st)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Once, on a fresh cluster: the founding voters.
	if err := node.Initialize(ctx, &messages.Membership{Voters: []uint64{1}}); err != nil {
		return nil, nil, err
	}
	// Wait for the election through the metrics watch.
	watch, stopWatch := node.WatchMetrics()
	defer stopWatch()
	for {
		select {
		case m := <-watch:
			if m.GetRole() == messages.Role_ROLE_LEADER {
				return node, sm, nil
			}
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// A node runs inside an actor system the application already has. Writes
// return the state machine's answer; after EnsureLinearizable a read of the
// local state machine is linearizable.
func Example() {
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler) // protoactor's own logs, quiet
	}))
	defer system.Shutdown()
	dir, _ := os.MkdirTemp("", "raftor-example")
	defer os.RemoveAll(dir)

	node, sm, err := startOneNode(system, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sm.Close()
	defer node.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A typed command; the typed result decodes into the state machine's
	// result message.
	res, err := node.ClientWriteCommand(ctx, kvsm.Put([]byte("greeting"), []byte("hello")))
	if err != nil {
		fmt.Println(err)
		return
	}
	var kv messages.KVResult
	if err := res.Decode(&kv); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("put ok:", kv.GetOk())

	// A linearizable read: wait until the local state machine holds every
	// acknowledged write, then read it.
	if err := node.EnsureLinearizable(ctx); err != nil {
		fmt.Println(err)
		return
	}
	v, _, _ := sm.Get([]byte("greeting"))
	fmt.Println("greeting:", string(v))

	id, _ := node.Leader()
	fmt.Println("leader:", id, "is leader:", node.IsLeader())
	// Output:
	// put ok: true
	// greeting: hello
	// leader: 1 is leader: true
}

// writer is an application actor: it sends a write to the node's PID and
// handles the answer as a message, never blocking its mailbox.
type writer struct {
	node *actor.PID
	done chan string
}

func (w *writer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.KVCommand:
		cmd, _ := anypb.New(m)
		// A request to a follower is forwarded to the leader, which
		// answers this actor directly.
		ctx.Request(w.node, &messages.ClientWriteRequest{Command: cmd,
			Request: &messages.RequestID{ClientId: 7, Sequence: 1}})
	case *messages.ClientWriteResponse:
		if err := actors.FromProto(m.GetError()); err != nil {
			w.done <- err.Error()
			return
		}
		var kv messages.KVResult
		_ = m.GetTypedResult().UnmarshalTo(&kv)
		w.done <- fmt.Sprintf("request %d/%d applied: ok=%v", m.GetRequest().GetClientId(), m.GetRequest().GetSequence(), kv.GetOk())
	}
}

// Application actors, local or in another actor system, talk to a node by
// message: they send messages.* requests to Node.PID() and receive the
// response.
func Example_applicationActor() {
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer system.Shutdown()
	dir, _ := os.MkdirTemp("", "raftor-example")
	defer os.RemoveAll(dir)
	node, sm, err := startOneNode(system, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sm.Close()
	defer node.Stop()

	done := make(chan string, 1)
	pid := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &writer{node: node.PID(), done: done}
	}))
	defer system.Root.Stop(pid)
	system.Root.Send(pid, kvsm.Put([]byte("k"), []byte("v")))
	fmt.Println(<-done)
	// Output:
	// request 7/1 applied: ok=true
}
