package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
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

// Three processes, started in reverse order, form a cluster; every node
// takes writes and serves linearizable and stale reads of every write; the
// API answers as documented; leadership moves on request.
func TestClusterServesEveryNode(t *testing.T) {
	c := newProcCluster(t, 3, "--max-value-bytes", "1024")
	for _, id := range []uint64{3, 2, 1} {
		c.start(id)
	}
	nodes := c.running()
	leader := c.waitLeader(15*time.Second, nodes...)

	// Writes through every node, followers included.
	for _, m := range nodes {
		putIndex(t, m, fmt.Sprintf("key-%d", m.id), fmt.Sprintf("value-%d", m.id))
	}
	// Reads after writes through every node.
	for _, reader := range nodes {
		for _, writer := range nodes {
			key := fmt.Sprintf("key-%d", writer.id)
			if got := must(t, http.StatusOK, http.MethodGet, reader.url()+"/kv/"+key, ""); got != "value-"+itoa(writer.id) {
				t.Fatalf("GET %s through node %d = %q, want value-%d", key, reader.id, got, writer.id)
			}
			// After a linearizable read the node applied the write: a
			// stale read sees it too.
			if got := must(t, http.StatusOK, http.MethodGet, reader.url()+"/kv/"+key+"?consistency=stale", ""); got != "value-"+itoa(writer.id) {
				t.Fatalf("stale GET %s through node %d = %q", key, reader.id, got)
			}
		}
	}

	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	steps := []struct {
		name         string
		method, path string
		body         string
		want         int
		wantBody     string // exact, when set
	}{
		{"delete through a follower", http.MethodDelete, "/kv/key-1", "", 200, ""},
		{"deleted key is gone", http.MethodGet, "/kv/key-1", "", 404, ""},
		{"deleting an absent key succeeds", http.MethodDelete, "/kv/never-written", "", 200, ""},
		{"create if absent", http.MethodPost, "/kv/lock/cas", `{"expect":null,"value":"owner-a"}`, 200, `{"ok":true}`},
		{"create if absent, taken", http.MethodPost, "/kv/lock/cas", `{"expect":null,"value":"owner-b"}`, 409, `{"ok":false,"current":"owner-a"}`},
		{"swap with the wrong expectation", http.MethodPost, "/kv/lock/cas", `{"expect":"owner-b","value":"owner-c"}`, 409, `{"ok":false,"current":"owner-a"}`},
		{"swap with the right expectation", http.MethodPost, "/kv/lock/cas", `{"expect":"owner-a","value":"owner-c"}`, 200, `{"ok":true}`},
		{"the swap is visible", http.MethodGet, "/kv/lock", "", 200, "owner-c"},
		{"cas on an absent key", http.MethodPost, "/kv/nothing/cas", `{"expect":"x","value":"y"}`, 409, `{"ok":false,"current":null}`},
		{"cas without expect", http.MethodPost, "/kv/lock/cas", `{"value":"y"}`, 400, ""},
		{"cas with bad JSON", http.MethodPost, "/kv/lock/cas", `{"expect":`, 400, ""},
		{"value at the limit", http.MethodPut, "/kv/big", strings.Repeat("v", 1024), 200, ""},
		{"value over the limit", http.MethodPut, "/kv/big", strings.Repeat("v", 1025), 413, ""},
		{"unknown consistency", http.MethodGet, "/kv/lock?consistency=sometimes", "", 400, ""},
		{"wrong method", http.MethodPost, "/kv/lock", "x", 405, ""},
		{"unknown endpoint", http.MethodGet, "/nope", "", 404, ""},
		{"voters must be learners first", http.MethodPut, "/cluster/voters", `{"voters":[1,2,3,9]}`, 400, ""},
		{"bad learner address", http.MethodPost, "/cluster/learners", `{"id":9,"addr":"nowhere"}`, 400, ""},
	}
	for _, s := range steps {
		code, body, err := httpDo(s.method, follower.url()+s.path, s.body)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if code != s.want {
			t.Fatalf("%s: %s %s = %d %s, want %d", s.name, s.method, s.path, code, body, s.want)
		}
		if s.wantBody != "" && strings.TrimSpace(body) != s.wantBody {
			t.Fatalf("%s: body %s, want %s", s.name, body, s.wantBody)
		}
		if code >= 400 && s.wantBody == "" {
			var e errorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
				t.Fatalf("%s: error body %q is not {\"error\":...,\"leader\":N}", s.name, body)
			}
		}
	}

	st := mustStatus(t, follower)
	if st.ID != follower.id || st.Role != "follower" || st.Leader != leader.id || st.Term == 0 ||
		!slices.Equal(st.Voters, []uint64{1, 2, 3}) || st.Learners == nil || len(st.Learners) != 0 || st.Applied > st.Commit {
		t.Fatalf("follower status %+v", st)
	}
	metrics := must(t, http.StatusOK, http.MethodGet, leader.url()+"/metrics", "")
	for _, want := range []string{
		`raftor_role{role="leader"} 1`, "raftor_term ", "raftor_commit_index ", "raftor_applied_index ",
		fmt.Sprintf(`raftor_peer_lag{peer="%d"}`, follower.id), "kvstore_write_latency_seconds_bucket{le=\"+Inf\"}",
		"raftor_storage_append_seconds_count ", "raftor_storage_batch_entries_bucket",
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("leader /metrics lacks %q:\n%s", want, metrics)
		}
	}

	// Leadership moves on request, asked through a node that does not lead.
	var target *member
	for _, m := range nodes {
		if m != leader && m != follower {
			target = m
		}
	}
	must(t, http.StatusOK, http.MethodPost, follower.url()+"/cluster/transfer-leader", fmt.Sprintf(`{"id":%d}`, target.id))
	if got := c.waitLeader(10*time.Second, nodes...); got != target {
		t.Fatalf("leader after transfer is node %d, want %d", got.id, target.id)
	}
	putIndex(t, leader, "after-transfer", "ok")

	var snap struct{ Index, Term uint64 }
	if err := json.Unmarshal([]byte(must(t, http.StatusOK, http.MethodPost, follower.url()+"/cluster/snapshot", "")), &snap); err != nil || snap.Index == 0 {
		t.Fatalf("snapshot answered %+v, %v", snap, err)
	}

	// SIGTERM stops the leader cleanly (status 0); the other two go on.
	if code := target.p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("leader exited with %d after SIGTERM, want 0", code)
	}
	rest := c.running()
	c.waitLeader(10*time.Second, rest...)
	putIndex(t, rest[0], "after-stop", "ok")
	if got := must(t, http.StatusOK, http.MethodGet, rest[1].url()+"/kv/after-stop", ""); got != "ok" {
		t.Fatalf("read after the leader stopped: %q", got)
	}
	// A clean stop does not wait on a peer that is down.
	start := time.Now()
	if code := rest[0].p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("with a peer down, SIGTERM took %v and exit status %d; want 0 within 5s", time.Since(start), code)
	}
}

