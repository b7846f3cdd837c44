package sim

import (
	"fmt"
	"io"
	"time"
)

// TraceRecord is one line of the trace: a message sent, delivered or
// dropped, a state change, a fault. Text is formatted lazily from Format and
// Args so that recording costs little when nobody reads the trace.
type TraceRecord struct {
	At     time.Duration
	Node   uint64 // 0 for the simulator itself
	Format string
	Args   []any
}

func (r TraceRecord) String() string {
	who := "sim"
	if r.Node != 0 {
		who = fmt.Sprintf("n%d", r.Node)
	}
	return fmt.Sprintf("%12.6fs %-4s %s", r.At.Seconds(), who, fmt.Sprintf(r.Format, r.Args...))
}

// Trace is a ring buffer of the last records. Arguments are kept by
// reference: callers pass values that are not mutated afterwards (messages
// are immutable once sent).
type Trace struct {
	buf   []TraceRecord
	next  int
	total uint64
}

// NewTrace keeps the last size records (0 disables tracing).
func NewTrace(size int) *Trace { return &Trace{buf: make([]TraceRecord, 0, size)} }

// Add records a line.
func (t *Trace) Add(at time.Duration, node uint64, format string, args ...any) {
	if t == nil || cap(t.buf) == 0 {
		return
	}
	t.total++
	rec := TraceRecord{At: at, Node: node, Format: format, Args: args}
	if len(t.buf) < cap(t.buf) {
		t.buf = append(t.buf, rec)
		return
	}
	t.buf[t.next] = rec
	t.next = (t.next + 1) % len(t.buf)
}

// Records returns the kept records, oldest first.
func (t *Trace) Records() []TraceRecord {
	if t == nil {
		return nil
	}
	out := make([]TraceRecord, 0, len(t.buf))
	out = append(out, t.buf[t.next:]...)
	out = append(out, t.buf[:t.next]...)
	return out
}

// WriteTo prints the kept records, oldest first.
func (t *Trace) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if t == nil {
		return 0, nil
	}
	if t.total > uint64(len(t.buf)) {
		k, err := fmt.Fprintf(w, "... %d earlier records dropped\n", t.total-uint64(len(t.buf)))
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	for _, r := range t.Records() {
		k, err := fmt.Fprintln(w, r.String())
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
