// The pinned protoactor's Remote.Start replaces gRPC's global logger on
// every call, which the race detector reports against any other remote
// already serving in the same process. Tests that run several remotes in one
// process are therefore built without -race; `make test` runs them in a
// second, race-free pass. The guard itself is race-tested in guard_test.go.

//go:build !race

package remote_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/remote"
)

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}

// node is an actor system with remote and an "echo" actor that answers
// every VoteRequest with a VoteResponse and counts what it received.
type node struct {
	sys      *actor.ActorSystem
	rem      *remote.Remote
	echo     *actor.PID
	received atomic.Int64
}

func startNode(t *testing.T, cfg remote.Config) *node {
	t.Helper()
	n := &node{sys: quietSystem()}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	rem, err := remote.Start(n.sys, cfg)
	if err != nil {
		t.Fatalf("remote.Start: %v", err)
	}
	n.rem = rem
	props := actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.VoteRequest:
			n.received.Add(1)
			ctx.Respond(&messages.VoteResponse{Header: m.Header, Granted: true})
		case *messages.AppendEntriesRequest:
			n.received.Add(1)
			ctx.Respond(&messages.AppendEntriesResponse{Header: m.Header, Success: true, Seq: m.Seq})
		}
	})
	pid, err := n.sys.Root.SpawnNamed(props, "echo")
	if err != nil {
		t.Fatalf("spawn echo: %v", err)
	}
	n.echo = pid
	t.Cleanup(func() {
		rem.Shutdown()
		n.sys.Shutdown()
	})
	return n
}

// echoAt is the echo actor of n as seen from another node.
func (n *node) echoAt() *actor.PID { return actor.NewPID(n.rem.Address(), "echo") }

func vote(term uint64) *messages.VoteRequest {
	return &messages.VoteRequest{Header: &messages.Header{ClusterId: "c", From: 1, To: 2, Term: term}}
}

// ask sends msg from a to target and waits for the answer.
func ask(a *node, target *actor.PID, msg proto.Message, timeout time.Duration) (any, error) {
	return a.sys.Root.RequestFuture(target, msg, timeout).Result()
}

func TestVoteRoundTripBetweenNodes(t *testing.T) {
	a := startNode(t, remote.Config{})
	b := startNode(t, remote.Config{})
	res, err := ask(a, b.echoAt(), vote(7), 10*time.Second)
	if err != nil {
		t.Fatalf("request over remote: %v", err)
	}
	vr, ok := res.(*messages.VoteResponse)
	if !ok || !vr.Granted || vr.Header.GetTerm() != 7 {
		t.Fatalf("got %T %v, want a granted VoteResponse of term 7", res, res)
	}
}

// rawClient speaks protoactor's gRPC protocol directly, the way a broken or
// hostile peer could.
type rawClient struct {
	conn   *grpc.ClientConn
	stream pr.Remoting_ReceiveClient
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := pr.NewRemotingClient(conn).Receive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{conn: conn, stream: stream}
}

