// Package kvsm is a key-value state machine on Pebble: puts, deletes and
// compare-and-set, replicated as messages.KVCommand and answered with
// messages.KVResult. It keeps its applied index in the same batch as the
// data it produced, so a restart resumes exactly after the last applied
// entry, and it deduplicates retried writes by their RequestID.
package kvsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// Keys: every key starts with a one-byte space.
const (
	spaceApplied   byte = 'a' // applied index(8) term(8)
	spaceSession   byte = 'c' // client id(8) -> sequence(8) + encoded KVResult
	spaceData      byte = 'd' // user key -> value
	spaceRestoring byte = 'r' // present while a restore is incomplete
)

var (
	keyApplied   = []byte{spaceApplied}
	keyRestoring = []byte{spaceRestoring}
	// allKeys bounds every key of the state machine.
	allStart, allEnd = []byte{0x00}, []byte{0xff}
)

// Options configures Open.
type Options struct {
	// FS is the file system, vfs.Default when nil.
	FS vfs.FS
	// NoSync skips the fsync of each applied batch. The state may then lose
	// its last applied entries in a crash; the node re-applies them from the
	// log, which only works while the log still holds them.
	NoSync bool
	// Logger, slog.Default() when nil.
	Logger *slog.Logger
}

// SM is the key-value state machine. Apply, Snapshot and Restore are called
// from one goroutine; Get and LastApplied may be called from any.
type SM struct {
	db     *pebble.DB
	dir    string
	sync   *pebble.WriteOptions
	logger *slog.Logger

	mu          sync.Mutex // held by Apply and Restore
	applied     atomic.Uint64
	appliedTerm atomic.Uint64
}

var _ store.StateMachine = (*SM)(nil)

// Open opens (creating if needed) the state machine in dir.
func Open(dir string, o Options) (*SM, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	db, err := openDB(dir, &pebble.Options{FS: o.FS, Logger: quiet{o.Logger}, FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		return nil, &store.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open state machine", Path: dir, Err: err}
	}
	s := &SM{db: db, dir: dir, sync: pebble.Sync, logger: o.Logger}
	if o.NoSync {
		s.sync = pebble.NoSync
	}
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// openDB opens the database, turning a panic over a damaged directory into
// an error.
func openDB(dir string, opts *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return pebble.Open(dir, opts)
}

// recover finishes what a crash interrupted: a restore that did not
// complete leaves a half-written keyspace, which is wiped (applied index 0,
// so the node installs a snapshot again).
func (s *SM) recover() error {
	if v, err := s.get(keyRestoring); err != nil {
		return err
	} else if v != nil {
		s.logger.Warn("state machine: an interrupted restore is discarded", "dir", s.dir)
		b := s.db.NewBatch()
		_ = b.DeleteRange(allStart, allEnd, nil)
		if err := commit(b, pebble.Sync); err != nil {
			return failed("recover", err)
		}
		return nil
	}
	v, err := s.get(keyApplied)
	if err != nil {
		return err
	}
	if v != nil {
		if len(v) != 16 {
			return &store.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "open state machine", Path: s.dir, Msg: "applied index key has the wrong length"}
		}
		s.applied.Store(binary.BigEndian.Uint64(v[:8]))
		s.appliedTerm.Store(binary.BigEndian.Uint64(v[8:]))
	}
	return nil
}

func (s *SM) get(key []byte) ([]byte, error) {
	v, c, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, failed("read", err)
	}
	out := append([]byte{}, v...)
	_ = c.Close()
	return out, nil
}

func failed(op string, err error) error {
	return &store.Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "state machine " + op, Err: err}
}

func dataKey(k []byte) []byte { return append([]byte{spaceData}, k...) }

func sessionKey(client uint64) []byte {
	k := make([]byte, 9)
	k[0] = spaceSession
	binary.BigEndian.PutUint64(k[1:], client)
	return k
}

// Get returns the value of key as of the last applied entry. For a
// linearizable read, call it after the node's read index is applied.
func (s *SM) Get(key []byte) (value []byte, ok bool, err error) {
	v, err := s.get(dataKey(key))
	return v, v != nil, err
}

