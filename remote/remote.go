// Package remote wires protoactor remote between Raftor nodes: the listen
// and advertised addresses, TLS with mutual authentication, the transport's
// size limits and keepalives, and a guard that inspects everything arriving
// from the network before protoactor's own reader sees it.
//
// The pinned protoactor remote has traps that this package closes:
//   - a message of a type the receiver does not know, or a batch with an
//     index outside its tables, panics the receiving process: the guard
//     drops such envelopes with a counted, logged reason;
//   - two unary calls of its gRPC service panic: they are refused;
//   - gRPC's default 4 MiB receive limit applies to a whole writer batch, so
//     a few large appends tear the link down and lose the queued batch: the
//     limits and the writer batch size are set together here;
//   - no keepalive is configured, so a blackholed peer goes unnoticed:
//     keepalives are on by default;
//   - Start panics when the port is taken: Start returns an error instead.
//
// The messages of package messages register themselves with protobuf's
// global registry when the package is imported, which is all protoactor
// needs to (de)serialize them: users register nothing by hand.
package remote

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"

	// Registers Raftor's protocol with the protobuf registry.
	_ "github.com/raftor/raftor/messages"
)

// Config configures protoactor remote for a node's actor system.
type Config struct {
	// Address is where the node listens, "host:port". Port 0 picks a free
	// port; Remote.Address tells which.
	Address string
	// AdvertisedAddress is the address other nodes use to reach this one,
	// when it differs from Address (behind NAT or a proxy).
	AdvertisedAddress string

	// TLS, when set, secures every connection. ServerTLS must require and
	// verify client certificates (tls.RequireAndVerifyClientCert with
	// ClientCAs) for mutual authentication; ClientTLS must present a
	// certificate and verify the server with RootCAs. MutualTLS builds both
	// from one CA and one node certificate.
	ServerTLS *tls.Config
	ClientTLS *tls.Config

	// MaxMessageBytes bounds one gRPC message in either direction, which for
	// protoactor is one writer batch of up to WriterBatchSize actor
	// messages. Default 64 MiB. Raftor keeps each append and snapshot chunk
	// well below MaxMessageBytes / WriterBatchSize by default.
	MaxMessageBytes int
	// WriterBatchSize is how many actor messages protoactor packs into one
	// gRPC message. Default 16.
	WriterBatchSize int
	// WriterQueueSize bounds the messages queued for one peer; beyond it
	// protoactor drops them (Raft resends). Default 4096.
	WriterQueueSize int

	// KeepaliveInterval and KeepaliveTimeout detect a peer that stopped
	// answering without closing the connection. Defaults 2 s and 2 s. The
	// accepting side pings every KeepaliveInterval; gRPC pings from the
	// dialing side no more often than every 10 s whatever is asked, so a
	// dark outbound connection is dropped after about 10 s plus the
	// timeout.
	KeepaliveInterval time.Duration
	KeepaliveTimeout  time.Duration

	// Logger receives the guard's and the transport's lines; nil discards.
	Logger *slog.Logger

	// Inbound, when set, decides for every message arriving from another
	// node whether it is delivered, dropped, duplicated or delayed. It is
	// for fault injection in tests (cluster/clustertest); nil, the default,
	// costs nothing. See InboundFilter.
	Inbound InboundFilter
}

// Default limits.
const (
	DefaultMaxMessageBytes   = 64 << 20
	DefaultWriterBatchSize   = 16
	DefaultWriterQueueSize   = 4096
	DefaultKeepaliveInterval = 2 * time.Second
	DefaultKeepaliveTimeout  = 2 * time.Second
)

func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.WriterBatchSize == 0 {
		c.WriterBatchSize = DefaultWriterBatchSize
	}
	if c.WriterQueueSize == 0 {
		c.WriterQueueSize = DefaultWriterQueueSize
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first problem with c, defaults applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("remote: address %q: %w", c.Address, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("remote: address %q: port must be a number from 0 to 65535", c.Address)
	}
	_ = host
	if c.AdvertisedAddress != "" {
		if _, _, err := net.SplitHostPort(c.AdvertisedAddress); err != nil {
			return fmt.Errorf("remote: advertised address %q: %w", c.AdvertisedAddress, err)
		}
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		return errors.New("remote: ServerTLS and ClientTLS must be set together")
	}
	if c.ServerTLS != nil && c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("remote: ServerTLS must require and verify client certificates (mutual TLS)")
	}
	switch {
	case c.MaxMessageBytes < 1<<20:
		return fmt.Errorf("remote: MaxMessageBytes %d is below 1 MiB", c.MaxMessageBytes)
	case c.WriterBatchSize < 1:
		return fmt.Errorf("remote: WriterBatchSize %d must be at least 1", c.WriterBatchSize)
	case c.WriterQueueSize < c.WriterBatchSize:
		return fmt.Errorf("remote: WriterQueueSize %d is below WriterBatchSize %d", c.WriterQueueSize, c.WriterBatchSize)
	case c.KeepaliveInterval < 0 || c.KeepaliveTimeout < 0:
		return errors.New("remote: keepalive durations must not be negative")
	}
	return nil
}