// Clients keep writing through every node while the leader is killed with
// SIGKILL: a new leader is elected within seconds, every write that was
// acknowledged is readable afterwards through every survivor, the history
// of gets, puts and compare-and-sets on shared keys is linearizable, and
// the old leader, restarted on its data, catches up.
func TestLeaderKilledLosesNoAcknowledgedWrite(t *testing.T) {
	c := newProcCluster(t, 3)
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	nodes := c.running()
	old := c.waitLeader(15*time.Second, nodes...)

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	rec := history.NewRecorder()
	for client := range 3 {
		wg.Go(func() { historyClient(rec, client+1, nodes, stop) })
	}
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := nodes[(w+i)%len(nodes)]
				key, value := fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("v%d-%d", w, i)
				code, _, err := httpDo(http.MethodPut, m.url()+"/kv/"+key, value)
				if err == nil && code == http.StatusOK {
					mu.Lock()
					acked[key] = value
					mu.Unlock()
				}
			}
		})
	}
	t0 := time.Now()
	waitFor(t, 20*time.Second, "50 acknowledged writes", func() (bool, string) { return ackedCount() >= 50, fmt.Sprint(ackedCount()) })

	t.Logf("50 writes in %v", time.Since(t0))
	old.p.kill()
	killed := time.Now()
	var survivors []*member
	for _, m := range nodes {
		if m != old {
			survivors = append(survivors, m)
		}
	}
	next := c.waitLeader(10*time.Second, survivors...)
	elected := time.Since(killed)
	if elected > 5*time.Second {
		t.Fatalf("new leader after %v, want within seconds", elected)
	}
	t.Logf("node %d killed; node %d leads %v later", old.id, next.id, elected.Round(time.Millisecond))

	before := ackedCount()
	waitFor(t, 20*time.Second, "50 more acknowledged writes after the kill", func() (bool, string) {
		return ackedCount() >= before+50, fmt.Sprint(ackedCount() - before)
	})
	t.Logf("50 more writes %v after the kill", time.Since(killed))
	close(stop)
	wg.Wait()
	t.Logf("writers stopped %v after the kill", time.Since(killed))

	res := rec.Check(time.Minute)
	if err := res.Err(); err != nil {
		t.Fatalf("the history of %d operations is not linearizable: %v", rec.Len(), err)
	}
	t.Logf("history of %+v operations is linearizable", rec.Counts())
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d writes acknowledged", len(acked))
	for _, m := range survivors {
		for key, value := range acked {
			if got := must(t, http.StatusOK, http.MethodGet, m.url()+"/kv/"+key, ""); got != value {
				t.Fatalf("acknowledged %s=%s, node %d reads %q", key, value, m.id, got)
			}
		}
	}

	t.Logf("reads checked %v after the kill", time.Since(killed))
	// The old leader restarts on its data (its --peers is ignored) and
	// catches up with the new leader's commit.
	c.start(old.id)
	t.Logf("old leader restarted %v after the kill", time.Since(killed))
	commit := mustStatus(t, next).Commit
	waitFor(t, 20*time.Second, "the old leader catches up", func() (bool, string) {
		st, err := status(old)
		if err != nil {
			return false, err.Error()
		}
		return st.Applied >= commit && st.Leader != 0 && st.Role == "follower", fmt.Sprintf("%+v (commit %d)", st, commit)
	})
	t.Logf("old leader caught up %v after the kill", time.Since(killed))
	for key, value := range acked {
		if got := must(t, http.StatusOK, http.MethodGet, old.url()+"/kv/"+key+"?consistency=stale", ""); got != value {
			t.Fatalf("restarted node %d reads %s=%q, want %q", old.id, key, got, value)
		}
	}
}

