package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// etcdCluster runs three etcd-io/raft nodes in this process with the thinnest
// honest driver around raft.Node: one goroutine per node runs the Ready loop
// of the package documentation: persist HardState and entries (fdatasync when
// Ready.MustSync, in durable mode), append them to the raft.MemoryStorage,
// send the messages, apply the committed entries, Advance.
//
// durable: the persistence is a WAL-equivalent append-only file per node (one
// write and one fdatasync per Ready that must sync, as etcd's WAL does);
// messages travel over loopback TCP, one connection per ordered pair of nodes,
// length-prefixed raftpb.Message.
//
// minimal: nothing is written; messages are handed to the receiving node's
// inbox channel in-process.
//
// A write is Propose on the leader; it is acknowledged when the proposing node
// applies the entry (entries carry a proposal id for the match).
type etcdCluster struct {
	durable bool
	nodes   []*etcdNode
	leader  atomic.Uint64
	nextID  atomic.Uint64
	waiters sync.Map // proposal id -> chan struct{}
	syncs   atomic.Int64
	synced  atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

type etcdNode struct {
	c       *etcdCluster
	id      uint64
	node    raft.Node
	storage *raft.MemoryStorage
	wal     *os.File
	inbox   chan raftpb.Message // minimal: in-process delivery
	ln      net.Listener        // durable: TCP
	out     map[uint64]chan raftpb.Message
}

func startEtcd(ctx context.Context, mode, dir string) (*etcdCluster, error) {
	c := &etcdCluster{durable: mode == "durable", stop: make(chan struct{})}
	const n = 3
	peers := make([]raft.Peer, n)
	for i := range n {
		peers[i] = raft.Peer{ID: uint64(i + 1)}
	}
	for i := range n {
		en := &etcdNode{c: c, id: uint64(i + 1), storage: raft.NewMemoryStorage(), out: map[uint64]chan raftpb.Message{}}
		if c.durable {
			d := filepath.Join(dir, fmt.Sprintf("etcd-%d", i+1))
			if err := os.MkdirAll(d, 0o755); err != nil {
				c.Close()
				return nil, err
			}
			f, err := os.OpenFile(filepath.Join(d, "wal"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				c.Close()
				return nil, err
			}
			en.wal = f
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				c.Close()
				return nil, err
			}
			en.ln = ln
		} else {
			en.inbox = make(chan raftpb.Message, 8192)
		}
		c.nodes = append(c.nodes, en)
	}
	for _, en := range c.nodes {
		en.node = raft.StartNode(&raft.Config{
			ID:              en.id,
			ElectionTick:    20,
			HeartbeatTick:   2,
			Storage:         en.storage,
			MaxSizePerMsg:   1 << 20,
			MaxInflightMsgs: 256,
			CheckQuorum:     true,
			PreVote:         true,
			Logger:          &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
		}, peers)
	}
	for _, en := range c.nodes {
		if c.durable {
			c.wg.Add(1)
			go en.accept()
			for _, peer := range c.nodes {
				if peer == en {
					continue
				}
				ch := make(chan raftpb.Message, 8192)
				en.out[peer.id] = ch
				conn, err := net.Dial("tcp", peer.ln.Addr().String())
				if err != nil {
					c.Close()
					return nil, err
				}
				c.wg.Add(1)
				go en.sendLoop(conn, ch)
			}
		} else {
			c.wg.Add(1)
			go en.stepLoop()
		}
		c.wg.Add(1)
		go en.run()
	}

	deadline := time.Now().Add(20 * time.Second)
	for c.leader.Load() == 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Close()
			return nil, errors.New("etcd: no leader elected within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, nil
}

// run is the Ready loop.
func (en *etcdNode) run() {
	defer en.c.wg.Done()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	var buf []byte
	for {
		select {
		case <-en.c.stop:
			return
		case <-ticker.C:
			en.node.Tick()
		case rd := <-en.node.Ready():
			if rd.SoftState != nil {
				if rd.SoftState.RaftState == raft.StateLeader {
					en.c.leader.Store(en.id)
				} else if en.c.leader.Load() == en.id {
					en.c.leader.CompareAndSwap(en.id, 0)
				}
			}
			if en.wal != nil && (rd.MustSync || len(rd.Entries) > 0 || !raft.IsEmptyHardState(rd.HardState)) {
				buf = buf[:0]
				for i := range rd.Entries {
					buf = appendRecord(buf, &rd.Entries[i])
				}
				if !raft.IsEmptyHardState(rd.HardState) {
					buf = appendRecord(buf, &rd.HardState)
				}
				if _, err := en.wal.Write(buf); err != nil {
					log.Fatalf("etcd: wal write: %v", err)
				}
				if rd.MustSync {
					if err := fdatasync(en.wal); err != nil {
						log.Fatalf("etcd: wal sync: %v", err)
					}
					en.c.syncs.Add(1)
					en.c.synced.Add(int64(len(rd.Entries)))
				}
			}
			if !raft.IsEmptyHardState(rd.HardState) {
				en.storage.SetHardState(rd.HardState)
			}
			en.storage.Append(rd.Entries)
			en.send(rd.Messages)
			for _, e := range rd.CommittedEntries {
				switch e.Type {
				case raftpb.EntryConfChange:
					var cc raftpb.ConfChange
					if err := cc.Unmarshal(e.Data); err == nil {
						en.node.ApplyConfChange(cc)
					}
				case raftpb.EntryNormal:
					applied.Add(1)
					if len(e.Data) >= 9 && uint64(e.Data[8]) == en.id {
						if w, ok := en.c.waiters.LoadAndDelete(binary.BigEndian.Uint64(e.Data)); ok {
							close(w.(chan struct{}))
						}
					}
				}
			}
			en.node.Advance()
		}
	}
}

type marshaler interface {
	Size() int
	MarshalTo([]byte) (int, error)
}

func appendRecord(buf []byte, m marshaler) []byte {
	n := m.Size()
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	start := len(buf)
	buf = append(buf, make([]byte, n)...)
	m.MarshalTo(buf[start:])
	return buf
}

func (en *etcdNode) send(msgs []raftpb.Message) {
	for _, m := range msgs {
		if en.c.durable {
			select {
			case en.out[m.To] <- m:
			default: // a full link drops, like a congested network; raft retries
				en.node.ReportUnreachable(m.To)
			}
			continue
		}
		select {
		case en.c.nodes[m.To-1].inbox <- m:
		default:
			en.node.ReportUnreachable(m.To)
		}
	}
}

func (en *etcdNode) stepLoop() {
	defer en.c.wg.Done()
	for {
		select {
		case <-en.c.stop:
			return
		case m := <-en.inbox:
			en.node.Step(context.Background(), m)
		}
	}
}

func (en *etcdNode) accept() {
	defer en.c.wg.Done()
	for {
		conn, err := en.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			r := bufio.NewReaderSize(conn, 1<<16)
			var hdr [4]byte
			var body []byte
			for {
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					return
				}
				n := binary.BigEndian.Uint32(hdr[:])
				body = append(body[:0], make([]byte, n)...)
				if _, err := io.ReadFull(r, body); err != nil {
					return
				}
				var m raftpb.Message
				if err := m.Unmarshal(body); err != nil {
					return
				}
				en.node.Step(context.Background(), m)
			}
		}()
	}
}