// MaxPayloadBytes is the largest single actor message that fits in a full
// writer batch under c's limits, with room for envelopes and headers.
func (c Config) MaxPayloadBytes() int {
	c = c.withDefaults()
	return c.MaxMessageBytes/c.WriterBatchSize - 64<<10
}

// Remote is protoactor remote running for one actor system.
type Remote struct {
	r       *pr.Remote
	guard   *guard
	address string
}

// Transport is protoactor remote's configuration for one actor system with
// Raftor's limits, keepalives, TLS and inbound guard. Start builds one and
// starts protoactor's remote with it; a protoactor cluster member, whose
// remote protoactor starts itself, takes Transport.Config instead.
type Transport struct {
	// Config is what protoactor's remote.NewRemote and cluster.Configure take.
	Config *pr.Config
	guard  *guard
}

// NewTransport builds the configuration of system's remote from cfg.
func NewTransport(system *actor.ActorSystem, cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	host, portStr, _ := net.SplitHostPort(cfg.Address)
	port, _ := strconv.Atoi(portStr)

	g := &guard{log: cfg.Logger, faults: newFaults(system, cfg.Inbound)}
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.ChainStreamInterceptor(g.streamInterceptor),
		grpc.ChainUnaryInterceptor(g.unaryInterceptor),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveInterval,
			Timeout: cfg.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveInterval / 2,
			PermitWithoutStream: true,
		}),
	}
	creds := insecure.NewCredentials()
	if cfg.ServerTLS != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
		creds = credentials.NewTLS(cfg.ClientTLS)
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes),
		),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveInterval,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}
	opts := []pr.ConfigOption{
		pr.WithServerOptions(serverOpts...),
		pr.WithDialOptions(dialOpts...),
		pr.WithEndpointWriterBatchSize(cfg.WriterBatchSize),
		pr.WithEndpointWriterQueueSize(cfg.WriterQueueSize),
	}
	if cfg.AdvertisedAddress != "" {
		opts = append(opts, pr.WithAdvertisedHost(cfg.AdvertisedAddress))
	}
	return &Transport{Config: pr.Configure(host, port, opts...), guard: g}, nil
}

// Stats returns the guard's counters.
func (t *Transport) Stats() Stats { return t.guard.stats() }

// Start enables remote on system with cfg and starts listening. It returns
// an error, never panics, when the address cannot be used.
func Start(system *actor.ActorSystem, cfg Config) (*Remote, error) {
	t, err := NewTransport(system, cfg)
	if err != nil {
		return nil, err
	}
	r := pr.NewRemote(system, t.Config)
	if err := startRecovering(r); err != nil {
		return nil, fmt.Errorf("remote: listen on %s: %w", cfg.Address, err)
	}
	return &Remote{r: r, guard: t.guard, address: system.Address()}, nil
}

// startRecovering turns protoactor's panic on a failed listen into an error.
func startRecovering(r *pr.Remote) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if e, ok := p.(error); ok {
				err = e
				return
			}
			err = fmt.Errorf("%v", p)
		}
	}()
	r.Start()
	return nil
}

// Address is the address other nodes reach this one at.
func (r *Remote) Address() string { return r.address }

// Protoactor returns protoactor's remote, for users who need it directly.
func (r *Remote) Protoactor() *pr.Remote { return r.r }

// Stats counts what the guard dropped, by reason, and what it let through.
type Stats struct {
	Passed   uint64
	Rejected map[string]uint64
}

// Stats returns the guard's counters.
func (r *Remote) Stats() Stats { return r.guard.stats() }

func (g *guard) stats() Stats {
	s := Stats{Passed: g.passed.Load(), Rejected: map[string]uint64{}}
	for i := RejectReason(0); i < numRejectReasons; i++ {
		if n := g.rejects[i].Load(); n > 0 {
			s.Rejected[i.String()] = n
		}
	}
	return s
}

// shutdownGrace bounds how long Shutdown waits for protoactor's graceful
// stop.
const shutdownGrace = 2 * time.Second

// Shutdown stops the server and closes the connections to other nodes.
//
// The pinned protoactor's graceful stop waits for its endpoint writers, and
// one that is still redialling a peer which went away holds it for about
// 10 s. Shutdown waits shutdownGrace for it, then stops the gRPC server hard
// and returns; protoactor's remaining writer goroutines end by themselves
// once their dial attempts run out.
func (r *Remote) Shutdown() {
	r.guard.faults.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// protoactor's graceful stop can panic ("send on closed channel")
		// when an inbound stream already ended with an error (a peer that
		// crashed). Stopping is all that is left to do, so the panic ends
		// the graceful part instead of the process.
		defer func() { _ = recover() }()
		r.r.Shutdown(true)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		r.r.Shutdown(false)
	}
}
