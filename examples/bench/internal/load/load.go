// Package load is the workload every benchmarked system runs: a fixed number of
// clients, each issuing one write at a time to the leader, with every write's
// latency recorded.
//
// The parent benchmark program and the peers' worker live in two Go modules,
// so that Raftor's module graph does not carry the peers' dependencies. This
// file exists twice, byte for byte (examples/bench/internal/load and
// examples/bench/peers/internal/load); a test in examples/bench fails when the
// copies drift apart. It imports the standard library only.
package load

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Writer performs one write of payload on behalf of client and returns once
// the system acknowledged it: committed by a quorum and applied. It is called
// concurrently by different clients, never concurrently for one client.
type Writer func(ctx context.Context, client int, payload []byte) error

// Counters reports how often the system's log called fsync and how many log
// entries those calls made durable, summed over the three nodes. A system
// whose fsyncs the program cannot see returns ok == false.
type Counters func() (fsyncs, entries int64, ok bool)

// Phase is one measured run: a number of clients writing for a duration
// after a warm-up.
type Phase struct {
	Clients  int
	Payload  int
	Warmup   time.Duration
	Duration time.Duration
}

// Result is one line of a worker's output: what one phase measured. The
// parent adds peak RSS, which only it can see (the child's rusage).
type Result struct {
	System  string `json:"system"`
	Mode    string `json:"mode"`
	Clients int    `json:"clients"`
	Payload int    `json:"payload"`
	Round   int    `json:"round"`

	Writes  int64   `json:"writes"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`

	WritesPerSec float64 `json:"writes_per_sec"`
	P50Micros    float64 `json:"p50_us"`
	P99Micros    float64 `json:"p99_us"`
	P999Micros   float64 `json:"p999_us"`

	// CPUSeconds is user+system CPU of the whole worker process (three
	// nodes and the clients) during the measured window only.
	CPUSeconds float64 `json:"cpu_seconds"`

	// Fsyncs and SyncedEntries are -1 when the system's syncs are not visible.
	Fsyncs        int64 `json:"fsyncs"`
	SyncedEntries int64 `json:"synced_entries"`

	// LogWriteP50Micros is the median time of the system's own log
	// writes (one synced batch each) during the phase, warm-up included,
	// where the program can see them.
	LogWriteP50Micros float64 `json:"log_write_p50_us,omitempty"`
	// LogWriteP99Micros and LogWriteMaxMicros are the tail of the same
	// log writes: a write that waits for a slow log write shows in the
	// clients' p99 and p999.
	LogWriteP99Micros float64 `json:"log_write_p99_us,omitempty"`
	LogWriteMaxMicros float64 `json:"log_write_max_us,omitempty"`
	// WriteStalls and WriteStallMicros count the times the system's log
	// store stopped taking writes during the phase, and for how long in
	// all (Pebble's write stalls: memtables or level 0 full).
	WriteStalls      int64   `json:"write_stalls,omitempty"`
	WriteStallMicros float64 `json:"write_stall_us,omitempty"`

	PeakRSSBytes int64  `json:"peak_rss_bytes,omitempty"`
	FirstError   string `json:"first_error,omitempty"`
	Note         string `json:"note,omitempty"`
}

// Run drives w with p.Clients clients: each writes sequentially, first for
// p.Warmup (not recorded), then for p.Duration (recorded). Writes that fail
// are counted, not retried, and do not contribute latencies; the client
// pauses errorBackoff before its next write. The payload of a
// write carries the client and a sequence number unique in the process in its
// first 16 bytes, so no two writes are identical.
func Run(ctx context.Context, p Phase, w Writer, c Counters) (Result, error) {
	if p.Clients < 1 || p.Payload < 0 || p.Duration <= 0 || p.Warmup < 0 {
		return Result{}, fmt.Errorf("load: bad phase %+v", p)
	}
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errs      atomic.Int64
		firstErr  atomic.Value
		wg        sync.WaitGroup
	)
	samples := make([][]time.Duration, p.Clients)
	for i := range p.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, max(p.Payload, 16))
			binary.BigEndian.PutUint64(buf, uint64(i))
			var own []time.Duration
			for !stop.Load() {
				binary.BigEndian.PutUint64(buf[8:], writeSeq.Add(1))
				payload := buf[:p.Payload]
				if p.Payload < 16 {
					payload = buf
				}
				start := time.Now()
				err := w(ctx, i, payload)
				took := time.Since(start)
				if err != nil {
					// A system without a leader fails writes at once; a
					// client that retried at full speed would only burn
					// the CPU the system needs to recover.
					if measuring.Load() && errs.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					sleep(ctx, errorBackoff)
					continue
				}
				if !measuring.Load() {
					continue
				}
				own = append(own, took)
			}
			samples[i] = own
		}()
	}

	if !sleep(ctx, p.Warmup) {
		stop.Store(true)
		wg.Wait()
		return Result{}, ctx.Err()
	}
	f0, e0, seen := c()
	cpu0 := cpuSeconds()
	measuring.Store(true)
	start := time.Now()
	sleep(ctx, p.Duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu1 := cpuSeconds()
	f1, e1, _ := c()
	stop.Store(true)
	wg.Wait()
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}

	var all []time.Duration
	for _, s := range samples {
		all = append(all, s...)
	}
	slices.Sort(all)
	r := Result{
		Clients:       p.Clients,
		Payload:       p.Payload,
		Writes:        int64(len(all)),
		Errors:        errs.Load(),
		Seconds:       elapsed.Seconds(),
		WritesPerSec:  float64(len(all)) / elapsed.Seconds(),
		P50Micros:     micros(quantile(all, 0.50)),
		P99Micros:     micros(quantile(all, 0.99)),
		P999Micros:    micros(quantile(all, 0.999)),
		CPUSeconds:    cpu1 - cpu0,
		Fsyncs:        -1,
		SyncedEntries: -1,
	}
	if seen {
		r.Fsyncs, r.SyncedEntries = f1-f0, e1-e0
	}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstError = s
	}
	return r, nil
}

