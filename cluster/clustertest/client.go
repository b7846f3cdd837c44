package clustertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/cluster/history"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// ErrNodeDown is returned by an operation through a node that does not run.
var ErrNodeDown = errors.New("clustertest: node is down")

// Do runs one key-value operation through node via and records it in the
// cluster's client history: a write with ClientWrite, a get with
// EnsureLinearizable and then a read of via's own state machine. A write
// whose outcome the client cannot know (a timeout, a crash of via) is
// recorded as such, and the linearizability check may place it anywhere
// after its call, or nowhere.
func (c *Cluster) Do(ctx context.Context, via uint64, in history.Input) (history.Output, error) {
	return c.do(ctx, int(c.clients.Add(1)), via, in)
}

// Put sets key to value through node via.
func (c *Cluster) Put(ctx context.Context, via uint64, key, value string) error {
	_, err := c.Do(ctx, via, history.Put(key, value))
	return err
}

// Get reads key through node via, linearizably.
func (c *Cluster) Get(ctx context.Context, via uint64, key string) (value string, found bool, err error) {
	out, err := c.Do(ctx, via, history.Get(key))
	return out.Value, out.Found, err
}

// CAS sets key to value through node via if it holds expect.
func (c *Cluster) CAS(ctx context.Context, via uint64, key, expect, value string) (swapped bool, err error) {
	out, err := c.Do(ctx, via, history.CAS(key, expect, value))
	return out.Swapped, err
}

// Delete removes key through node via.
func (c *Cluster) Delete(ctx context.Context, via uint64, key string) error {
	_, err := c.Do(ctx, via, history.Delete(key))
	return err
}

// definitelyNotApplied reports whether err promises that a write had no
// effect. Everything else (a timeout, UNKNOWN_OUTCOME, a stop or crash) may
// hide a write that commits later.
func definitelyNotApplied(err error) bool {
	for _, e := range []error{actors.ErrNotLeader, actors.ErrOverloaded, actors.ErrTooLarge, actors.ErrInvalid,
		actors.ErrNotInitialized, actors.ErrTransferInProgress, actors.ErrAborted} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// errCallPanicked marks a Node call that panicked in the caller's
// goroutine; its outcome is unknown.
var errCallPanicked = errors.New("clustertest: the node call panicked")

// guardCall runs a Node call, turning a panic into an error with an unknown
// outcome. No panic should cross Raftor's API; when one does, the harness
// counts it and reports it at the end of the test instead of losing the
// whole process and every other test's report with it.
func (c *Cluster) guardCall(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.panics.Add(1)
			c.lastPanic.Store(fmt.Sprint(r))
			err = fmt.Errorf("%w: %v", errCallPanicked, r)
		}
	}()
	return f()
}

func now() int64 { return time.Now().UnixNano() }

func (c *Cluster) do(ctx context.Context, client int, via uint64, in history.Input) (history.Output, error) {
	n := c.Node(via)
	inc := n.incarnation()
	if inc == nil {
		return history.Output{}, fmt.Errorf("%w: node %d", ErrNodeDown, via)
	}
	if inc.kv == nil {
		return history.Output{}, errors.New("clustertest: key-value operations need the default state machine (store/kvsm)")
	}
	// A call through a node that crashes returns at once, with an unknown
	// outcome, rather than at its deadline.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(inc.ctx, cancel)
	defer stop()

	id := c.hist.Invoke(client, in, now())
	if in.Kind == history.OpGet {
		if err := c.guardCall(func() error { return inc.raft.EnsureLinearizable(ctx) }); err != nil {
			c.hist.Fail(id, now()) // a read that did not happen constrains nothing
			return history.Output{}, err
		}
		if inc.ctx.Err() != nil {
			c.hist.Fail(id, now())
			return history.Output{}, fmt.Errorf("%w: node %d crashed during the read", ErrNodeDown, via)
		}
		v, found, err := inc.kv.Get([]byte(in.Key))
		if err != nil {
			c.hist.Fail(id, now())
			return history.Output{}, err
		}
		out := history.Output{Value: string(v), Found: found}
		c.hist.Return(id, out, now())
		return out, nil
	}

	var cmd *messages.KVCommand
	switch in.Kind {
	case history.OpPut:
		cmd = kvsm.Put([]byte(in.Key), []byte(in.Value))
	case history.OpDelete:
		cmd = kvsm.Delete([]byte(in.Key))
	case history.OpCAS:
		if in.ExpectAbsent {
			cmd = kvsm.CreateIfAbsent([]byte(in.Key), []byte(in.Value))
		} else {
			cmd = kvsm.CompareAndSet([]byte(in.Key), []byte(in.Expect), []byte(in.Value))
		}
	default:
		c.hist.Fail(id, now())
		return history.Output{}, fmt.Errorf("clustertest: unknown operation %v", in.Kind)
	}
	data := kvsm.Encode(cmd)
	var res *actors.WriteResult
	err := c.guardCall(func() (err error) {
		res, err = inc.raft.ClientWrite(ctx, data)
		return err
	})
	if err != nil {
		if definitelyNotApplied(err) {
			c.hist.Fail(id, now())
		} else {
			c.hist.ReturnUnknown(id, now())
		}
		return history.Output{Unknown: !definitelyNotApplied(err)}, err
	}
	kr, derr := kvsm.DecodeResult(store.Result{Data: res.Data})
	if derr != nil || kr.GetError() != "" {
		c.hist.ReturnUnknown(id, now())
		c.safety.mu.Lock()
		c.safety.violations = append(c.safety.violations, fmt.Sprintf("write %v at index %d answered %v / %q", in, res.Index, derr, kr.GetError()))
		c.safety.mu.Unlock()
		return history.Output{Unknown: true}, fmt.Errorf("clustertest: bad result for %v: %v %s", in, derr, kr.GetError())
	}
	out := history.Output{Swapped: kr.GetOk()}
	c.hist.Return(id, out, now())
	c.safety.noteAcked(ackedWrite{index: res.Index, term: res.Term, what: in.String(),
		sum: entryDigest(messages.EntryKind_ENTRY_KIND_NORMAL, data, nil)})
	return out, nil
}

