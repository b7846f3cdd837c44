//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kvstorePackage is what buildBinary compiles.
const kvstorePackage = "github.com/raftor/raftor/examples/kvstore"

// buildBinary compiles the kvstore program into out. It runs the go
// command from the current directory, which must lie inside the module.
func buildBinary(ctx context.Context, out string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", out, kvstorePackage)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", kvstorePackage, err, b)
	}
	return nil
}

// node is one kvstore process of the soak's cluster, across its restarts:
// the same ID, addresses and data directory every time, and one log file
// that collects the stdout and stderr of every incarnation.
type node struct {
	id       uint64
	raftAddr string
	httpAddr string
	dir      string
	logPath  string
	args     []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current incarnation has exited
	running bool
	paused  bool
	// killing is set just before the soak itself ends the process, so
	// that the exit is not taken for a crash.
	killing bool
	starts  int
}

func (n *node) url() string { return "http://" + n.httpAddr }

// exitRecord is a process exit the soak did not cause: a crash, a failed
// restart. Each one fails the run.
type exitRecord struct {
	node  uint64
	pid   int
	at    time.Duration
	state string
}

// procCluster runs three kvstore processes on loopback. Every process gets
// its own process group: the soak signals the group, a Ctrl-C at the
// terminal reaches the soak alone (which then kills the nodes), and on
// Linux a node dies with the soak even when the soak is killed itself.
type procCluster struct {
	bin   string
	root  string
	nodes []*node
	start time.Time
	http  *http.Client
	logf  func(format string, args ...any)

	mu         sync.Mutex
	pids       []int
	unexpected []exitRecord
}

// clusterConfig is what newProcCluster needs besides the binary.
type clusterConfig struct {
	size            int
	tick            time.Duration
	electionTicks   int
	requestTimeout  time.Duration
	snapshotEntries uint64
	snapshotKeep    uint64
}

// newProcCluster prepares (starts nothing) size nodes with free loopback
// ports and their own directories under root.
func newProcCluster(bin, root string, cfg clusterConfig, logf func(string, ...any)) (*procCluster, error) {
	ports, err := freePorts(2 * cfg.size)
	if err != nil {
		return nil, err
	}
	c := &procCluster{bin: bin, root: root, start: time.Now(), logf: logf,
		http: &http.Client{Timeout: 5 * time.Second}}
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return nil, err
	}
	var peers []string
	for i := range cfg.size {
		id := uint64(i + 1)
		n := &node{
			id:       id,
			raftAddr: "127.0.0.1:" + strconv.Itoa(ports[2*i]),
			httpAddr: "127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
			dir:      filepath.Join(root, "node-"+strconv.FormatUint(id, 10)),
			logPath:  filepath.Join(root, "logs", "node-"+strconv.FormatUint(id, 10)+".log"),
		}
		peers = append(peers, fmt.Sprintf("%d=%s", id, n.raftAddr))
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.args = []string{
			"--id", strconv.FormatUint(n.id, 10),
			"--raft-addr", n.raftAddr, "--http-addr", n.httpAddr, "--dir", n.dir,
			"--peers", strings.Join(peers, ","),
			"--tick-interval", cfg.tick.String(),
			"--election-ticks", strconv.Itoa(cfg.electionTicks),
			"--request-timeout", cfg.requestTimeout.String(),
			"--snapshot-entries", strconv.FormatUint(cfg.snapshotEntries, 10),
			"--snapshot-trailing", strconv.FormatUint(cfg.snapshotKeep, 10),
			"--log-level", "info",
		}
	}
	return c, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// They are taken below the kernel's ephemeral range: the soak's own
// clients open thousands of connections, and a client socket that happened
// to get a stopped node's port as its local port would keep the node from
// binding it again on restart.
func freePorts(n int) ([]int, error) {
	low, high := 20000, 32000
	if lo, _, ok := ephemeralRange(); ok && lo-1 < high {
		high = lo - 1
		low = min(low, high-1000)
	}
	seed := int(time.Now().UnixNano() % int64(high-low))
	var ports []int
	for i := 0; i < high-low && len(ports) < n; i++ {
		p := low + (seed+i*7919)%(high-low)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = l.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("only %d free loopback ports found in %d-%d, need %d", len(ports), low, high, n)
	}
	return ports, nil
}

// ephemeralRange reads Linux's ip_local_port_range.
func ephemeralRange() (int, int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	return lo, hi, err1 == nil && err2 == nil && lo > 1024
}

func (c *procCluster) since() time.Duration { return time.Since(c.start) }