// A fourth node joins with --join, catches up as a learner, is promoted to
// voter; then the leader is removed from the voters, steps down, and the
// cluster goes on without it; the removed node stops cleanly on SIGTERM.
func TestJoinPromoteAndRemove(t *testing.T) {
	c := newProcCluster(t, 3)
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	founders := c.running()
	leader := c.waitLeader(15*time.Second, founders...)
	for i := range 20 {
		putIndex(t, founders[i%3], fmt.Sprintf("before-%d", i), "x")
	}

	// Join through a node that is not the leader: it forwards.
	via := founders[0]
	if via == leader {
		via = founders[1]
	}
	four := c.addMember(4, via)
	c.start(4)
	waitFor(t, 30*time.Second, "node 4 is a learner", func() (bool, string) {
		st, err := status(leader)
		if err != nil {
			return false, err.Error()
		}
		st4, err := status(four)
		if err != nil {
			return false, err.Error()
		}
		return slices.Equal(st.Learners, []uint64{4}) && st4.Role == "learner", fmt.Sprintf("leader %+v, node 4 %+v", st, st4)
	})
	waitFor(t, 10*time.Second, "node 4 holds the data", func() (bool, string) {
		code, body, err := httpDo(http.MethodGet, four.url()+"/kv/before-19?consistency=stale", "")
		return err == nil && code == 200 && body == "x", fmt.Sprint(code, body, err)
	})

	// Promotion, asked through the learner itself.
	must(t, http.StatusOK, http.MethodPut, four.url()+"/cluster/voters", `{"voters":[1,2,3,4]}`)
	st := mustStatus(t, leader)
	if !slices.Equal(st.Voters, []uint64{1, 2, 3, 4}) || len(st.Learners) != 0 {
		t.Fatalf("after promotion: %+v", st)
	}
	putIndex(t, four, "after-promotion", "y")
	if got := must(t, http.StatusOK, http.MethodGet, four.url()+"/kv/after-promotion", ""); got != "y" {
		t.Fatalf("node 4 reads %q", got)
	}

	// Remove the leader itself.
	var rest []*member
	var voters []string
	for _, m := range c.running() {
		if m != leader {
			rest = append(rest, m)
			voters = append(voters, itoa(m.id))
		}
	}
	must(t, http.StatusOK, http.MethodPut, rest[0].url()+"/cluster/voters", `{"voters":[`+strings.Join(voters, ",")+`]}`)
	next := c.waitLeader(15*time.Second, rest...)
	if next == leader {
		t.Fatalf("the removed leader still leads")
	}
	st = mustStatus(t, next)
	if strings.Join(strings.Fields(strings.Trim(fmt.Sprint(st.Voters), "[]")), ",") != strings.Join(voters, ",") {
		t.Fatalf("voters after removal %v, want %v", st.Voters, voters)
	}
	if code := leader.p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("removed node exited with %d after SIGTERM, want 0", code)
	}
	putIndex(t, rest[0], "after-removal", "z")
	for _, m := range rest {
		if got := must(t, http.StatusOK, http.MethodGet, m.url()+"/kv/after-removal", ""); got != "z" {
			t.Fatalf("node %d reads %q", m.id, got)
		}
	}
}

