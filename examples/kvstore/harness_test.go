package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftor/raftor/cluster/history"
)

// The end-to-end tests run the kvstore binary as separate processes, on
// free loopback ports, with a short Raft clock so that elections take a
// fraction of a second.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds the kvstore binary once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "kvstore-bin")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kvstore")
		args := []string{"build", "-o", binPath}
		if os.Getenv("KVSTORE_E2E_RACE") != "" {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return addrs
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one kvstore process.
type proc struct {
	name     string
	cmd      *exec.Cmd
	out, err *syncBuffer
	done     chan struct{}
	state    *os.ProcessState
}

// startProc runs the binary with args; t.Cleanup kills it, also when the
// test fails, and then shows its output.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, err: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s--- %s stderr:\n%s", name, tail(p.out.String()), name, tail(p.err.String()))
		}
	})
	return p
}

func tail(s string) string {
	if len(s) > 8000 {
		return "..." + s[len(s)-8000:]
	}
	return s
}

// kill sends SIGKILL and waits for the process to die.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and returns the exit status, failing the test if the
// process does not exit within d.
func (p *proc) stop(t *testing.T, sig syscall.Signal, d time.Duration) int {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v of %v", p.name, d, sig)
		return -1
	}
}

// waitFor polls cond until it holds or d passes; the failure names what
// was last seen.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- a cluster of processes ----

type member struct {
	id         uint64
	raft, http string
	dir        string
	args       []string
	p          *proc
}

func (m *member) url() string { return "http://" + m.http }

type procCluster struct {
	t       *testing.T
	root    string
	members map[uint64]*member
	peers   string
	extra   []string
}

// testClock makes elections take 250-500ms and heartbeats go every 25ms.
var testClock = []string{"--tick-interval", "25ms", "--election-ticks", "10", "--request-timeout", "5s"}

// newProcCluster prepares (but does not start) n founding members.
func newProcCluster(t *testing.T, n int, extra ...string) *procCluster {
	c := &procCluster{t: t, root: t.TempDir(), members: map[uint64]*member{}, extra: extra}
	addrs := freePorts(t, 2*n)
	var peers []string
	for i := range n {
		id := uint64(i + 1)
		c.members[id] = &member{id: id, raft: addrs[2*i], http: addrs[2*i+1], dir: filepath.Join(c.root, fmt.Sprint(id))}
		peers = append(peers, fmt.Sprintf("%d=%s", id, addrs[2*i]))
	}
	c.peers = strings.Join(peers, ",")
	for _, m := range c.members {
		m.args = c.args(m, "--peers", c.peers)
	}
	return c
}

func (c *procCluster) args(m *member, more ...string) []string {
	a := []string{"--id", fmt.Sprint(m.id), "--raft-addr", m.raft, "--http-addr", m.http, "--dir", m.dir}
	a = append(a, testClock...)
	a = append(a, c.extra...)
	return append(a, more...)
}

// start starts (or restarts, with the same flags) member id and waits
// until its HTTP API answers.
func (c *procCluster) start(id uint64) *member {
	c.t.Helper()
	m := c.members[id]
	m.p = startProc(c.t, fmt.Sprintf("node %d", id), m.args...)
	waitFor(c.t, 20*time.Second, fmt.Sprintf("node %d serves HTTP", id), func() (bool, string) {
		if m.p.exited() {
			c.t.Fatalf("node %d exited: %v\n%s", id, m.p.state, m.p.err.String())
		}
		_, _, err := httpDo(http.MethodGet, m.url()+"/status", "")
		return err == nil, fmt.Sprint(err)
	})
	return m
}

// addMember prepares a new member that joins through via.
func (c *procCluster) addMember(id uint64, via *member) *member {
	addrs := freePorts(c.t, 2)
	m := &member{id: id, raft: addrs[0], http: addrs[1], dir: filepath.Join(c.root, fmt.Sprint(id))}
	m.args = c.args(m, "--join", via.url())
	c.members[id] = m
	return m
}

// running returns the members whose process runs.
func (c *procCluster) running() []*member {
	var out []*member
	for _, id := range slices.Sorted(mapsKeys(c.members)) {
		if m := c.members[id]; m.p != nil && !m.p.exited() {
			out = append(out, m)
		}
	}
	return out
}