// LastApplied implements store.StateMachine.
func (s *SM) LastApplied() (uint64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied.Load(), s.appliedTerm.Load()
}

// Apply implements store.StateMachine: the whole call is one batch, with
// the applied index, and one sync.
func (s *SM) Apply(entries []*messages.Entry) ([]store.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	results := make([]store.Result, len(entries))
	applied, term := s.applied.Load(), s.appliedTerm.Load()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for i, e := range entries {
		if e.GetIndex() <= applied {
			results[i].Skipped = true
			continue
		}
		if e.GetIndex() != applied+1 {
			return nil, &store.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Op: "apply", Index: e.GetIndex(),
				Msg: fmt.Sprintf("entry %d does not follow the applied index %d", e.GetIndex(), applied)}
		}
		if e.GetKind() == messages.EntryKind_ENTRY_KIND_NORMAL {
			res, err := s.applyOne(b, e)
			if err != nil {
				return nil, err
			}
			results[i] = res
		}
		applied, term = e.GetIndex(), e.GetTerm()
	}
	if applied == s.applied.Load() {
		return results, nil
	}
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], applied)
	binary.BigEndian.PutUint64(v[8:], term)
	_ = b.Set(keyApplied, v[:], nil)
	if err := commit(b, s.sync); err != nil {
		return nil, failed("apply", err)
	}
	s.applied.Store(applied)
	s.appliedTerm.Store(term)
	return results, nil
}

// decode returns the entry's command: the typed one, else the encoded data.
func decode(e *messages.Entry) (*messages.KVCommand, error) {
	cmd := &messages.KVCommand{}
	if a := e.GetCommand(); a != nil {
		if err := a.UnmarshalTo(cmd); err != nil {
			return nil, fmt.Errorf("command is not a KVCommand: %w", err)
		}
		return cmd, nil
	}
	if err := proto.Unmarshal(e.GetData(), cmd); err != nil {
		return nil, fmt.Errorf("data is not a KVCommand: %w", err)
	}
	return cmd, nil
}

// applyOne applies one NORMAL entry into b. A command that does not decode
// or makes no sense is answered with KVResult.error and changes nothing:
// every replica reaches the same answer. Only a storage error is returned.
func (s *SM) applyOne(b *pebble.Batch, e *messages.Entry) (store.Result, error) {
	rid := e.GetRequest()
	if rid.GetClientId() != 0 {
		v, err := batchGet(b, sessionKey(rid.ClientId))
		if err != nil {
			return store.Result{}, err
		}
		if len(v) >= 8 {
			last := binary.BigEndian.Uint64(v[:8])
			if rid.Sequence <= last {
				res := &messages.KVResult{Duplicate: true}
				if rid.Sequence == last {
					if err := proto.Unmarshal(v[8:], res); err != nil {
						return store.Result{}, &store.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "apply", Index: e.GetIndex(), Msg: "session record does not decode", Err: err}
					}
					res.Duplicate = true
				} else {
					res.Error = fmt.Sprintf("request %d of client %d is older than its last applied request %d", rid.Sequence, rid.ClientId, last)
				}
				return result(res), nil
			}
		}
	}
	res := &messages.KVResult{}
	cmd, err := decode(e)
	if err == nil {
		err = s.exec(b, cmd, res)
	}
	var serr *store.Error
	if errors.As(err, &serr) {
		return store.Result{}, err
	}
	if err != nil {
		res = &messages.KVResult{Error: err.Error()}
	}
	if rid.GetClientId() != 0 {
		enc, _ := proto.Marshal(res)
		v := make([]byte, 8, 8+len(enc))
		binary.BigEndian.PutUint64(v, rid.Sequence)
		_ = b.Set(sessionKey(rid.ClientId), append(v, enc...), nil)
	}
	return result(res), nil
}

func result(res *messages.KVResult) store.Result {
	data, _ := proto.Marshal(res)
	typed, _ := anypb.New(res)
	return store.Result{Data: data, Typed: typed}
}

func batchGet(b *pebble.Batch, key []byte) ([]byte, error) {
	v, c, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, failed("read", err)
	}
	out := append([]byte{}, v...)
	_ = c.Close()
	return out, nil
}