// History returns the cluster's client history.
func (c *Cluster) History() *history.Recorder { return c.hist }

// LoadOptions shapes a client load.
type LoadOptions struct {
	// Clients is the number of concurrent clients. Default 3.
	Clients int
	// Keys is how many keys they share. Default 4.
	Keys int
	// OpTimeout bounds each operation. Default 10 election timeouts.
	OpTimeout time.Duration
	// Via picks the node each operation goes through. Default: a random
	// running node, so that followers forward.
	Via func(r *rand.Rand) uint64
	// Pace is the pause between one client's operations. Default 2ms.
	Pace time.Duration
}

// Load is a set of clients running random puts, gets, compare-and-sets and
// deletes against the cluster, each recorded in its history.
type Load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ok     atomic.Int64
	failed atomic.Int64
}

// LoadStats counts a load's operations.
type LoadStats struct {
	// OK operations returned a result; Failed ones an error (refused, timed
	// out or with an unknown outcome).
	OK, Failed int64
}

// StartLoad starts clients that run until Stop.
func (c *Cluster) StartLoad(o LoadOptions) *Load {
	if o.Clients == 0 {
		o.Clients = 3
	}
	if o.Keys == 0 {
		o.Keys = 4
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 10 * c.ElectionTimeout()
	}
	if o.Pace == 0 {
		o.Pace = 2 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel}
	for i := 0; i < o.Clients; i++ {
		client := int(c.clients.Add(1))
		r := rand.New(rand.NewPCG(c.opts.Seed, uint64(client)))
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				via := c.pickVia(r, o.Via)
				if via == 0 {
					if !sleepCtx(ctx, o.Pace) {
						return
					}
					continue
				}
				key := fmt.Sprintf("k%d", r.IntN(o.Keys))
				val := fmt.Sprintf("c%d-%d", client, seq)
				var in history.Input
				switch p := r.IntN(10); {
				case p < 4:
					in = history.Put(key, val)
				case p < 7:
					in = history.Get(key)
				case p < 9:
					in = history.CAS(key, fmt.Sprintf("c%d-%d", client, seq-1), val)
				default:
					in = history.Delete(key)
				}
				opCtx, opCancel := context.WithTimeout(ctx, o.OpTimeout)
				_, err := c.do(opCtx, client, via, in)
				opCancel()
				pause := o.Pace
				if err != nil {
					l.failed.Add(1)
					// Back off for a tick: a refused operation comes back
					// at once, and a tight loop of them only bloats the
					// history.
					pause = max(pause, c.opts.TickInterval)
				} else {
					l.ok.Add(1)
				}
				if !sleepCtx(ctx, pause) {
					return
				}
			}
		}()
	}
	return l
}

func (c *Cluster) pickVia(r *rand.Rand, via func(*rand.Rand) uint64) uint64 {
	if via != nil {
		return via(r)
	}
	up := c.Up()
	if len(up) == 0 {
		return 0
	}
	return up[r.IntN(len(up))]
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Stats returns the counts so far.
func (l *Load) Stats() LoadStats { return LoadStats{OK: l.ok.Load(), Failed: l.failed.Load()} }

// Stop stops the clients, waits for their operations to return, and
// returns the counts.
func (l *Load) Stop() LoadStats {
	l.cancel()
	l.wg.Wait()
	return l.Stats()
}
