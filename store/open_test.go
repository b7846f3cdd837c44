package store_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

func openReal(dir string) (*store.PebbleStore, error) {
	return store.OpenPebble(dir, store.PebbleOptions{Options: storetest.Options})
}

// withRawDB opens the store's Pebble database directly, as a tool (or a
// future version) would, and runs fn on it.
func withRawDB(t *testing.T, dir string, fn func(db *pebble.DB)) {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dir, "log"), &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	fn(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(t *testing.T, dir string)
		wantCode messages.ErrorCode
		wantText []string
	}{
		{
			name: "a damaged manifest",
			damage: func(t *testing.T, dir string) {
				files, _ := filepath.Glob(filepath.Join(dir, "log", "MANIFEST-*"))
				if len(files) == 0 {
					t.Fatal("no manifest")
				}
				for _, f := range files {
					if err := os.WriteFile(f, []byte("this is not a manifest, it is garbage"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			},
			wantCode: messages.ErrorCode_ERROR_CODE_CORRUPT,
			wantText: []string{"log", "MANIFEST"},
		},
		{
			name: "a format version from the future",
			damage: func(t *testing.T, dir string) {
				withRawDB(t, dir, func(db *pebble.DB) {
					var v [4]byte
					binary.BigEndian.PutUint32(v[:], store.FormatVersion+1)
					db.Set(store.FormatVersionKey(), v[:], pebble.Sync)
				})
			},
			wantCode: messages.ErrorCode_ERROR_CODE_INVALID,
			wantText: []string{"unsupported format version 2", "reads version 1"},
		},
		{
			name: "a database that is not a Raftor store",
			damage: func(t *testing.T, dir string) {
				withRawDB(t, dir, func(db *pebble.DB) {
					db.Delete(store.FormatVersionKey(), pebble.Sync)
				})
			},
			wantCode: messages.ErrorCode_ERROR_CODE_CORRUPT,
			wantText: []string{"not a Raftor store"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openReal(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1},
				Entries: []*messages.Entry{{Index: 1, Term: 1}}}}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			tc.damage(t, dir)
			_, err = openReal(dir)
			if store.CodeOf(err) != tc.wantCode {
				t.Fatalf("open: %v, want code %v", err, tc.wantCode)
			}
			// The error names the directory, and what is wrong.
			for _, want := range append(tc.wantText, dir) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestOpenValidatesOptions(t *testing.T) {
	for _, o := range []store.Options{{NodeID: 1}, {ClusterID: "c"}} {
		if _, err := store.OpenPebble(t.TempDir(), store.PebbleOptions{Options: o}); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
			t.Errorf("open with %+v: %v, want INVALID", o, err)
		}
		if _, err := store.NewMemStore(o); store.CodeOf(err) != messages.ErrorCode_ERROR_CODE_INVALID {
			t.Errorf("memory store with %+v: %v, want INVALID", o, err)
		}
	}
}

func TestOpenTwiceIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := openReal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := openReal(dir); err == nil {
		s2.Close()
		t.Fatal("a second store opened the same directory")
	}
}