// A learner that joins after the leader trimmed its log catches up from a
// snapshot: the leader streams it in chunks, the learner's Pebble store
// records it under an ID of its own, and the learner restores from it.
func TestLearnerCatchesUpFromSnapshot(t *testing.T) {
	c := newProcCluster(t, 3, "--snapshot-entries", "10", "--snapshot-trailing", "2")
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	leader := c.waitLeader(15*time.Second, c.running()...)
	for i := range 30 {
		putIndex(t, leader, fmt.Sprintf("k%d", i), "v")
	}
	waitFor(t, 10*time.Second, "the leader trims its log after a snapshot", func() (bool, string) {
		_, body, err := httpDo(http.MethodGet, leader.url()+"/metrics", "")
		return err == nil && !strings.Contains(body, "raftor_first_log_index 1\n"), "raftor_first_log_index still 1"
	})
	four := c.addMember(4, leader)
	c.start(4)
	waitFor(t, 20*time.Second, "node 4 holds the data", func() (bool, string) {
		code, body, err := httpDo(http.MethodGet, four.url()+"/kv/k29?consistency=stale", "")
		return err == nil && code == 200 && body == "v", fmt.Sprint(code, body, err)
	})
}

// freeRun finds n consecutive loopback ports that are free now.
func freeRun(t *testing.T, n int, avoid int) int {
	t.Helper()
	for base := 20000 + int(time.Now().UnixNano()%20000); base < 65000; base += n + 7 {
		if base <= avoid+n && avoid <= base+n {
			continue
		}
		ok := true
		var ls []net.Listener
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			_ = l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free run of ports")
	return 0
}

// Without --id the program runs three nodes in one process, prints their
// HTTP addresses and the leader, stops cleanly on SIGTERM and SIGINT, and a
// second run serves the data of the first.
func TestLocalClusterKeepsItsData(t *testing.T) {
	raftPort := freeRun(t, 3, 0)
	httpPort := freeRun(t, 3, raftPort)
	dir := t.TempDir()
	args := append([]string{"--raft-port", strconv.Itoa(raftPort), "--http-port", strconv.Itoa(httpPort), "--dir", dir}, testClock...)
	node := func(i int) string { return "http://127.0.0.1:" + strconv.Itoa(httpPort+i-1) }

	for run, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		p := startProc(t, fmt.Sprintf("run %d", run+1), args...)
		waitFor(t, 20*time.Second, "the leader is printed", func() (bool, string) {
			return strings.Contains(p.out.String(), "is the leader"), p.out.String() + p.err.String()
		})
		for i := 1; i <= 3; i++ {
			if !strings.Contains(p.out.String(), node(i)) {
				t.Fatalf("output does not name node %d's address %s:\n%s", i, node(i), p.out.String())
			}
		}
		if run == 0 {
			must(t, http.StatusOK, http.MethodPut, node(1)+"/kv/greeting", "hello")
		} else if got := must(t, http.StatusOK, http.MethodGet, node(3)+"/kv/greeting", ""); got != "hello" {
			t.Fatalf("second run reads %q, want hello", got)
		}
		if code := p.stop(t, sig, 20*time.Second); code != 0 {
			t.Fatalf("exit status %d after %v, want 0; stderr:\n%s", code, sig, p.err.String())
		}
	}
	for i := 1; i <= 3; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("node-%d", i), "log")); err != nil {
			t.Fatalf("node %d's data: %v", i, err)
		}
	}
}

