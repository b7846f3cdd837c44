package sim

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"sort"

	"github.com/raftor/raftor/messages"
	"google.golang.org/protobuf/proto"
)

// kvSM is the simulated nodes' state machine: a key-value map driven by
// messages.KVCommand entries. It is deliberately simple (and separate from
// store/kvsm) so that a failure points at Raft, not at the state machine.
type kvSM struct {
	data         map[string]string
	appliedIndex uint64
	appliedTerm  uint64
}

func newKVSM() *kvSM { return &kvSM{data: map[string]string{}} }

// apply applies one committed entry and returns the result for its waiter.
func (sm *kvSM) apply(e *messages.Entry) *messages.KVResult {
	sm.appliedIndex, sm.appliedTerm = e.Index, e.Term
	if e.Kind != messages.EntryKind_ENTRY_KIND_NORMAL {
		return nil
	}
	var cmd messages.KVCommand
	if err := proto.Unmarshal(e.Data, &cmd); err != nil {
		return &messages.KVResult{Error: "undecodable command: " + err.Error()}
	}
	switch op := cmd.Op.(type) {
	case *messages.KVCommand_Put:
		prev, existed := sm.data[string(op.Put.Key)]
		sm.data[string(op.Put.Key)] = string(op.Put.Value)
		return &messages.KVResult{Ok: true, Previous: []byte(prev), Existed: existed}
	case *messages.KVCommand_Delete:
		prev, existed := sm.data[string(op.Delete.Key)]
		delete(sm.data, string(op.Delete.Key))
		return &messages.KVResult{Ok: true, Previous: []byte(prev), Existed: existed}
	case *messages.KVCommand_Cas:
		c := op.Cas
		prev, existed := sm.data[string(c.Key)]
		match := (c.ExpectAbsent && !existed) || (!c.ExpectAbsent && existed && prev == string(c.Expected))
		if match {
			if c.Delete {
				delete(sm.data, string(c.Key))
			} else {
				sm.data[string(c.Key)] = string(c.Value)
			}
		}
		return &messages.KVResult{Ok: match, Previous: []byte(prev), Existed: existed}
	default:
		return &messages.KVResult{Error: "empty command"}
	}
}

func (sm *kvSM) get(key string) (string, bool) {
	v, ok := sm.data[key]
	return v, ok
}

// encode serialises the map in key order (so a snapshot's bytes and
// checksum are a function of the state alone).
func (sm *kvSM) encode() []byte {
	keys := make([]string, 0, len(sm.data))
	for k := range sm.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := sm.data[k]
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

var errBadSnapshot = errors.New("sim: malformed snapshot body")

func decodeKV(b []byte) (map[string]string, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errBadSnapshot
	}
	b = b[k:]
	out := make(map[string]string, n)
	readStr := func() (string, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return "", errBadSnapshot
		}
		s := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return s, nil
	}
	for i := uint64(0); i < n; i++ {
		key, err := readStr()
		if err != nil {
			return nil, err
		}
		val, err := readStr()
		if err != nil {
			return nil, err
		}
		out[key] = val
	}
	if len(b) != 0 {
		return nil, errBadSnapshot
	}
	return out, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// kvCommand encodes a client operation as entry data.
func kvCommand(cmd *messages.KVCommand) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		// A KVCommand built from strings always encodes.
		return nil
	}
	return b
}
