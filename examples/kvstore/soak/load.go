//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/raftor/raftor/cluster/history"
)

// verdict is what a client may conclude from one HTTP exchange.
type verdict uint8

const (
	// acked: the node answered with a definite result (a write was
	// committed and applied, a read returned a value or "absent", a
	// compare-and-set swapped or did not).
	acked verdict = iota
	// refused: the operation certainly had no effect: the connection was
	// never made, or the node rejected the request before it reached the
	// log (kvstore's 4xx answers).
	refused
	// unknown: the request may have been applied or not: a 503 (no
	// leader or quorum in time, the leader died after committing), a 500,
	// a timeout or a connection broken after the request was sent.
	unknown
)

func (v verdict) String() string {
	switch v {
	case acked:
		return "acked"
	case refused:
		return "failed"
	default:
		return "unknown"
	}
}

// classify maps the outcome of one HTTP request for in to a verdict and,
// for an acked one, the output the history records. err is the HTTP
// client's error (nil when an answer arrived), code and body the answer.
// The rules follow kvstore's README: a write answered 503 may or may not
// have been applied; only an answer that says so, or a connection that
// was never made, proves that nothing happened.
func classify(in history.Input, err error, code int, body string) (verdict, history.Output) {
	if err != nil {
		if neverSent(err) {
			return refused, history.Output{}
		}
		return unknown, history.Output{}
	}
	switch in.Kind {
	case history.OpGet:
		switch {
		case code == http.StatusOK:
			return acked, history.Output{Found: true, Value: body}
		case code == http.StatusNotFound && errorText(body) == "key not found":
			return acked, history.Output{}
		}
	case history.OpCAS:
		switch {
		case code == http.StatusOK && isCASAnswer(body, true):
			return acked, history.Output{Swapped: true}
		case code == http.StatusConflict && isCASAnswer(body, false):
			return acked, history.Output{Swapped: false}
		}
	default:
		if code == http.StatusOK {
			return acked, history.Output{}
		}
	}
	switch {
	case code >= 400 && code < 500:
		// Bad input, no such endpoint, too large, a membership change
		// in progress: refused before the log.
		return refused, history.Output{}
	default:
		// 503, 500 and anything kvstore does not document.
		return unknown, history.Output{}
	}
}

// neverSent reports whether err shows that the request never left the
// client: the connection to the node could not be made.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// errorText returns the "error" of a kvstore error body, or "".
func errorText(body string) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) != nil {
		return ""
	}
	return e.Error
}

// isCASAnswer reports whether body is a compare-and-set answer with
// "ok" equal to ok.
func isCASAnswer(body string, ok bool) bool {
	var a struct {
		OK *bool `json:"ok"`
	}
	return json.Unmarshal([]byte(body), &a) == nil && a.OK != nil && *a.OK == ok
}

// casCurrent returns the "current" of a 409 compare-and-set answer: the
// value the key held, or found=false when it was absent.
func casCurrent(body string) (value string, found bool) {
	var a struct {
		Current *string `json:"current"`
	}
	if json.Unmarshal([]byte(body), &a) != nil || a.Current == nil {
		return "", false
	}
	return *a.Current, true
}

// opClass names the rows of the soak's operation table.
type opClass uint8

const (
	classGet opClass = iota
	classPut
	classCAS
	classDelete
	classOnce // write-once puts: a unique key per write
	numClasses
)

var classNames = [numClasses]string{"get", "put", "cas", "delete", "write-once put"}

// opStats counts operations by class and verdict.
type opStats struct {
	mu      sync.Mutex
	n       [numClasses][3]int
	swapped int // acked compare-and-sets that swapped
}

func (s *opStats) add(c opClass, v verdict, swapped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[c][v]++
	if c == classCAS && v == acked && swapped {
		s.swapped++
	}
}

func (s *opStats) snapshot() (n [numClasses][3]int, swapped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.swapped
}

func (s *opStats) total() (all, ok int) {
	n, _ := s.snapshot()
	for _, row := range n {
		all += row[0] + row[1] + row[2]
		ok += row[acked]
	}
	return all, ok
}

// onceWrite is one write-once put and what its client saw.
type onceWrite struct {
	key, value string
	verdict    verdict
}

// load is the soak's client workload: clients that each run one operation
// at a time against a random node until stopped.
//
// Most operations go to a few shared keys, so that concurrent puts,
// compare-and-sets, deletes and reads of the same key make the history
// worth checking. The shared keys change every keyPeriod (k<generation>.N):
// porcupine checks each key on its own, and a key's search grows quickly
// with the writes whose outcome is unknown, so many short key histories
// check fast where one long one might not. The rest are write-once puts,
// each to a key of its own, which the checker reads back at the end.
type load struct {
	rec        *history.Recorder
	abort      context.Context // ends requests in flight: the soak is aborted
	nodes      []*node
	client     *http.Client
	seed       uint64
	sharedKeys int
	keyPeriod  time.Duration
	start      time.Time
	stats      opStats

	mu   sync.Mutex
	once []onceWrite
}

func newLoad(abort context.Context, rec *history.Recorder, nodes []*node, seed uint64, clients int) *load {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = clients + 8
	return &load{
		rec:   rec,
		abort: abort,
		nodes: nodes,
		// Longer than kvstore's --request-timeout: a request to a paused
		// node waits for it to resume, and the node's own answer (503)
		// is clearer than the client giving up.
		client:     &http.Client{Timeout: 15 * time.Second, Transport: tr},
		seed:       seed,
		sharedKeys: 3,
		keyPeriod:  keyPeriod(clients),
		start:      time.Now(),
	}
}

