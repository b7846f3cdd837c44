package history

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Infinity is the return stamp of an operation whose outcome is unknown.
const Infinity = int64(math.MaxInt64)

// OpID names an invoked operation in a Recorder.
type OpID int

type record struct {
	client   int
	input    Input
	output   Output
	call     int64 // logical stamp
	ret      int64 // logical stamp, or Infinity
	callTime int64 // caller's clock, nanoseconds, for reports
	retTime  int64
	done     bool
	// failed marks an operation that certainly had no effect (NOT_LEADER,
	// ABORTED): it is left out of the history.
	failed bool
}

// Recorder collects a concurrent client history. It is safe for concurrent
// use by real clients; the simulator uses it from one goroutine.
//
// Every Invoke and Return takes a stamp from one counter, under the
// Recorder's lock, so the stamps order events exactly as they happened: two
// operations overlap in the recorded history if and only if they overlapped
// in reality. The caller's clock (simulated or real nanoseconds) is kept for
// reports only.
type Recorder struct {
	mu    sync.Mutex
	stamp int64
	ops   []record
}

// NewRecorder returns an empty history.
func NewRecorder() *Recorder { return &Recorder{} }

// Invoke records that client invoked in at time now (nanoseconds on the
// caller's clock) and returns the operation's id.
func (r *Recorder) Invoke(client int, in Input, now int64) OpID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamp++
	r.ops = append(r.ops, record{client: client, input: in, call: r.stamp, callTime: now})
	return OpID(len(r.ops) - 1)
}

// Return records the result of operation id at time now. Returning an
// unknown id or returning twice is ignored: the first answer counts.
func (r *Recorder) Return(id OpID, out Output, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(id) < 0 || int(id) >= len(r.ops) || r.ops[id].done {
		return
	}
	rec := &r.ops[id]
	rec.done = true
	rec.output = out
	rec.retTime = now
	if out.Unknown {
		rec.ret = Infinity
		return
	}
	r.stamp++
	rec.ret = r.stamp
}

// ReturnUnknown records that the outcome of id cannot be known (timeout,
// UNKNOWN_OUTCOME, lost connection).
func (r *Recorder) ReturnUnknown(id OpID, now int64) {
	r.Return(id, Output{Unknown: true}, now)
}

// Fail records that operation id certainly had no effect (it was refused,
// or its entry was replaced before it committed). It is left out of the
// history: an operation that never happened constrains nothing.
func (r *Recorder) Fail(id OpID, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(id) < 0 || int(id) >= len(r.ops) || r.ops[id].done {
		return
	}
	r.ops[id].done = true
	r.ops[id].failed = true
	r.ops[id].retTime = now
}

// Len is the number of operations invoked so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Counts summarises a history.
type Counts struct {
	Ops, Reads, Writes, Unknown, Pending, Failed int
}

// Counts returns how many operations of each sort were recorded.
func (r *Recorder) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c Counts
	for _, rec := range r.ops {
		c.Ops++
		if rec.input.Kind.IsWrite() {
			c.Writes++
		} else {
			c.Reads++
		}
		switch {
		case !rec.done:
			c.Pending++
		case rec.failed:
			c.Failed++
		case rec.output.Unknown:
			c.Unknown++
		}
	}
	return c
}

// Operations returns the history in porcupine's form. Operations that never
// returned are treated as unknown; reads with an unknown outcome are left
// out, since they constrain nothing.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]porcupine.Operation, 0, len(r.ops))
	for _, rec := range r.ops {
		if rec.failed {
			continue
		}
		out, ret := rec.output, rec.ret
		if !rec.done {
			out, ret = Output{Unknown: true}, Infinity
		}
		if out.Unknown && !rec.input.Kind.IsWrite() {
			continue
		}
		ops = append(ops, porcupine.Operation{
			ClientId: rec.client,
			Input:    rec.input,
			Call:     rec.call,
			Output:   out,
			Return:   ret,
		})
	}
	return ops
}

// Result is the outcome of a linearizability check.
type Result struct {
	// Outcome is porcupine's verdict: Ok, Illegal, or Unknown when the
	// check ran out of time.
	Outcome porcupine.CheckResult
	// BadKeys lists the keys whose sub-history is not linearizable.
	BadKeys []string
	ops     []porcupine.Operation
	info    porcupine.LinearizationInfo
}

// OK reports whether the history was found linearizable.
func (res *Result) OK() bool { return res.Outcome == porcupine.Ok }

// Err is nil for a linearizable history and otherwise describes the
// operations on the offending keys.
func (res *Result) Err() error {
	switch res.Outcome {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return fmt.Errorf("linearizability check timed out on %d operations", len(res.ops))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "history is not linearizable on key(s) %s", strings.Join(res.BadKeys, ", "))
	for _, part := range partitionByKey(res.ops) {
		key := part[0].Input.(Input).Key
		if !contains(res.BadKeys, key) {
			continue
		}
		const maxShown = 60
		shown := part
		if len(shown) > maxShown {
			shown = shown[len(shown)-maxShown:]
			fmt.Fprintf(&b, "\nkey %s (last %d of %d operations):\n", key, maxShown, len(part))
		} else {
			fmt.Fprintf(&b, "\nkey %s:\n", key)
		}
		b.WriteString(formatOps(shown))
	}
	return errors.New(strings.TrimRight(b.String(), "\n"))
}

// WriteVisualization writes porcupine's HTML view of the history and the
// longest linearizable prefixes it found to path.
func (res *Result) WriteVisualization(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return porcupine.VisualizePath(Model(), res.info, path)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Check checks the recorded history. A timeout of 0 means no limit.
func (r *Recorder) Check(timeout time.Duration) *Result {
	return CheckOperations(r.Operations(), timeout)
}

// CheckOperations checks a history in porcupine's form against Model.
func CheckOperations(ops []porcupine.Operation, timeout time.Duration) *Result {
	model := Model()
	outcome, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	res := &Result{Outcome: outcome, ops: ops, info: info}
	if outcome == porcupine.Illegal {
		// Find the offending keys; each key's history is checked on its
		// own anyway, so this costs no more than the first check.
		single := model
		single.Partition = nil
		for _, part := range partitionByKey(ops) {
			if porcupine.CheckOperationsTimeout(single, part, timeout) == porcupine.Illegal {
				res.BadKeys = append(res.BadKeys, part[0].Input.(Input).Key)
			}
		}
	}
	return res
}