// startNode starts node n (again) on its directory and waits until its
// HTTP API answers. A restart that loses the race for its port (another
// program took it while the node was down) is tried again a few times.
func (c *procCluster) startNode(ctx context.Context, n *node) error {
	const attempts = 5
	var last error
	for range attempts {
		pid, err := c.spawn(n)
		if err != nil {
			return err
		}
		err = c.waitServing(ctx, n, 30*time.Second)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if n.isRunning() || !strings.Contains(lastLines(n.logPath, 5), "cannot be used") {
			return err
		}
		// Not a fault of the node: some other program holds its port.
		c.forgiveExit(pid)
		c.logf("node %d: port taken, starting again: %v", n.id, err)
		last = err
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
	return last
}

// spawn starts one incarnation of n, its output appended to n's log.
func (c *procCluster) spawn(n *node) (pid int, _ error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return 0, fmt.Errorf("node %d is already running", n.id)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	n.starts++
	fmt.Fprintf(f, "=== soak: start #%d of node %d at %s (+%v)\n", n.starts, n.id,
		time.Now().UTC().Format(time.RFC3339Nano), c.since().Round(time.Millisecond))
	cmd := exec.Command(c.bin, n.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return 0, fmt.Errorf("starting node %d: %w", n.id, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.running, n.paused, n.killing = cmd, done, true, false, false
	c.mu.Lock()
	c.pids = append(c.pids, cmd.Process.Pid)
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		state := fmt.Sprint(err)
		if err == nil {
			state = "exit status 0"
		}
		fmt.Fprintf(f, "=== soak: node %d (pid %d) ended at +%v: %s\n", n.id, cmd.Process.Pid,
			c.since().Round(time.Millisecond), state)
		_ = f.Close()
		n.mu.Lock()
		expected := n.killing
		n.running, n.paused = false, false
		n.mu.Unlock()
		if !expected {
			c.mu.Lock()
			c.unexpected = append(c.unexpected, exitRecord{node: n.id, pid: cmd.Process.Pid, at: c.since(), state: state})
			c.mu.Unlock()
		}
		close(done)
	}()
	return cmd.Process.Pid, nil
}

// forgiveExit drops the record of process pid's exit: it was not a fault.
func (c *procCluster) forgiveExit(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unexpected = slices.DeleteFunc(c.unexpected, func(e exitRecord) bool { return e.pid == pid })
}

// waitServing waits until n's /status answers, or n exits, or d passes.
func (c *procCluster) waitServing(ctx context.Context, n *node, d time.Duration) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("node %d exited while starting; its log ends:\n%s", n.id, indent(lastLines(n.logPath, 10)))
		default:
		}
		if _, err := c.status(ctx, n); err == nil {
			return nil
		} else {
			last = err
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("node %d does not serve HTTP within %v: %v", n.id, d, last)
}

// signal sends sig to n's process group. It reports false when n is not
// running.
func (n *node) signal(sig syscall.Signal) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return false
	}
	if sig == syscall.SIGKILL {
		n.killing = true
	}
	pid := n.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil {
		// The group may be gone already; the process itself then too.
		_ = syscall.Kill(pid, sig)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return true
}

// kill ends n with SIGKILL, as a crash would, and waits until it is gone.
func (c *procCluster) kill(n *node) {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if !n.signal(syscall.SIGKILL) {
		return
	}
	<-done // SIGKILL cannot be caught, also not by a stopped process
}

func (c *procCluster) pause(n *node) bool  { return n.signal(syscall.SIGSTOP) }
func (c *procCluster) resume(n *node) bool { return n.signal(syscall.SIGCONT) }

func (n *node) isRunning() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

func (n *node) isPaused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running && n.paused
}

// killAll kills every node that runs. It is safe to call more than once
// and is what every path out of a run ends with.
func (c *procCluster) killAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { c.kill(n) })
	}
	wg.Wait()
}

// startedPIDs lists every process the cluster started.
func (c *procCluster) startedPIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.pids...)
}

func (c *procCluster) unexpectedExits() []exitRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]exitRecord(nil), c.unexpected...)
}

// statusBody is kvstore's GET /status.
type statusBody struct {
	ID      uint64   `json:"id"`
	Role    string   `json:"role"`
	Term    uint64   `json:"term"`
	Leader  uint64   `json:"leader"`
	Commit  uint64   `json:"commit"`
	Applied uint64   `json:"applied"`
	Voters  []uint64 `json:"voters"`
}

func (c *procCluster) status(ctx context.Context, n *node) (statusBody, error) {
	var st statusBody
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url()+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return st, json.Unmarshal(b, &st)
}

// gauges reads the named unlabelled gauges from n's /metrics.
func (c *procCluster) gauges(ctx context.Context, n *node, names ...string) (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	code, body, err := httpDoCtx(ctx, c.http, http.MethodGet, n.url()+"/metrics", "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("metrics: status %d", code)
	}
	out := map[string]uint64{}
	for line := range strings.SplitSeq(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %s: %v", name, err)
		}
		out[name] = uint64(v)
	}
	for _, name := range names {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("metrics: no %s", name)
		}
	}
	return out, nil
}

// leader asks every running, unpaused node and returns the node that says
// it leads in the highest term, or nil.
func (c *procCluster) leader(ctx context.Context) (*node, statusBody) {
	var best *node
	var bestSt statusBody
	for _, n := range c.nodes {
		if !n.isRunning() || n.isPaused() {
			continue
		}
		st, err := c.status(ctx, n)
		if err == nil && st.Role == "leader" && (best == nil || st.Term > bestSt.Term) {
			best, bestSt = n, st
		}
	}
	return best, bestSt
}

// describe renders every node's status in one line, for failure reports.
func (c *procCluster) describe(ctx context.Context) string {
	var parts []string
	for _, n := range c.nodes {
		switch {
		case !n.isRunning():
			parts = append(parts, fmt.Sprintf("node %d: down", n.id))
			continue
		case n.isPaused():
			parts = append(parts, fmt.Sprintf("node %d: paused", n.id))
			continue
		}
		st, err := c.status(ctx, n)
		if err != nil {
			parts = append(parts, fmt.Sprintf("node %d: %v", n.id, err))
			continue
		}
		parts = append(parts, fmt.Sprintf("node %d: %s term %d leader %d commit %d applied %d",
			n.id, st.Role, st.Term, st.Leader, st.Commit, st.Applied))
	}
	return strings.Join(parts, "; ")
}

// lastLines returns the last n lines of the file at path.
func lastLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	// Read at most the last 256 KiB: enough for n lines of a log.
	if st, err := f.Stat(); err == nil && st.Size() > 256<<10 {
		_, _ = f.Seek(st.Size()-256<<10, io.SeekStart)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
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

// processGone reports whether no process with pid exists any more.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
