package cluster

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	pr "github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/raftor/raftor/remote"
)

// RemoteConfig builds the protoactor remote configuration that a
// protoactor cluster member starts with (pcluster.Configure takes it),
// with Raftor's transport settings from cfg: message size limits sized
// with the writer batch, keepalives that notice a blackholed peer, and
// mutual TLS when set.
//
// It does not install the inbound guard of remote.Start (which drops
// messages of types this process does not know before protoactor's reader
// panics on them): the guard is internal to package remote. Members of one
// cluster that run the same binary never send such messages.
func RemoteConfig(cfg remote.Config) (*pr.Config, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = remote.DefaultMaxMessageBytes
	}
	if cfg.WriterBatchSize == 0 {
		cfg.WriterBatchSize = remote.DefaultWriterBatchSize
	}
	if cfg.WriterQueueSize == 0 {
		cfg.WriterQueueSize = remote.DefaultWriterQueueSize
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = remote.DefaultKeepaliveInterval
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = remote.DefaultKeepaliveTimeout
	}
	host, portStr, _ := net.SplitHostPort(cfg.Address)
	port, _ := strconv.Atoi(portStr)
	server := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveInterval, Timeout: cfg.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveInterval / 2, PermitWithoutStream: true}),
	}
	creds := insecure.NewCredentials()
	if cfg.ServerTLS != nil {
		server = append(server, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
		creds = credentials.NewTLS(cfg.ClientTLS)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.KeepaliveInterval, Timeout: cfg.KeepaliveTimeout, PermitWithoutStream: true}),
	}
	opts := []pr.ConfigOption{
		pr.WithServerOptions(server...),
		pr.WithDialOptions(dial...),
		pr.WithEndpointWriterBatchSize(cfg.WriterBatchSize),
		pr.WithEndpointWriterQueueSize(cfg.WriterQueueSize),
	}
	if cfg.AdvertisedAddress != "" {
		opts = append(opts, pr.WithAdvertisedHost(cfg.AdvertisedAddress))
	}
	return pr.Configure(host, port, opts...), nil
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