// sendLoop writes every message queued for one peer, flushing when the queue
// is empty so that a burst becomes one TCP write.
func (en *etcdNode) sendLoop(conn net.Conn, ch chan raftpb.Message) {
	defer en.c.wg.Done()
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 1<<16)
	var buf []byte
	for {
		var m raftpb.Message
		select {
		case <-en.c.stop:
			return
		case m = <-ch:
		}
		for {
			buf = appendRecord(buf[:0], &m)
			if _, err := w.Write(buf); err != nil {
				return
			}
			select {
			case m = <-ch:
				continue
			default:
			}
			break
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func (c *etcdCluster) Write(ctx context.Context, _ int, payload []byte) error {
	lead := c.leader.Load()
	if lead == 0 {
		return errors.New("etcd: no leader")
	}
	id := c.nextID.Add(1)
	data := make([]byte, 9+len(payload))
	binary.BigEndian.PutUint64(data, id)
	data[8] = byte(lead)
	copy(data[9:], payload)
	done := make(chan struct{})
	c.waiters.Store(id, done)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.nodes[lead-1].node.Propose(ctx, data); err != nil {
		c.waiters.Delete(id)
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.waiters.Delete(id)
		return fmt.Errorf("etcd: write not applied: %w", ctx.Err())
	}
}

func (c *etcdCluster) Counters() (int64, int64, bool) {
	return c.syncs.Load(), c.synced.Load(), c.durable
}

func (c *etcdCluster) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	for _, en := range c.nodes {
		if en.ln != nil {
			en.ln.Close()
		}
	}
	for _, en := range c.nodes {
		if en.node != nil {
			en.node.Stop()
		}
	}
	c.wg.Wait()
	for _, en := range c.nodes {
		if en.wal != nil {
			en.wal.Close()
		}
	}
	return nil
}