func mapsKeys(m map[uint64]*member) func(func(uint64) bool) {
	return func(yield func(uint64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// waitLeader waits until every member in ms names the same leader, and
// that leader (one of ms) says it leads.
func (c *procCluster) waitLeader(d time.Duration, ms ...*member) *member {
	c.t.Helper()
	var leader *member
	waitFor(c.t, d, "a leader all agree on", func() (bool, string) {
		var seen []string
		id := uint64(0)
		agreed := true
		for _, m := range ms {
			st, err := status(m)
			if err != nil {
				return false, err.Error()
			}
			seen = append(seen, fmt.Sprintf("%d:%s/leader %d", m.id, st.Role, st.Leader))
			if id == 0 {
				id = st.Leader
			}
			if st.Leader == 0 || st.Leader != id {
				agreed = false
			}
		}
		if !agreed {
			return false, strings.Join(seen, " ")
		}
		for _, m := range ms {
			if m.id == id {
				st, err := status(m)
				if err == nil && st.Role == "leader" {
					leader = m
					return true, ""
				}
			}
		}
		return false, strings.Join(seen, " ")
	})
	return leader
}

// ---- HTTP ----

var client = &http.Client{Timeout: 40 * time.Second}

func httpDo(method, url, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// must runs an HTTP request that must answer want.
func must(t *testing.T, want int, method, url, body string) string {
	t.Helper()
	code, got, err := httpDo(method, url, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if code != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, url, code, want, got)
	}
	return got
}

func status(m *member) (statusBody, error) {
	var st statusBody
	code, body, err := httpDo(http.MethodGet, m.url()+"/status", "")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status %d: %s", code, body)
	}
	return st, json.Unmarshal([]byte(body), &st)
}

func mustStatus(t *testing.T, m *member) statusBody {
	t.Helper()
	st, err := status(m)
	if err != nil {
		t.Fatalf("node %d status: %v", m.id, err)
	}
	return st
}

// putIndex writes key=value through m and returns the index of the write.
func putIndex(t *testing.T, m *member, key, value string) uint64 {
	t.Helper()
	body := must(t, http.StatusOK, http.MethodPut, m.url()+"/kv/"+key, value)
	var ans struct {
		Index uint64 `json:"index"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil || ans.Index == 0 {
		t.Fatalf("PUT %s through node %d answered %q, want {\"index\":N}", key, m.id, body)
	}
	return ans.Index
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// ---- linearizability ----

// historyClient runs random gets, puts and compare-and-sets on a few keys
// through random members until stop closes, and records every call and
// answer for the linearizability check. An answer the client cannot
// interpret (a 503, a broken connection) is recorded as unknown for a write
// and as failed for a read; a refused connection never carried the request.
func historyClient(rec *history.Recorder, client int, nodes []*member, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(client), 7))
	now := func() int64 { return time.Now().UnixNano() }
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		m := nodes[rng.IntN(len(nodes))]
		key := fmt.Sprintf("h%d", rng.IntN(3))
		url := m.url() + "/kv/" + key
		switch r := rng.IntN(10); {
		case r < 4:
			id := rec.Invoke(client, history.Get(key), now())
			code, body, err := httpDo(http.MethodGet, url, "")
			switch {
			case err == nil && code == http.StatusOK:
				rec.Return(id, history.Output{Found: true, Value: body}, now())
			case err == nil && code == http.StatusNotFound && strings.Contains(body, "key not found"):
				rec.Return(id, history.Output{}, now())
			default:
				rec.Fail(id, now())
			}
		case r < 8:
			value := fmt.Sprintf("c%d-%d", client, i)
			id := rec.Invoke(client, history.Put(key, value), now())
			code, _, err := httpDo(http.MethodPut, url, value)
			recordWrite(rec, id, err, code == http.StatusOK, history.Output{})
		default:
			expect := fmt.Sprintf("c%d-%d", rng.IntN(3), max(i-rng.IntN(4), 0))
			in, body := history.CAS(key, expect, fmt.Sprintf("c%d-%d", client, i)), fmt.Sprintf(`{"expect":%q,"value":"c%d-%d"}`, expect, client, i)
			if rng.IntN(4) == 0 {
				in, body = history.CASAbsent(key, in.Value), fmt.Sprintf(`{"expect":null,"value":%q}`, in.Value)
			}
			id := rec.Invoke(client, in, now())
			code, ans, err := httpDo(http.MethodPost, url+"/cas", body)
			if err == nil && code == http.StatusConflict && strings.Contains(ans, `"ok":false`) {
				rec.Return(id, history.Output{Swapped: false}, now())
				continue
			}
			recordWrite(rec, id, err, code == http.StatusOK, history.Output{Swapped: true})
		}
	}
}

func recordWrite(rec *history.Recorder, id history.OpID, err error, ok bool, out history.Output) {
	now := time.Now().UnixNano()
	switch {
	case err == nil && ok:
		rec.Return(id, out, now)
	case errors.Is(err, syscall.ECONNREFUSED):
		rec.Fail(id, now)
	default:
		rec.ReturnUnknown(id, now)
	}
}