// TestLoad measures writes through the HTTP API of three processes:
// KVSTORE_E2E_LOAD=1 go test -run TestLoad -v ./examples/kvstore
// (KVSTORE_E2E_CLIENTS sets the concurrent clients, default 32).
func TestLoad(t *testing.T) {
	if os.Getenv("KVSTORE_E2E_LOAD") == "" {
		t.Skip("set KVSTORE_E2E_LOAD=1 to measure")
	}
	clients := 32
	if v, err := strconv.Atoi(os.Getenv("KVSTORE_E2E_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	c := newProcCluster(t, 3)
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	nodes := c.running()
	leader := c.waitLeader(15*time.Second, nodes...)
	const d = 5 * time.Second
	var (
		mu        sync.Mutex
		latencies []time.Duration
		failed    int
		wg        sync.WaitGroup
	)
	end := time.Now().Add(d)
	for w := range clients {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for i := 0; time.Now().Before(end); i++ {
				m := nodes[(w+i)%len(nodes)]
				start := time.Now()
				code, _, err := httpDo(http.MethodPut, m.url()+fmt.Sprintf("/kv/load-%d-%d", w, i), strings.Repeat("x", 100))
				if err != nil || code != http.StatusOK {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[int(float64(len(latencies)-1)*p)] }
	metrics := must(t, http.StatusOK, http.MethodGet, leader.url()+"/metrics", "")
	var batches, appends, fsyncSum, fsyncCount string
	for line := range strings.SplitSeq(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, "raftor_storage_append_seconds_sum "); ok {
			fsyncSum = v
		}
		if v, ok := strings.CutPrefix(line, "raftor_storage_append_seconds_count "); ok {
			fsyncCount = v
		}
		if v, ok := strings.CutPrefix(line, "raftor_storage_batches_total "); ok {
			batches = v
		}
		if v, ok := strings.CutPrefix(line, "raftor_storage_appends_total "); ok {
			appends = v
		}
	}
	t.Logf("%d clients, 100-byte values, writes through all three nodes for %v: %d ok (%.0f/s), %d failed; latency p50 %v p99 %v max %v; leader fsyncs %s for %s appends, log writes took %ss in %s calls",
		clients, d, len(latencies), float64(len(latencies))/d.Seconds(), failed, pct(0.5), pct(0.99), latencies[len(latencies)-1], batches, appends, fsyncSum, fsyncCount)
}
