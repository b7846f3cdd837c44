//go:build !race

package remote_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/remote"
)

// darkProxy forwards TCP connections to target. Dark makes every
// connection it already forwards go silent both ways while staying open,
// as when a middlebox loses a flow's state or a peer's network vanishes
// without a reset: bytes sent into it are read and dropped, nothing comes
// back, no one sees the connection close. Connections made later are
// forwarded.
type darkProxy struct {
	ln     net.Listener
	target string
	gen    atomic.Int64 // connections of an earlier generation are dark
	mu     sync.Mutex
	conns  []net.Conn
}

func newDarkProxy(t *testing.T, target string) *darkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &darkProxy{ln: ln, target: target}
	t.Cleanup(p.close)
	go p.serve()
	return p
}

func (p *darkProxy) addr() string { return p.ln.Addr().String() }

func (p *darkProxy) dark() { p.gen.Add(1) }

func (p *darkProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		gen := p.gen.Load()
		go p.pipe(c, up, gen)
		go p.pipe(up, c, gen)
	}
}

// pipe copies from src to dst while its generation is current, and
// drops what it reads once it is dark.
func (p *darkProxy) pipe(src, dst net.Conn, gen int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.gen.Load() == gen {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && p.gen.Load() == gen {
				dst.Close()
			}
			return
		}
	}
}

func (p *darkProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// protoactor-go at the pinned version configures no keepalive, so a
// connection to a peer that went silent without closing it (a blackholed
// peer) looks healthy forever: the endpoint writer keeps writing into it
// and every message is lost. Raftor's transport has keepalives on by
// default: node a sends to node b through a proxy; the proxy's connection
// goes dark; a's keepalive notices the dead connection, protoactor drops
// it, and a's next messages reach b over a new connection. (gRPC raises
// the client's ping interval to at least 10 s, so noticing takes 10 s plus
// the keepalive timeout.)
func TestBlackholedConnectionIsNoticedAndReplaced(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bAddr := l.Addr().String()
	l.Close()
	p := newDarkProxy(t, bAddr)
	// b is reached through the proxy: its PIDs carry the proxy's address.
	b := startNode(t, remote.Config{Address: bAddr, AdvertisedAddress: p.addr()})
	a := startNode(t, remote.Config{})
	target := actor.NewPID(p.addr(), "echo")
	if _, err := ask(a, target, vote(1), 10*time.Second); err != nil {
		t.Fatalf("through the proxy before it goes dark: %v", err)
	}
	p.dark()
	start := time.Now()
	lost := 0
	for term := uint64(2); ; term++ {
		if _, err := ask(a, target, vote(term), 500*time.Millisecond); err == nil {
			break
		}
		lost++
		if time.Since(start) > 40*time.Second {
			t.Fatalf("after %v and %d lost requests the sender still writes into the dark connection", time.Since(start), lost)
		}
	}
	t.Logf("the dark connection was replaced after %v (%d requests lost meanwhile)", time.Since(start).Round(100*time.Millisecond), lost)
	if got := b.received.Load(); got < 2 {
		t.Fatalf("b received %d requests, want the first and one after the connection was replaced", got)
	}
}
