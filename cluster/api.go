package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
)

// GroupClient is the Go API of a group client actor, for code that is not
// an actor. Its methods are safe for concurrent use; they wait for the
// answer, so an actor sends the messages to PID() instead.
type GroupClient struct {
	system  *actor.ActorSystem
	pid     *actor.PID
	timeout time.Duration
}

// NewGroupClient spawns a group client actor in system.
func NewGroupClient(system *actor.ActorSystem, cfg ClientConfig) (*GroupClient, error) {
	if system == nil {
		return nil, errors.New("raftor: NewGroupClient needs an actor system")
	}
	props, err := NewClientProps(cfg)
	if err != nil {
		return nil, err
	}
	return &GroupClient{system: system, pid: system.Root.Spawn(props), timeout: cfg.withDefaults().RequestTimeout}, nil
}

// PID is the client actor.
func (c *GroupClient) PID() *actor.PID { return c.pid }

// Stop stops the client; requests in flight are answered STOPPED.
func (c *GroupClient) Stop() { _ = c.system.Root.StopFuture(c.pid).Wait() }

// Write proposes cmd to the group named group and returns the state
// machine's answer once it is applied. The client chooses the RequestID.
func (c *GroupClient) Write(ctx context.Context, group string, cmd proto.Message) (*actors.WriteResult, error) {
	a, err := anypb.New(cmd)
	if err != nil {
		return nil, &actors.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: err.Error()}
	}
	return c.WriteRequest(ctx, &messages.GroupWriteRequest{Group: group, Command: a})
}

// WriteRequest sends req as it is: with req.Request set, under the
// caller's own RequestID, so that sending the same write again (after a
// crash of the caller, say) is applied once.
func (c *GroupClient) WriteRequest(ctx context.Context, req *messages.GroupWriteRequest) (*actors.WriteResult, error) {
	res, err := c.call(ctx, true, func(ms uint64) { req = proto.Clone(req).(*messages.GroupWriteRequest); req.TimeoutMs = ms }, func() proto.Message { return req })
	if err != nil {
		return nil, err
	}
	r, ok := res.(*messages.GroupWriteResponse)
	if !ok {
		return nil, fmt.Errorf("raftor: the group client answered %T", res)
	}
	if err := actors.FromProto(r.GetError()); err != nil {
		return nil, err
	}
	return &actors.WriteResult{Index: r.GetIndex(), Term: r.GetTerm(), Data: r.GetResult(), Typed: r.GetTypedResult()}, nil
}

// Query runs query against the group's state machine on its leader, after
// a read index round: the answer reflects every write acknowledged before
// Query was called.
func (c *GroupClient) Query(ctx context.Context, group string, query []byte) ([]byte, error) {
	req := &messages.GroupQueryRequest{Group: group, Query: query}
	res, err := c.call(ctx, false, func(ms uint64) { req.TimeoutMs = ms }, func() proto.Message { return req })
	if err != nil {
		return nil, err
	}
	r, ok := res.(*messages.GroupQueryResponse)
	if !ok {
		return nil, fmt.Errorf("raftor: the group client answered %T", res)
	}
	if err := actors.FromProto(r.GetError()); err != nil {
		return nil, err
	}
	return r.GetResult(), nil
}

// call sends a request with most of the context's time as its timeout,
// so that the client's own answer (UNKNOWN_OUTCOME for a write that may
// have committed) arrives before the context ends. The answer comes to a
// one-off process that hands it over a channel: no future and no
// goroutine per call.
func (c *GroupClient) call(ctx context.Context, write bool, setTimeout func(ms uint64), req func() proto.Message) (any, error) {
	d := c.timeout
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	if d <= 0 {
		return nil, &actors.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Msg: "the context's deadline has passed"}
	}
	setTimeout(uint64(max((d-min(d/10, 200*time.Millisecond))/time.Millisecond, 1)))
	rp := &replyProcess{ch: make(chan any, 1)}
	pid, _ := c.system.ProcessRegistry.Add(rp, "raftor-group-call"+c.system.ProcessRegistry.NextId())
	defer c.system.ProcessRegistry.Remove(pid)
	c.system.Root.RequestWithCustomSender(c.pid, req(), pid)
	timer := time.NewTimer(d + time.Second)
	defer timer.Stop()
	var err error
	select {
	case res := <-rp.ch:
		return res, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errors.New("the group client did not answer")
	}
	if write {
		return nil, &actors.Error{Code: messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, Msg: err.Error() + "; the write may still commit"}
	}
	return nil, &actors.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Msg: err.Error()}
}

// replyProcess takes the one answer to a call.
type replyProcess struct{ ch chan any }

func (p *replyProcess) SendUserMessage(_ *actor.PID, m any) {
	select {
	case p.ch <- actor.UnwrapEnvelopeMessage(m):
	default: // a second answer has no one waiting for it
	}
}
func (p *replyProcess) SendSystemMessage(*actor.PID, any) {}
func (p *replyProcess) Stop(*actor.PID)                   {}

// KindName is the cluster kind of the group client.
const KindName = "raftor-group-client"

// Kind is the group client as a stateless cluster kind: any member calls
// cluster.Request(groupName, KindName, &messages.GroupWriteRequest{...})
// and a client activation (placed by the cluster, one per identity) does
// the leader finding and retrying. Use the group's name as the identity
// so that one activation carries a group's writes.
//
// The cluster retries a call that timed out, so the same request may
// reach the activation twice, or reach a new activation after a topology
// change. A caller that needs a write applied once sets
// GroupWriteRequest.Request to its own (client ID, sequence): the copies
// then share one RequestID and the state machine applies one of them.
// Without it each copy is a new write.
func Kind(cfg ClientConfig) (*pcluster.Kind, error) {
	props, err := NewClientProps(cfg)
	if err != nil {
		return nil, err
	}
	return pcluster.NewKind(KindName, props), nil
}
