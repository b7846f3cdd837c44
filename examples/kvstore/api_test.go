package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/kvsm"
)

// newTestAPI serves the API of a one-voter cluster in this process (no
// remote, in-memory log), so the handlers run under the race detector.
func newTestAPI(t *testing.T, maxValue int) (*httptest.Server, *actors.Node) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	st, err := store.NewMemStore(store.Options{ClusterID: "kvstore", NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := kvsm.Open(filepath.Join(t.TempDir(), "sm"), kvsm.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	metrics := newServiceMetrics()
	node, err := actors.Start(system, actors.Config{ClusterID: "kvstore", NodeID: 1, TickInterval: 10 * time.Millisecond},
		sm, timedStore{Store: st, m: metrics})
	if err != nil {
		t.Fatal(err)
	}
	a := &api{node: node, sm: sm, system: system, clusterID: "kvstore", maxValue: maxValue,
		timeout: 5 * time.Second, admin: 10 * time.Second, metrics: metrics, log: quiet}
	srv := httptest.NewServer(a.handler())
	t.Cleanup(func() {
		srv.Close()
		_ = node.Stop()
		system.Shutdown()
		_ = sm.Close()
		_ = st.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Initialize(ctx, &messages.Membership{Voters: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	for !node.IsLeader() {
		if ctx.Err() != nil {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return srv, node
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	code, got, err := httpDo(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, strings.TrimSpace(got)
}

// Concurrent clients on one key: every PUT is acknowledged with its own
// index, and exactly one create-if-absent wins.
func TestConcurrentWritesAndOneCASWinner(t *testing.T) {
	srv, _ := newTestAPI(t, 1024)
	var wg sync.WaitGroup
	indexes := make(chan string, 40)
	wins := make(chan int, 20)
	for i := range 20 {
		wg.Go(func() {
			code, body := do(t, http.MethodPut, srv.URL+fmt.Sprintf("/kv/k%d", i), "v")
			if code != 200 {
				t.Errorf("PUT: %d %s", code, body)
			}
			indexes <- body
		})
		wg.Go(func() {
			code, _ := do(t, http.MethodPost, srv.URL+"/kv/lock/cas", fmt.Sprintf(`{"expect":null,"value":"c%d"}`, i))
			wins <- code
		})
	}
	wg.Wait()
	close(indexes)
	close(wins)
	seen := map[string]bool{}
	for b := range indexes {
		if seen[b] {
			t.Fatalf("two writes answered %s", b)
		}
		seen[b] = true
	}
	won := 0
	for code := range wins {
		switch code {
		case 200:
			won++
		case 409:
		default:
			t.Fatalf("cas answered %d", code)
		}
	}
	if won != 1 {
		t.Fatalf("%d create-if-absent won, want exactly 1", won)
	}
}

func TestAPIAnswers(t *testing.T) {
	srv, _ := newTestAPI(t, 8)
	steps := []struct {
		method, path, body string
		want               int
		wantBody           string // prefix
	}{
		{"GET", "/kv/a", "", 404, `{"error":"key not found","leader":1}`},
		{"PUT", "/kv/a", "12345678", 200, `{"index":`},
		{"PUT", "/kv/a", "123456789", 413, `{"error":"body of 9 bytes is over the limit of 8","leader":1}`},
		{"GET", "/kv/a", "", 200, "12345678"},
		{"GET", "/kv/a?consistency=stale", "", 200, "12345678"},
		{"GET", "/kv/a%2Fb", "", 404, `{"error":"key not found"`},
		{"PUT", "/kv/a%2Fb", "slash", 200, `{"index":`},
		{"GET", "/kv/a%2Fb", "", 200, "slash"},
		{"POST", "/kv/a/cas", `{"expect":"12345678","value":"123456789"}`, 413, `{"error":"\"value\" is over the limit`},
		{"POST", "/kv/a/cas", `{"expect":"x","value":"y","extra":1}`, 400, `{"error":"body: want`},
		{"POST", "/kv/a/cas", `{"expect":5,"value":"y"}`, 400, `{"error":"\"expect\" must be a string or null"`},
		{"POST", "/kv/a/cas", `{"expect":"12345678","value":"b"}`, 200, `{"ok":true}`},
		{"DELETE", "/kv/a", "", 200, `{"index":`},
		{"POST", "/kv/a/cas", `{"expect":"b","value":"c"}`, 409, `{"ok":false,"current":null}`},
		{"PATCH", "/kv/a", "", 405, `{"error":"method PATCH not allowed"`},
		{"GET", "/status", "", 200, `{"id":1,"role":"leader","term":`},
		{"PUT", "/cluster/voters", `{"voters":[]}`, 400, `{"error":"\"voters\" must name at least one node"`},
		{"PUT", "/cluster/voters", `{"voters":[1]}`, 200, `{"ok":true}`},
		{"POST", "/cluster/transfer-leader", `{"id":1}`, 200, `{"ok":true}`},
		{"POST", "/cluster/transfer-leader", `{"id":7}`, 400, `{"error":`},
		{"DELETE", "/cluster/learners/7", "", 400, `{"error":`},
		{"POST", "/cluster/snapshot", "", 200, `{"index":`},
	}
	for _, s := range steps {
		code, body := do(t, s.method, srv.URL+s.path, s.body)
		if code != s.want || !strings.HasPrefix(body, s.wantBody) {
			t.Fatalf("%s %s %s = %d %s, want %d %s...", s.method, s.path, s.body, code, body, s.want, s.wantBody)
		}
	}
	_, st := do(t, "GET", srv.URL+"/status", "")
	if !strings.HasSuffix(st, `"voters":[1],"learners":[]}`) {
		t.Fatalf("status %s: voters and learners must be JSON arrays", st)
	}
	_, metrics := do(t, "GET", srv.URL+"/metrics", "")
	for _, want := range []string{
		`raftor_role{role="leader"} 1`, `kvstore_requests_total{op="put",code="413"} 1`,
		`kvstore_requests_total{op="cas",code="409"} 1`, "kvstore_write_latency_seconds_count ",
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

func TestHistogramText(t *testing.T) {
	h := newHistogram([]float64{0.01, 0.1, 1})
	for _, v := range []float64{0.005, 0.01, 0.05, 2} {
		h.observe(v)
	}
	var b bytes.Buffer
	h.write(&b, "x_seconds", "Test.")
	want := `# HELP x_seconds Test.
# TYPE x_seconds histogram
x_seconds_bucket{le="0.01"} 2
x_seconds_bucket{le="0.1"} 3
x_seconds_bucket{le="1"} 3
x_seconds_bucket{le="+Inf"} 4
x_seconds_sum 2.065
x_seconds_count 4
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
