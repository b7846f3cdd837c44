// Package history records the operations that clients of a Raftor cluster
// invoke and see return, and checks that the recorded history is
// linearizable against a key-value model with get, put, delete and
// compare-and-set, using porcupine.
//
// The simulator (cluster/sim) and the real in-process clusters
// (cluster/clustertest) both record into a Recorder; the check at the end of
// a run says whether some sequential order of the operations, consistent
// with their real-time order, explains every result the clients saw.
package history

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// OpKind is the kind of a key-value operation.
type OpKind uint8

const (
	// OpGet reads a key.
	OpGet OpKind = iota + 1
	// OpPut sets a key to a value.
	OpPut
	// OpDelete removes a key.
	OpDelete
	// OpCAS sets a key to Value if it currently holds Expect, or, with
	// ExpectAbsent, if it is currently absent.
	OpCAS
)

func (k OpKind) String() string {
	switch k {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	default:
		return fmt.Sprintf("op(%d)", uint8(k))
	}
}

// IsWrite reports whether the operation can change the state.
func (k OpKind) IsWrite() bool { return k == OpPut || k == OpDelete || k == OpCAS }

// Input is an operation as a client invoked it.
type Input struct {
	Kind  OpKind
	Key   string
	Value string // put, cas: the new value
	// Expect is the value a cas requires; with ExpectAbsent it requires the
	// key to be absent instead.
	Expect       string
	ExpectAbsent bool
}

// Output is what the client saw.
type Output struct {
	// Value and Found are a get's result.
	Value string
	Found bool
	// Swapped is a cas's result: true if it set the value.
	Swapped bool
	// Unknown marks an operation whose outcome the client cannot know (a
	// timeout, UNKNOWN_OUTCOME, a crash of the node it talked to). Such a
	// write may or may not have taken effect; it is recorded as returning
	// at +infinity, so the checker may place it anywhere after its
	// invocation, including never observed.
	Unknown bool
}

// Get, Put, Delete, CAS and CASAbsent build inputs.
func Get(key string) Input        { return Input{Kind: OpGet, Key: key} }
func Put(key, value string) Input { return Input{Kind: OpPut, Key: key, Value: value} }
func Delete(key string) Input     { return Input{Kind: OpDelete, Key: key} }
func CAS(key, expect, value string) Input {
	return Input{Kind: OpCAS, Key: key, Expect: expect, Value: value}
}
func CASAbsent(key, value string) Input {
	return Input{Kind: OpCAS, Key: key, ExpectAbsent: true, Value: value}
}

// String renders an input like "put(x, 1)".
func (in Input) String() string {
	switch in.Kind {
	case OpGet:
		return fmt.Sprintf("get(%s)", in.Key)
	case OpPut:
		return fmt.Sprintf("put(%s, %q)", in.Key, in.Value)
	case OpDelete:
		return fmt.Sprintf("delete(%s)", in.Key)
	case OpCAS:
		if in.ExpectAbsent {
			return fmt.Sprintf("cas(%s, <absent> -> %q)", in.Key, in.Value)
		}
		return fmt.Sprintf("cas(%s, %q -> %q)", in.Key, in.Expect, in.Value)
	default:
		return in.Kind.String()
	}
}

// describe renders an input with its output like "get(x) -> \"1\"".
func describe(in Input, out Output) string {
	if out.Unknown {
		return in.String() + " -> ?"
	}
	switch in.Kind {
	case OpGet:
		if !out.Found {
			return in.String() + " -> <absent>"
		}
		return fmt.Sprintf("%s -> %q", in, out.Value)
	case OpCAS:
		if out.Swapped {
			return in.String() + " -> swapped"
		}
		return in.String() + " -> not swapped"
	default:
		return in.String() + " -> ok"
	}
}

// keyState is the model's state for one key (the model is partitioned by
// key). It is a comparable value so porcupine's default equality works.
type keyState struct {
	Value   string
	Present bool
}

func (s keyState) String() string {
	if !s.Present {
		return "<absent>"
	}
	return fmt.Sprintf("%q", s.Value)
}

// step is the sequential specification of one key.
func step(st keyState, in Input, out Output) (bool, keyState) {
	switch in.Kind {
	case OpGet:
		if out.Unknown {
			// A read that never answered says nothing.
			return true, st
		}
		if out.Found != st.Present {
			return false, st
		}
		return !st.Present || out.Value == st.Value, st
	case OpPut:
		return true, keyState{Value: in.Value, Present: true}
	case OpDelete:
		return true, keyState{}
	case OpCAS:
		matches := (in.ExpectAbsent && !st.Present) ||
			(!in.ExpectAbsent && st.Present && st.Value == in.Expect)
		next := st
		if matches {
			next = keyState{Value: in.Value, Present: true}
		}
		if out.Unknown {
			// Whatever it did, it did it according to the spec.
			return true, next
		}
		if out.Swapped != matches {
			return false, st
		}
		return true, next
	default:
		return false, st
	}
}

// Model is the porcupine model of Raftor's test key-value state machine:
// get, put, delete and compare-and-set, partitioned by key. Inputs are Input
// and outputs Output values.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey,
		Init:      func() interface{} { return keyState{} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			ok, next := step(state.(keyState), input.(Input), output.(Output))
			return ok, next
		},
		DescribeOperation: func(input, output interface{}) string {
			return describe(input.(Input), output.(Output))
		},
		DescribeState: func(state interface{}) string {
			return state.(keyState).String()
		},
	}
}

// partitionByKey splits a history into one history per key, in key order so
// that the checker's work (and its report) does not depend on map order.
func partitionByKey(ops []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range ops {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// formatOps renders operations one per line, for failure reports.
func formatOps(ops []porcupine.Operation) string {
	var b strings.Builder
	for _, op := range ops {
		ret := fmt.Sprint(op.Return)
		if op.Return == Infinity {
			ret = "+inf"
		}
		fmt.Fprintf(&b, "  client %d  [%d, %s]  %s\n", op.ClientId, op.Call, ret,
			describe(op.Input.(Input), op.Output.(Output)))
	}
	return b.String()
}
