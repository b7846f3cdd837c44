package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	pr "github.com/asynkron/protoactor-go/remote"

	"github.com/raftor/raftor/remote"
)

// RemoteConfig builds the protoactor remote configuration that system
// starts with as a protoactor cluster member (pcluster.Configure takes it),
// with everything remote.Start sets up: message size limits sized with the
// writer batch, keepalives that notice a blackholed peer, mutual TLS when
// set, and the inbound guard that drops what would panic protoactor's
// reader.
func RemoteConfig(system *actor.ActorSystem, cfg remote.Config) (*pr.Config, error) {
	t, err := remote.NewTransport(system, cfg)
	if err != nil {
		return nil, err
	}
	return t.Config, nil
}

// StartMember starts system as a member of the protoactor cluster config
// describes. protoactor panics when the member cannot start (its port is
// taken, say); StartMember returns that as an error.
func StartMember(system *actor.ActorSystem, config *pcluster.Config) (c *pcluster.Cluster, err error) {
	if system == nil || config == nil {
		return nil, errors.New("raftor: StartMember needs an actor system and a cluster config")
	}
	defer func() {
		if p := recover(); p != nil {
			c, err = nil, fmt.Errorf("raftor: start cluster member: %v", p)
		}
	}()
	c = pcluster.New(system, config)
	c.StartMember()
	return c, nil
}

// WaitMembers waits until the cluster's member list counts n members.
func WaitMembers(c *pcluster.Cluster, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for c.MemberList.Length() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("raftor: %d cluster members after %v, want %d", c.MemberList.Length(), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
