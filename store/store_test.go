package store_test

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/goleak"

	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

var errInjected = errors.New("injected: fsync failed (EIO)")

const dir = "/raftor"

// pebbleHarness runs the Pebble store on a crashable in-memory file system,
// wrapped so that syncs can be made to fail.
type pebbleHarness struct {
	fs    *vfs.MemFS
	fault *atomic.Bool
	s     *store.PebbleStore
}

func (h *pebbleHarness) open(t *testing.T, o store.Options) (store.Store, error) {
	fault := &atomic.Bool{}
	h.fault = fault
	fs := errorfs.Wrap(h.fs, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if fault.Load() && (op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo) {
			return errInjected
		}
		return nil
	}))
	s, err := store.OpenPebble(dir, store.PebbleOptions{Options: o, FS: fs})
	if err != nil {
		return nil, err
	}
	h.s = s
	t.Cleanup(func() { s.Close() })
	return s, nil
}

func (h *pebbleHarness) mustOpen(t *testing.T) store.Store {
	t.Helper()
	s, err := h.open(t, storetest.Options)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func (h *pebbleHarness) Open(t *testing.T) store.Store {
	if h.s != nil {
		h.s.Close()
	}
	h.fs = vfs.NewCrashableMem()
	return h.mustOpen(t)
}

func (h *pebbleHarness) Reopen(t *testing.T) store.Store {
	if err := h.s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return h.mustOpen(t)
}

func (h *pebbleHarness) ReopenAs(t *testing.T, o store.Options) (store.Store, error) {
	h.s.Close()
	return h.open(t, o)
}

func (h *pebbleHarness) Crash(t *testing.T) store.Store {
	clone := h.fs.CrashClone(vfs.CrashCloneCfg{})
	h.s.Close()
	h.fs = clone
	return h.mustOpen(t)
}

func (h *pebbleHarness) FailSyncs(t *testing.T) { h.fault.Store(true) }

func (h *pebbleHarness) CorruptEntry(t *testing.T, group, index uint64) store.Store {
	h.s.Close()
	db, err := pebble.Open(dir+"/log", &pebble.Options{FS: h.fs, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	v, closer, err := db.Get(store.EntryKey(group, index))
	if err != nil {
		t.Fatalf("entry %d/%d: %v", group, index, err)
	}
	b := append([]byte(nil), v...)
	closer.Close()
	b[len(b)-1] ^= 0x40
	if err := db.Set(store.EntryKey(group, index), b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return h.mustOpen(t)
}

func (h *pebbleHarness) CorruptSnapshot(t *testing.T, group uint64) {
	m, err := h.s.Snapshot(group)
	if err != nil || m == nil {
		t.Fatalf("no snapshot: %v", err)
	}
	path := dir + "/snapshots/1/" + m.Id
	f, err := h.fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	b[len(b)/2] ^= 1
	w, err := h.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Sync()
	w.Close()
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic("pebble fatal in test")
}

// memHarness runs the in-memory store.
type memHarness struct{ s *store.MemStore }

func (h *memHarness) Open(t *testing.T) store.Store {
	s, err := store.NewMemStore(storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return s
}

func (h *memHarness) Reopen(t *testing.T) store.Store {
	s, err := h.s.Reopen(storetest.Options)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return s
}

func (h *memHarness) ReopenAs(t *testing.T, o store.Options) (store.Store, error) {
	s, err := h.s.Reopen(o)
	if err != nil {
		return nil, err
	}
	h.s = s
	return s, nil
}

func (h *memHarness) Crash(t *testing.T) store.Store { h.s = h.s.Crash(); return h.s }
func (h *memHarness) FailSyncs(t *testing.T)         { h.s.FailSyncs(errInjected) }

func (h *memHarness) CorruptEntry(t *testing.T, group, index uint64) store.Store {
	if err := h.s.CorruptEntry(group, index); err != nil {
		t.Fatal(err)
	}
	return h.Reopen(t)
}

func (h *memHarness) CorruptSnapshot(t *testing.T, group uint64) {
	if err := h.s.CorruptSnapshot(group); err != nil {
		t.Fatal(err)
	}
}

func TestPebbleConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness { return &pebbleHarness{} })
}

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness { return &memHarness{} })
}