func (c *rawClient) send(t *testing.T, b *pr.MessageBatch) {
	t.Helper()
	if err := c.stream.Send(&pr.RemoteMessage{MessageType: &pr.RemoteMessage_MessageBatch{MessageBatch: b}}); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGuardDropsWhatWouldPanicProtoactor sends, from a raw peer, every kind
// of envelope that panics the pinned protoactor's reader or that must never
// arrive from the network. The node must survive, count each, and still
// deliver the well-formed message in the same batch and later traffic.
func TestGuardDropsWhatWouldPanicProtoactor(t *testing.T) {
	b := startNode(t, remote.Config{})
	a := startNode(t, remote.Config{})
	raw := dialRaw(t, b.rem.Address())

	target := b.echoAt()
	good := mustMarshal(t, vote(3))
	poison := mustMarshal(t, &actor.PoisonPill{})
	stop := mustMarshal(t, &actor.Stop{})
	batch := &pr.MessageBatch{
		TypeNames: []string{
			"raftor.v1.NoSuchMessage", // 0: unknown type
			"raftor.v1.VoteRequest",   // 1: fine
			"actor.PoisonPill",        // 2: denied
			"actor.Stop",              // 3: denied
		},
		Targets: []*actor.PID{target},
		Envelopes: []*pr.MessageEnvelope{
			{TypeId: 0, Target: 0, MessageData: good},
			{TypeId: 9, Target: 0, MessageData: good},                   // type index out of range
			{TypeId: 1, Target: 5, MessageData: good},                   // target index out of range
			{TypeId: 1, Target: 0, Sender: 3, MessageData: good},        // sender index out of range
			{TypeId: 1, Target: 0, SerializerId: 42, MessageData: good}, // serializer out of range
			{TypeId: 2, Target: 0, MessageData: poison},
			{TypeId: 3, Target: 0, MessageData: stop},
			{TypeId: 1, Target: 0, MessageData: good}, // the one that must arrive
		},
	}
	raw.send(t, batch)
	waitFor(t, "the well-formed vote to reach the echo actor", func() bool { return b.received.Load() == 1 })

	st := b.rem.Stats()
	want := map[string]uint64{"unknown_type": 1, "bad_index": 3, "serializer": 1, "denied_type": 2}
	for reason, n := range want {
		if st.Rejected[reason] != n {
			t.Errorf("rejected[%s] = %d, want %d (all: %v)", reason, st.Rejected[reason], n, st.Rejected)
		}
	}
	// The echo actor was not stopped by the PoisonPill or Stop, and the
	// node still serves normal traffic.
	if _, err := ask(a, target, vote(4), 10*time.Second); err != nil {
		t.Fatalf("node stopped serving after bad input: %v", err)
	}
	if b.received.Load() != 2 {
		t.Fatalf("echo received %d messages, want 2", b.received.Load())
	}
}

func TestUnimplementedCallsAreRefusedNotPanicked(t *testing.T) {
	b := startNode(t, remote.Config{})
	raw := dialRaw(t, b.rem.Address())
	client := pr.NewRemotingClient(raw.conn)
	_, err := client.ListProcesses(context.Background(), &pr.ListProcessesRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("ListProcesses: got %v, want Unimplemented", err)
	}
	_, err = client.GetProcessDiagnostics(context.Background(), &pr.GetProcessDiagnosticsRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetProcessDiagnostics: got %v, want Unimplemented", err)
	}
	a := startNode(t, remote.Config{})
	if _, err := ask(a, b.echoAt(), vote(1), 10*time.Second); err != nil {
		t.Fatalf("node stopped serving: %v", err)
	}
}

// TestLargeMessagesInOneBatch sends appends of 3 MiB back to back. Under
// gRPC's default 4 MiB limit protoactor packs them into one writer batch
// and the link is torn down with the batch lost; with Raftor's limits they
// all arrive.
func TestLargeMessagesInOneBatch(t *testing.T) {
	a := startNode(t, remote.Config{})
	b := startNode(t, remote.Config{})
	cfg := remote.Config{}
	payload := make([]byte, 3<<20)
	if len(payload) > cfg.MaxPayloadBytes() {
		t.Fatalf("test payload %d is over the configured per-message budget %d", len(payload), cfg.MaxPayloadBytes())
	}
	const n = 8
	futures := make([]*actor.Future, n)
	for i := range futures {
		req := &messages.AppendEntriesRequest{
			Header:  &messages.Header{ClusterId: "c", From: 1, To: 2, Term: 1},
			Entries: []*messages.Entry{{Term: 1, Index: uint64(i + 1), Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: payload}},
			Seq:     uint64(i + 1),
		}
		futures[i] = a.sys.Root.RequestFuture(b.echoAt(), req, 30*time.Second)
	}
	for i, f := range futures {
		res, err := f.Result()
		if err != nil {
			t.Fatalf("append %d: %v", i+1, err)
		}
		if r, ok := res.(*messages.AppendEntriesResponse); !ok || r.Seq != uint64(i+1) {
			t.Fatalf("append %d: got %v", i+1, res)
		}
	}
}

func TestStartOnTakenPortReturnsError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sys := quietSystem()
	defer sys.Shutdown()
	_, err = remote.Start(sys, remote.Config{Address: l.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("got %v, want an error naming %s", err, l.Addr())
	}
}

// ---- mutual TLS ----

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeCert issues a certificate valid for 127.0.0.1 as both server and client.
func (ca *testCA) nodeCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "raftor test CA")
	tlsFor := func(c *testCA, name string) remote.Config {
		srv, cli, err := remote.MutualTLS(c.pool, ca.nodeCert(t, name))
		if c != ca {
			// A certificate from another CA, trusting that CA only.
			srv, cli, err = remote.MutualTLS(c.pool, c.nodeCert(t, name))
		}
		if err != nil {
			t.Fatal(err)
		}
		return remote.Config{ServerTLS: srv, ClientTLS: cli}
	}
	a := startNode(t, tlsFor(ca, "a"))
	b := startNode(t, tlsFor(ca, "b"))
	if _, err := ask(a, b.echoAt(), vote(1), 10*time.Second); err != nil {
		t.Fatalf("two nodes with certificates from the cluster CA cannot talk: %v", err)
	}

	// A node whose certificate the cluster CA did not sign cannot take
	// part: its messages never reach b.
	rogue := startNode(t, tlsFor(newCA(t, "rogue CA"), "rogue"))
	before := b.received.Load()
	_, err := ask(rogue, b.echoAt(), vote(2), 2*time.Second)
	if !errors.Is(err, actor.ErrTimeout) && err == nil {
		t.Fatalf("rogue node got an answer: %v", err)
	}
	if err == nil {
		t.Fatal("rogue node got an answer")
	}
	// A plaintext node cannot take part either.
	plain := startNode(t, remote.Config{})
	if _, err := ask(plain, b.echoAt(), vote(3), 2*time.Second); err == nil {
		t.Fatal("plaintext node got an answer from a TLS node")
	}
	if got := b.received.Load(); got != before {
		t.Fatalf("b received %d messages from nodes without a valid certificate", got-before)
	}
}
