package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
)

// fileSnapshots keeps snapshot bodies in root/<group>/<id>.
type fileSnapshots struct {
	s    *PebbleStore
	root string
}

const tmpSuffix = ".tmp"

// open removes what a crash left behind: bodies being written, and bodies
// renamed into place whose meta was never recorded or that a newer snapshot
// replaced.
func (f *fileSnapshots) open() error {
	fs := f.s.fs
	if err := mkdirDurable(fs, f.root); err != nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "open", Path: f.root, Err: err}
	}
	names, err := fs.List(f.root)
	if err != nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "open", Path: f.root, Err: err}
	}
	for _, name := range names {
		group, err := strconv.ParseUint(name, 10, 64)
		if err != nil || group == 0 {
			continue
		}
		meta, err := f.s.Snapshot(group)
		if err != nil {
			return err
		}
		dir := fs.PathJoin(f.root, name)
		files, err := fs.List(dir)
		if err != nil {
			return &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "open", Path: dir, Err: err}
		}
		for _, file := range files {
			if meta != nil && file == meta.Id {
				continue
			}
			_ = fs.Remove(fs.PathJoin(dir, file))
		}
	}
	return nil
}

func (f *fileSnapshots) groupDir(group uint64) string {
	return f.s.fs.PathJoin(f.root, strconv.FormatUint(group, 10))
}

// newSnapshotID names a snapshot by its index and term, plus a random part
// so that two snapshots at one index never share a file.
func newSnapshotID(index, term uint64) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%020d-%020d-%08x", index, term, binary.BigEndian.Uint32(b[:]))
}

func validSnapshotID(id string) bool {
	if id == "" || id == "." || id == ".." || strings.HasSuffix(id, tmpSuffix) {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// CreateSnapshot implements SnapshotStore.
func (s *PebbleStore) CreateSnapshot(group uint64, meta *messages.SnapshotMeta) (SnapshotWriter, error) {
	const op = "create snapshot"
	if group == 0 {
		return nil, errInvalid(op, 0, "group id is 0")
	}
	if meta == nil {
		return nil, errInvalid(op, group, "snapshot meta is nil")
	}
	s.mu.Lock()
	err := s.usableLocked(op)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m := proto.Clone(meta).(*messages.SnapshotMeta)
	m.Id = newSnapshotID(m.Index, m.Term)
	dir := s.snaps.groupDir(group)
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, errFailed(op, &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Path: dir, Err: err})
	}
	path := s.fs.PathJoin(dir, m.Id)
	file, err := s.fs.Create(path+tmpSuffix, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, errFailed(op, &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Path: path + tmpSuffix, Err: err})
	}
	return &fileSnapshotWriter{s: s, group: group, meta: m, wantSize: meta.Size, wantSum: meta.Checksum,
		file: file, dir: dir, path: path, crc: crc32.New(castagnoli), buf: make([]byte, 0, 256<<10)}, nil
}

type fileSnapshotWriter struct {
	s        *PebbleStore
	group    uint64
	meta     *messages.SnapshotMeta
	wantSize uint64
	wantSum  uint32
	file     vfs.File
	dir      string
	path     string
	crc      hash.Hash32
	size     uint64
	buf      []byte
	err      error
	done     bool
}

// Write buffers p and writes the file in large pieces. The caller's buffer
// is never handed to the file system (vfs files may scribble on it).
func (w *fileSnapshotWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errInvalid("write snapshot", w.group, "snapshot writer already finished")
	}
	if w.err != nil {
		return 0, w.err
	}
	_, _ = w.crc.Write(p)
	w.size += uint64(len(p))
	for n := 0; n < len(p); {
		c := copy(w.buf[len(w.buf):cap(w.buf)], p[n:])
		w.buf = w.buf[:len(w.buf)+c]
		n += c
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
	}
	return len(p), nil
}

func (w *fileSnapshotWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.file.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: "write snapshot", Group: w.group, Path: w.path + tmpSuffix, Err: err}
		return w.err
	}
	return nil
}

func (w *fileSnapshotWriter) Commit() (*messages.SnapshotMeta, error) { return w.finish(false) }
func (w *fileSnapshotWriter) Install() (*messages.SnapshotMeta, error) {
	return w.finish(true)
}

func (w *fileSnapshotWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	_ = w.file.Close()
	_ = w.s.fs.Remove(w.path + tmpSuffix)
	return nil
}