// exec runs cmd against b, filling res.
func (s *SM) exec(b *pebble.Batch, cmd *messages.KVCommand, res *messages.KVResult) error {
	var key []byte
	switch op := cmd.Op.(type) {
	case *messages.KVCommand_Put:
		key = op.Put.GetKey()
	case *messages.KVCommand_Delete:
		key = op.Delete.GetKey()
	case *messages.KVCommand_Cas:
		key = op.Cas.GetKey()
	default:
		return errors.New("empty command")
	}
	if len(key) == 0 {
		return errors.New("empty key")
	}
	dk := dataKey(key)
	prev, err := batchGet(b, dk)
	if err != nil {
		return err
	}
	res.Existed, res.Previous = prev != nil, prev
	res.Ok = true
	switch op := cmd.Op.(type) {
	case *messages.KVCommand_Put:
		_ = b.Set(dk, op.Put.GetValue(), nil)
	case *messages.KVCommand_Delete:
		if prev != nil {
			_ = b.Delete(dk, nil)
		}
	case *messages.KVCommand_Cas:
		c := op.Cas
		match := prev == nil && c.ExpectAbsent || prev != nil && !c.ExpectAbsent && string(prev) == string(c.Expected)
		if !match {
			res.Ok = false
			return nil
		}
		if c.Delete {
			if prev != nil {
				_ = b.Delete(dk, nil)
			}
		} else {
			_ = b.Set(dk, c.GetValue(), nil)
		}
	}
	return nil
}

// ---- snapshots ----

const (
	snapMagic   = "RAFTORKV"
	snapVersion = 1
)

// Snapshot implements store.StateMachine with a Pebble snapshot: it costs
// nothing now, and WriteTo iterates the state as it was while Apply goes on.
func (s *SM) Snapshot() (store.StateSnapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &snapshot{snap: s.db.NewSnapshot(), index: s.applied.Load(), term: s.appliedTerm.Load()}, nil
}

type snapshot struct {
	snap        *pebble.Snapshot
	index, term uint64
	once        sync.Once
}

func (p *snapshot) Index() uint64 { return p.index }
func (p *snapshot) Term() uint64  { return p.term }
func (p *snapshot) Close() error {
	var err error
	p.once.Do(func() { err = p.snap.Close() })
	return err
}

// WriteTo writes the body: a header (magic, version, index, term), then
// every session and data key as length-prefixed key and value, then a zero
// length. The snapshot store checksums the whole body.
func (p *snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 256<<10)
	hdr := make([]byte, 0, 28)
	hdr = append(hdr, snapMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, snapVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, p.index)
	hdr = binary.BigEndian.AppendUint64(hdr, p.term)
	_, _ = bw.Write(hdr)
	it, err := p.snap.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceSession}, UpperBound: []byte{spaceData + 1}})
	if err != nil {
		return cw.n, failed("snapshot", err)
	}
	defer it.Close()
	var lb [binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return cw.n, failed("snapshot", err)
		}
		for _, part := range [][]byte{it.Key(), v} {
			_, _ = bw.Write(lb[:binary.PutUvarint(lb[:], uint64(len(part)))])
			_, _ = bw.Write(part)
		}
	}
	if err := it.Error(); err != nil {
		return cw.n, failed("snapshot", err)
	}
	_, _ = bw.Write(lb[:binary.PutUvarint(lb[:], 0)])
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore implements store.StateMachine. It marks the keyspace as being
// restored and wipes it in one synced batch, loads the body in batches, and
// in a last synced batch sets the applied index and clears the mark. A
// crash in between leaves the mark, and Open wipes the partial state.
func (s *SM) Restore(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewBatch()
	_ = b.DeleteRange(allStart, allEnd, nil)
	_ = b.Set(keyRestoring, nil, nil)
	if err := commit(b, pebble.Sync); err != nil {
		return failed("restore", err)
	}
	s.applied.Store(0)
	s.appliedTerm.Store(0)

	corrupt := func(format string, args ...any) error {
		return &store.Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: "restore", Msg: fmt.Sprintf(format, args...)}
	}
	br := bufio.NewReaderSize(r, 256<<10)
	hdr := make([]byte, 28)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return corrupt("snapshot header unreadable: %v", err)
	}
	if string(hdr[:8]) != snapMagic {
		return corrupt("not a key-value snapshot")
	}
	if v := binary.BigEndian.Uint32(hdr[8:12]); v != snapVersion {
		return corrupt("unsupported snapshot version %d", v)
	}
	index, term := binary.BigEndian.Uint64(hdr[12:20]), binary.BigEndian.Uint64(hdr[20:28])
	b = s.db.NewBatch()
	defer func() { _ = b.Close() }()
	readPart := func() ([]byte, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if n > 1<<30 {
			return nil, fmt.Errorf("record of %d bytes", n)
		}
		p := make([]byte, n)
		_, err = io.ReadFull(br, p)
		return p, err
	}
	for records := 0; ; records++ {
		k, err := readPart()
		if err != nil {
			return corrupt("record %d unreadable: %v", records, err)
		}
		if len(k) == 0 {
			break
		}
		if k[0] != spaceSession && k[0] != spaceData {
			return corrupt("record %d has key %x outside the state", records, k)
		}
		v, err := readPart()
		if err != nil {
			return corrupt("record %d unreadable: %v", records, err)
		}
		_ = b.Set(k, v, nil)
		if b.Len() > 4<<20 {
			if err := commit(b, pebble.NoSync); err != nil {
				return failed("restore", err)
			}
			_ = b.Close()
			b = s.db.NewBatch()
		}
	}
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], index)
	binary.BigEndian.PutUint64(v[8:], term)
	_ = b.Set(keyApplied, v[:], nil)
	_ = b.Delete(keyRestoring, nil)
	if err := commit(b, pebble.Sync); err != nil {
		return failed("restore", err)
	}
	s.applied.Store(index)
	s.appliedTerm.Store(term)
	return nil
}