// errorBackoff is how long a client waits after a failed write.
const errorBackoff = 10 * time.Millisecond

// writeSeq numbers the writes of every phase of the process.
var writeSeq atomic.Uint64

// quantile is the nearest-rank quantile of sorted samples.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// Quantile is quantile for callers outside the package (the floor).
func Quantile(samples []time.Duration, q float64) time.Duration {
	s := slices.Clone(samples)
	slices.Sort(s)
	return quantile(s, q)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// cpuSeconds is the user+system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// Emit writes r as one JSON line: the protocol between a worker and the parent.
func Emit(w io.Writer, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// Spec is what the parent asks a worker to run: one system in one mode, each
// client count in turn on the same cluster.
type Spec struct {
	System   string        `json:"system"`
	Mode     string        `json:"mode"`
	Clients  []int         `json:"clients"`
	Payload  int           `json:"payload"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	Round    int           `json:"round"`
	// Dir is where the nodes keep their data (durable mode); the worker
	// creates subdirectories and the parent removes the whole tree.
	Dir string `json:"dir"`
}

// ErrUnavailable is returned by a worker for a system or mode it cannot run;
// the parent reports it instead of numbers.
var ErrUnavailable = errors.New("not available")

// Cluster is a running three-node cluster of one system, ready for writes.
type Cluster interface {
	Write(ctx context.Context, client int, payload []byte) error
	Counters() (fsyncs, entries int64, ok bool)
	Close() error
}

// LogWriteTimer is a Cluster that times its own log writes.
type LogWriteTimer interface {
	// ResetLogWrites forgets the writes timed so far.
	ResetLogWrites()
	// LogWriteP50 is the median of the writes timed since the reset.
	LogWriteP50() time.Duration
	// LogWriteTail is the p99 and the longest of those writes.
	LogWriteTail() (p99, longest time.Duration)
	// WriteStalls is how many times, and how long in all, the log stores
	// stopped taking writes since the reset.
	WriteStalls() (n int64, total time.Duration)
}

// Execute runs every phase of s on c and emits one Result per phase to out.
// Before the first phase it waits until a write succeeds: an elected leader
// is not always ready to commit at once (connections still being dialled,
// the leader's first entry of its term not yet committed).
func Execute(ctx context.Context, s Spec, c Cluster, out io.Writer) error {
	if err := Ready(ctx, c, 30*time.Second); err != nil {
		return err
	}
	timer, timed := c.(LogWriteTimer)
	for _, n := range s.Clients {
		if timed {
			timer.ResetLogWrites()
		}
		r, err := Run(ctx, Phase{Clients: n, Payload: s.Payload, Warmup: s.Warmup, Duration: s.Duration}, c.Write, c.Counters)
		if err != nil {
			return err
		}
		if timed {
			r.LogWriteP50Micros = float64(timer.LogWriteP50()) / float64(time.Microsecond)
			p99, longest := timer.LogWriteTail()
			r.LogWriteP99Micros = float64(p99) / float64(time.Microsecond)
			r.LogWriteMaxMicros = float64(longest) / float64(time.Microsecond)
			stalls, stalled := timer.WriteStalls()
			r.WriteStalls, r.WriteStallMicros = stalls, float64(stalled)/float64(time.Microsecond)
		}
		r.System, r.Mode, r.Round = s.System, s.Mode, s.Round
		if err := Emit(out, r); err != nil {
			return err
		}
	}
	return nil
}

// Ready retries one write until it succeeds or timeout passes.
func Ready(ctx context.Context, c Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	probe := []byte("ready")
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Write(wctx, 0, probe)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("no write succeeded within %v: %w", timeout, err)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}
