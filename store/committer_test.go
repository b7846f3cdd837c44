package store_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

func TestCommitterRespectsBatchLimitsAndDrainsOnClose(t *testing.T) {
	tests := []struct {
		name     string
		opts     store.CommitterOptions
		maxBatch uint64
	}{
		{"append limit", store.CommitterOptions{MaxBatchAppends: 3}, 3},
		// Every append is ~100 approximate bytes: two fit in 250.
		{"byte limit", store.CommitterOptions{MaxBatchBytes: 250}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := store.NewMemStore(storetest.Options)
			s.Append([]*messages.StorageAppend{{GroupId: 1, HardState: &messages.HardState{Term: 1}}})
			c := store.NewCommitter(s, tc.opts)
			const n = 100
			var mu sync.Mutex
			var got []uint64
			for i := uint64(1); i <= n; i++ {
				c.Submit(&messages.StorageAppend{GroupId: 1, Seq: i, Entries: []*messages.Entry{{Index: i, Term: 1}}}, func(r *messages.StorageAppendResult) {
					if r.Error != nil {
						t.Errorf("append %d: %v", r.Seq, r.Error)
					}
					mu.Lock()
					got = append(got, r.Seq)
					mu.Unlock()
				})
			}
			// Close right away: everything submitted is still written and
			// answered, in order.
			c.Close()
			if len(got) != n {
				t.Fatalf("%d of %d appends answered after Close", len(got), n)
			}
			for i, seq := range got {
				if seq != uint64(i+1) {
					t.Fatalf("answer %d is for seq %d", i, seq)
				}
			}
			st := c.Stats()
			if st.MaxBatch > tc.maxBatch || st.Appends != n {
				t.Fatalf("stats %+v: want at most %d appends per batch", st, tc.maxBatch)
			}
			if last, _ := s.LastIndex(1); last != n {
				t.Fatalf("last index %d, want %d", last, n)
			}
		})
	}
}

func TestCommitterPassesInvalidAppendsThrough(t *testing.T) {
	s, _ := store.NewMemStore(storetest.Options)
	c := store.NewCommitter(s, store.CommitterOptions{})
	defer c.Close()
	done := make(chan *messages.StorageAppendResult, 2)
	c.Submit(&messages.StorageAppend{GroupId: 1, Seq: 1, Entries: []*messages.Entry{{Index: 5, Term: 1}}}, func(r *messages.StorageAppendResult) { done <- r })
	if r := <-done; r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_INVALID {
		t.Fatalf("append with a gap: %v, want INVALID", r)
	}
	// A refused append does not fail the committer.
	c.Submit(&messages.StorageAppend{GroupId: 1, Seq: 2, HardState: &messages.HardState{Term: 1}, Entries: []*messages.Entry{{Index: 1, Term: 1}}}, func(r *messages.StorageAppendResult) { done <- r })
	if r := <-done; r.Error != nil || r.LastIndex != 1 {
		t.Fatalf("valid append after a refused one: %v", r)
	}
	if c.Err() != nil {
		t.Fatalf("committer failed: %v", c.Err())
	}
}

// failingLog is a LogStore whose Append fails the way the interface allows:
// an error and no results.
type failingLog struct{ store.LogStore }

func (failingLog) Append([]*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	return nil, errors.New("injected: disk gone")
}

// When Append fails, nothing of the batch is durable: the committer must
// answer every append of it with the failure, and every later one too,
// without panicking on the missing results.
func TestCommitterAnswersEveryAppendWhenTheDiskFails(t *testing.T) {
	s, _ := store.NewMemStore(storetest.Options)
	c := store.NewCommitter(failingLog{s}, store.CommitterOptions{})
	const n = 20
	done := make(chan *messages.StorageAppendResult, n)
	for i := uint64(1); i <= n; i++ {
		c.Submit(&messages.StorageAppend{GroupId: 1, Seq: i, Entries: []*messages.Entry{{Index: i, Term: 1}}},
			func(r *messages.StorageAppendResult) { done <- r })
	}
	c.Close()
	if len(done) != n {
		t.Fatalf("%d of %d appends answered", len(done), n)
	}
	for range n {
		if r := <-done; r.GetError() == nil {
			t.Fatalf("append %d acknowledged on a failed disk", r.GetSeq())
		}
	}
	if c.Err() == nil {
		t.Fatal("committer did not record the failure")
	}
}