// finish makes the body durable under its final name (file sync, rename,
// directory sync) and only then records its meta in one synced batch.
func (w *fileSnapshotWriter) finish(install bool) (*messages.SnapshotMeta, error) {
	op := "commit snapshot"
	if install {
		op = "install snapshot"
	}
	if w.done {
		return nil, errInvalid(op, w.group, "snapshot writer already finished")
	}
	fail := func(err error) (*messages.SnapshotMeta, error) {
		_ = w.Abort()
		return nil, err
	}
	if err := w.flush(); err != nil {
		return fail(err)
	}
	w.meta.Size, w.meta.Checksum = w.size, w.crc.Sum32()
	if (w.wantSize != 0 || w.wantSum != 0) && (w.wantSize != w.meta.Size || w.wantSum != w.meta.Checksum) {
		return fail(&Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: w.group, Index: w.meta.Index,
			Msg: fmt.Sprintf("snapshot body is %d bytes with crc32c %08x, its meta says %d bytes with crc32c %08x",
				w.meta.Size, w.meta.Checksum, w.wantSize, w.wantSum)})
	}
	ioFail := func(path string, err error) (*messages.SnapshotMeta, error) {
		return fail(&Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: op, Group: w.group, Path: path, Err: err})
	}
	if err := w.file.Sync(); err != nil {
		return ioFail(w.path+tmpSuffix, err)
	}
	if err := w.file.Close(); err != nil {
		return ioFail(w.path+tmpSuffix, err)
	}
	if err := w.s.fs.Rename(w.path+tmpSuffix, w.path); err != nil {
		return ioFail(w.path, err)
	}
	w.done = true
	if err := syncDirs(w.s.fs, w.dir, w.s.snaps.root); err != nil {
		_ = w.s.fs.Remove(w.path)
		return nil, &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: op, Group: w.group, Path: w.dir, Err: err}
	}
	var prev *messages.SnapshotMeta
	err := w.s.mutate(op, func(tx *ptx) error {
		g, err := tx.group(op, w.group)
		if err != nil {
			return err
		}
		prev = g.snap
		return planSnapshot(g, w.group, w.meta, install, tx.w)
	})
	if err != nil {
		_ = w.s.fs.Remove(w.path)
		return nil, err
	}
	if prev != nil && prev.Id != w.meta.Id {
		// A reader that has the old body open keeps reading it.
		_ = w.s.fs.Remove(w.s.fs.PathJoin(w.dir, prev.Id))
	}
	return proto.Clone(w.meta).(*messages.SnapshotMeta), nil
}

func syncDirs(fs vfs.FS, dirs ...string) error {
	for _, d := range dirs {
		if err := syncDir(fs, d); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// Snapshot implements SnapshotStore.
func (s *PebbleStore) Snapshot(group uint64) (*messages.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.readState("snapshot", group)
	if err != nil || st.snap == nil {
		return nil, err
	}
	return proto.Clone(st.snap).(*messages.SnapshotMeta), nil
}

// openBody opens the stored body of snapshot id.
func (s *PebbleStore) openBody(op string, group uint64, id string) (*messages.SnapshotMeta, vfs.File, string, error) {
	meta, err := s.Snapshot(group)
	if err != nil {
		return nil, nil, "", err
	}
	if meta == nil || meta.Id != id || !validSnapshotID(id) {
		latest := "none"
		if meta != nil {
			latest = meta.Id
		}
		return nil, nil, "", errInvalid(op, group, "snapshot %q not found (latest is %s)", id, latest)
	}
	path := s.fs.PathJoin(s.snaps.groupDir(group), id)
	f, err := s.fs.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, "", &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: group, Path: path, Msg: "snapshot body missing", Err: err}
		}
		return nil, nil, "", &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: op, Group: group, Path: path, Err: err}
	}
	return meta, f, path, nil
}

// OpenSnapshot implements SnapshotStore.
func (s *PebbleStore) OpenSnapshot(group uint64, id string) (SnapshotReader, error) {
	const op = "open snapshot"
	meta, f, path, err := s.openBody(op, group, id)
	if err != nil {
		return nil, err
	}
	if err := verifyBody(io.NewSectionReader(f, 0, 1<<62), meta, op, group, path); err != nil {
		_ = f.Close()
		return nil, err
	}
	return &snapshotReader{SectionReader: io.NewSectionReader(f, 0, int64(meta.Size)), c: f, meta: meta}, nil
}

// verifyBody checks r's size and CRC-32C against meta.
func verifyBody(r io.Reader, meta *messages.SnapshotMeta, op string, group uint64, path string) error {
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, r)
	if err != nil {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: group, Index: meta.Index, Path: path, Msg: "snapshot body unreadable", Err: err}
	}
	if uint64(n) != meta.Size || h.Sum32() != meta.Checksum {
		return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: group, Index: meta.Index, Path: path,
			Msg: fmt.Sprintf("snapshot body is %d bytes with crc32c %08x, its meta says %d bytes with crc32c %08x", n, h.Sum32(), meta.Size, meta.Checksum)}
	}
	return nil
}

type snapshotReader struct {
	*io.SectionReader
	c    io.Closer
	meta *messages.SnapshotMeta
	once sync.Once
}

func (r *snapshotReader) Meta() *messages.SnapshotMeta {
	return proto.Clone(r.meta).(*messages.SnapshotMeta)
}
func (r *snapshotReader) Close() error {
	var err error
	r.once.Do(func() { err = r.c.Close() })
	return err
}

// ReadSnapshotChunk implements SnapshotStore.
func (s *PebbleStore) ReadSnapshotChunk(group uint64, id string, offset, maxBytes uint64) (*messages.SnapshotMeta, []byte, bool, error) {
	const op = "read snapshot"
	meta, f, path, err := s.openBody(op, group, id)
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close()
	return readChunk(op, group, meta, path, f, offset, maxBytes)
}

func readChunk(op string, group uint64, meta *messages.SnapshotMeta, path string, r io.ReaderAt, offset, maxBytes uint64) (*messages.SnapshotMeta, []byte, bool, error) {
	if offset > meta.Size {
		return nil, nil, false, errInvalid(op, group, "offset %d is past the snapshot's size %d", offset, meta.Size)
	}
	n := meta.Size - offset
	if maxBytes > 0 && n > maxBytes {
		n = maxBytes
	}
	buf := make([]byte, n)
	if n > 0 {
		if _, err := r.ReadAt(buf, int64(offset)); err != nil {
			return nil, nil, false, &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: group, Index: meta.Index, Path: path, Msg: "snapshot body unreadable", Err: err}
		}
	}
	return meta, buf, offset+n == meta.Size, nil
}