// Close closes the database.
func (s *SM) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// ---- commands ----

// Put returns a command that sets key to value.
func Put(key, value []byte) *messages.KVCommand {
	return &messages.KVCommand{Op: &messages.KVCommand_Put{Put: &messages.KVPut{Key: key, Value: value}}}
}

// Delete returns a command that removes key.
func Delete(key []byte) *messages.KVCommand {
	return &messages.KVCommand{Op: &messages.KVCommand_Delete{Delete: &messages.KVDelete{Key: key}}}
}

// CompareAndSet returns a command that sets key to value if it holds expected.
func CompareAndSet(key, expected, value []byte) *messages.KVCommand {
	return &messages.KVCommand{Op: &messages.KVCommand_Cas{Cas: &messages.KVCompareAndSet{Key: key, Expected: expected, Value: value}}}
}

// CreateIfAbsent returns a command that sets key to value if it is absent.
func CreateIfAbsent(key, value []byte) *messages.KVCommand {
	return &messages.KVCommand{Op: &messages.KVCommand_Cas{Cas: &messages.KVCompareAndSet{Key: key, ExpectAbsent: true, Value: value}}}
}

// Encode returns cmd encoded, for Entry.data or ClientWriteRequest.data.
func Encode(cmd *messages.KVCommand) []byte {
	b, _ := proto.Marshal(cmd)
	return b
}

// DecodeResult decodes a Result's data.
func DecodeResult(r store.Result) (*messages.KVResult, error) {
	res := &messages.KVResult{}
	if err := proto.Unmarshal(r.Data, res); err != nil {
		return nil, err
	}
	return res, nil
}

type quiet struct{ l *slog.Logger }

func (q quiet) Infof(format string, args ...any) {
	q.l.Debug(fmt.Sprintf(format, args...), "component", "kvsm")
}
func (q quiet) Errorf(format string, args ...any) {
	q.l.Error(fmt.Sprintf(format, args...), "component", "kvsm")
}

// Fatalf must not return: Pebble calls it when a commit failed and would
// then report success. commit recovers the panic as an error.
func (q quiet) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	q.l.Error(msg, "component", "kvsm")
	panic(fatal(msg))
}

type fatal string

// commit commits b, turning Pebble's fatal commit error into an error.
func commit(b *pebble.Batch, o *pebble.WriteOptions) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	return b.Commit(o)
}