// keyPeriod is how long the clients use one generation of shared keys:
// 10s for up to 16 clients, shorter for more, so that a key's history
// holds about the same number of operations (and porcupine's search on
// it stays short) whatever the number of clients.
func keyPeriod(clients int) time.Duration {
	return min(max(160*time.Second/time.Duration(max(clients, 1)), 2*time.Second), 10*time.Second)
}

func (l *load) close() { l.client.CloseIdleConnections() }

// run starts clients goroutines that work until ctx ends, and returns a
// function that waits for them.
func (l *load) run(ctx context.Context, clients int) (wait func()) {
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { l.client1(ctx, i+1) })
	}
	return wg.Wait
}

// client1 is one client. Its choices (node, key, operation, values) come
// from a generator seeded with the soak's seed and its number.
func (l *load) client1(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(l.seed, uint64(id)))
	// What this client last saw in each shared key, so that its
	// compare-and-sets often expect the right value and swap.
	seen := map[string]*string{}
	for seq := 0; ctx.Err() == nil; seq++ {
		n := l.nodes[rng.IntN(len(l.nodes))]
		key := fmt.Sprintf("k%d.%d", int(time.Since(l.start)/l.keyPeriod), rng.IntN(l.sharedKeys))
		value := fmt.Sprintf("c%d-%d", id, seq)
		var (
			v     verdict
			out   history.Output
			class opClass
			in    history.Input
			body  string
		)
		switch r := rng.IntN(100); {
		case r < 25:
			class = classOnce
			key = fmt.Sprintf("w%d-%d", id, seq)
			in = history.Put(key, value)
			v, _, _ = l.do(id, n, in)
			l.mu.Lock()
			l.once = append(l.once, onceWrite{key: key, value: value, verdict: v})
			l.mu.Unlock()
		case r < 55:
			class, in = classGet, history.Get(key)
			v, out, _ = l.do(id, n, in)
			if v == acked {
				seen[key] = found(out)
			}
		case r < 75:
			class, in = classPut, history.Put(key, value)
			v, _, _ = l.do(id, n, in)
			if v == acked {
				seen[key] = &value
			}
		case r < 92:
			class = classCAS
			if prev := seen[key]; prev != nil && rng.IntN(4) > 0 {
				in = history.CAS(key, *prev, value)
			} else {
				in = history.CASAbsent(key, value)
			}
			v, out, body = l.do(id, n, in)
			if v == acked && out.Swapped {
				seen[key] = &value
			} else if v == acked {
				if cur, ok := casCurrent(body); ok {
					seen[key] = &cur
				} else {
					seen[key] = nil
				}
			}
		default:
			class, in = classDelete, history.Delete(key)
			v, _, _ = l.do(id, n, in)
			if v == acked {
				seen[key] = nil
			}
		}
		l.stats.add(class, v, out.Swapped)
		if v != acked {
			// Do not spin on a node that is down; try another soon.
			sleepCtx(ctx, time.Duration(20+rng.IntN(80))*time.Millisecond)
		}
	}
}

func found(out history.Output) *string {
	if !out.Found {
		return nil
	}
	v := out.Value
	return &v
}

// do sends in to node n, records it in the history as client, and returns
// the verdict, the output and the answer's body.
func (l *load) do(client int, n *node, in history.Input) (verdict, history.Output, string) {
	id := l.rec.Invoke(client, in, now())
	code, body, err := l.send(n, in)
	v, out := classify(in, err, code, body)
	switch v {
	case acked:
		l.rec.Return(id, out, now())
	case refused:
		l.rec.Fail(id, now())
	default:
		l.rec.ReturnUnknown(id, now())
	}
	return v, out, body
}

func now() int64 { return time.Now().UnixNano() }

// send turns in into kvstore's HTTP API. The request does not take the
// load's ctx: a request in flight when the load ends runs to its answer,
// so that its outcome is known where it can be. Only an abort of the whole
// soak (l.abort) cuts it short.
func (l *load) send(n *node, in history.Input) (int, string, error) {
	url := n.url() + "/kv/" + in.Key
	var method, body string
	switch in.Kind {
	case history.OpGet:
		method = http.MethodGet
	case history.OpPut:
		method, body = http.MethodPut, in.Value
	case history.OpDelete:
		method = http.MethodDelete
	case history.OpCAS:
		method, url = http.MethodPost, url+"/cas"
		expect := "null"
		if !in.ExpectAbsent {
			b, _ := json.Marshal(in.Expect)
			expect = string(b)
		}
		v, _ := json.Marshal(in.Value)
		body = fmt.Sprintf(`{"expect":%s,"value":%s}`, expect, v)
	default:
		return 0, "", fmt.Errorf("unsupported operation %v", in.Kind)
	}
	return httpDoCtx(l.abort, l.client, method, url, body)
}

func httpDo(c *http.Client, method, url, body string) (int, string, error) {
	return httpDoCtx(context.Background(), c, method, url, body)
}

func httpDoCtx(ctx context.Context, c *http.Client, method, url, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		// The answer started but broke off: it cannot be trusted.
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

// sharedKeyNames returns every shared key the clients may have used so far.
func (l *load) sharedKeyNames() []string {
	var keys []string
	for g := range int(time.Since(l.start)/l.keyPeriod) + 1 {
		for i := range l.sharedKeys {
			keys = append(keys, fmt.Sprintf("k%d.%d", g, i))
		}
	}
	return keys
}

// onceWrites returns the write-once puts so far.
func (l *load) onceWrites() []onceWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]onceWrite(nil), l.once...)
}
