package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuantileIsNearestRank(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted on purpose
	}
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"no samples", nil, 0.5, 0},
		{"one sample is every quantile", ms(7), 0.999, 7 * time.Millisecond},
		{"median of 1..100", ms(hundred...), 0.5, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p999 of 1..100 is the maximum", ms(hundred...), 0.999, 100 * time.Millisecond},
		{"p50 of two takes the lower", ms(1, 9), 0.5, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.samples, tt.q); got != tt.want {
				t.Fatalf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

// fakeCluster acknowledges each write after a fixed delay and counts one
// "fsync" per write.
type fakeCluster struct {
	delay   time.Duration
	fail    bool
	mu      sync.Mutex
	seen    map[[16]byte]bool
	dupes   int
	writes  atomic.Int64
	payload int
}

func (f *fakeCluster) Write(ctx context.Context, _ int, p []byte) error {
	time.Sleep(f.delay)
	if f.fail {
		return errors.New("disk on fire")
	}
	var id [16]byte
	copy(id[:], p)
	f.mu.Lock()
	if f.seen[id] {
		f.dupes++
	}
	f.seen[id] = true
	f.payload = len(p)
	f.mu.Unlock()
	f.writes.Add(1)
	return nil
}

func (f *fakeCluster) Counters() (int64, int64, bool) {
	n := f.writes.Load()
	return n, 2 * n, true
}

func (f *fakeCluster) Close() error { return nil }

func TestExecuteMeasuresEveryClientCount(t *testing.T) {
	f := &fakeCluster{delay: 2 * time.Millisecond, seen: map[[16]byte]bool{}}
	var out bytes.Buffer
	spec := Spec{System: "fake", Mode: "minimal", Clients: []int{1, 4}, Payload: 64,
		Warmup: 20 * time.Millisecond, Duration: 200 * time.Millisecond, Round: 3}
	if err := Execute(context.Background(), spec, f, &out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&out)
	var got []Result
	for dec.More() {
		var r Result
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if len(got) != 2 {
		t.Fatalf("%d result lines, want one per client count (2)", len(got))
	}
	for i, r := range got {
		if r.System != "fake" || r.Mode != "minimal" || r.Round != 3 || r.Clients != spec.Clients[i] || r.Payload != 64 {
			t.Errorf("result %d is labelled %+v", i, r)
		}
		// Each client manages at most one write per 2ms: 100 in 200ms.
		if limit := float64(r.Clients) * 100 * 1.2; r.Writes == 0 || float64(r.Writes) > limit {
			t.Errorf("%d clients: %d writes, want between 1 and %.0f", r.Clients, r.Writes, limit)
		}
		if r.P50Micros < 2000 || r.P50Micros > r.P99Micros || r.P99Micros > r.P999Micros {
			t.Errorf("%d clients: latencies p50 %v p99 %v p999 %v are not ordered or below the 2ms delay", r.Clients, r.P50Micros, r.P99Micros, r.P999Micros)
		}
		if r.Fsyncs <= 0 || r.SyncedEntries != 2*r.Fsyncs {
			t.Errorf("%d clients: fsyncs %d entries %d, want the counters' difference over the window", r.Clients, r.Fsyncs, r.SyncedEntries)
		}
	}
	if f.dupes != 0 || f.payload != 64 {
		t.Errorf("%d duplicate payloads, last payload %d bytes: every write must be distinct and of the asked size", f.dupes, f.payload)
	}
}

func TestFailedWritesAreCountedNotTimed(t *testing.T) {
	f := &fakeCluster{delay: time.Millisecond, fail: true, seen: map[[16]byte]bool{}}
	r, err := Run(context.Background(), Phase{Clients: 2, Payload: 32, Duration: 50 * time.Millisecond}, f.Write, f.Counters)
	if err != nil {
		t.Fatal(err)
	}
	if r.Writes != 0 || r.Errors == 0 || r.FirstError != "disk on fire" || r.P50Micros != 0 {
		t.Fatalf("got %+v, want no writes, errors counted and the first one kept", r)
	}
}

func TestExecuteWaitsForAFirstWrite(t *testing.T) {
	var calls atomic.Int64
	c := &flaky{okAfter: 3, calls: &calls}
	spec := Spec{Clients: []int{1}, Payload: 16, Duration: 20 * time.Millisecond}
	if err := Execute(context.Background(), spec, c, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 3 {
		t.Fatalf("%d writes, want the readiness probe to retry until the third succeeds", calls.Load())
	}
}

type flaky struct {
	okAfter int64
	calls   *atomic.Int64
}

func (f *flaky) Write(context.Context, int, []byte) error {
	if f.calls.Add(1) < f.okAfter {
		return errors.New("no leader yet")
	}
	return nil
}
func (f *flaky) Counters() (int64, int64, bool) { return 0, 0, false }
func (f *flaky) Close() error                   { return nil }

func TestRunRejectsABadPhase(t *testing.T) {
	for _, p := range []Phase{{Clients: 0, Duration: time.Second}, {Clients: 1}, {Clients: 1, Duration: time.Second, Warmup: -1}} {
		if _, err := Run(context.Background(), p, nil, nil); err == nil {
			t.Errorf("Run(%+v) succeeded, want an error", p)
		}
	}
}
