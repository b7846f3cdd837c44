package core

import (
	"slices"
	"testing"
)

func termsOf(t *TermIndex) []uint64 {
	var out []uint64
	for i := t.FirstIndex(); i <= t.LastIndex(); i++ {
		x, ok := t.Term(i)
		if !ok {
			return nil
		}
		out = append(out, x)
	}
	return out
}

func buildIndex(t *testing.T, terms ...uint64) *TermIndex {
	t.Helper()
	ti := &TermIndex{baseKnown: true}
	for k, x := range terms {
		if err := ti.Append(uint64(k+1), x); err != nil {
			t.Fatal(err)
		}
	}
	return ti
}

func TestTermIndexOperations(t *testing.T) {
	tests := []struct {
		name      string
		terms     []uint64
		op        func(*TermIndex)
		wantFirst uint64
		wantTerms []uint64
	}{
		{"append", []uint64{1, 1, 2, 3, 3}, func(*TermIndex) {}, 1, []uint64{1, 1, 2, 3, 3}},
		{"truncate inside a run", []uint64{1, 1, 2, 2, 3}, func(ti *TermIndex) { ti.TruncateAfter(3) }, 1, []uint64{1, 1, 2}},
		{"truncate at a run end", []uint64{1, 1, 2, 2, 3}, func(ti *TermIndex) { ti.TruncateAfter(2) }, 1, []uint64{1, 1}},
		{"truncate then append the same term", []uint64{1, 1, 2}, func(ti *TermIndex) { ti.TruncateAfter(1); _ = ti.Append(2, 1) }, 1, []uint64{1, 1}},
		{"compact inside a run", []uint64{1, 1, 2, 2, 3}, func(ti *TermIndex) { ti.CompactTo(3, 2) }, 4, []uint64{2, 3}},
		{"compact at a run end", []uint64{1, 1, 2, 2, 3}, func(ti *TermIndex) { ti.CompactTo(2, 1) }, 3, []uint64{2, 2, 3}},
		{"compact everything", []uint64{1, 1, 2}, func(ti *TermIndex) { ti.CompactTo(3, 2) }, 4, nil},
		{"compact beyond the log", []uint64{1, 1, 2}, func(ti *TermIndex) { ti.CompactTo(9, 4) }, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ti := buildIndex(t, tt.terms...)
			tt.op(ti)
			if err := ti.Validate(); err != nil {
				t.Fatalf("invalid after the operation: %v", err)
			}
			if ti.FirstIndex() != tt.wantFirst || !slices.Equal(termsOf(ti), tt.wantTerms) {
				t.Fatalf("first %d terms %v, want %d %v", ti.FirstIndex(), termsOf(ti), tt.wantFirst, tt.wantTerms)
			}
		})
	}
}

func TestTermIndexLookups(t *testing.T) {
	ti := buildIndex(t, 1, 1, 2, 2, 2, 4, 4, 5)
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"first in term of 4", ti.FirstInTerm(4), 3},
		{"first in term of 1", ti.FirstInTerm(2), 1},
		{"first in term of last", ti.FirstInTerm(8), 8},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	lastIn := []struct {
		term uint64
		want uint64
		ok   bool
	}{{1, 2, true}, {2, 5, true}, {3, 0, false}, {4, 7, true}, {5, 8, true}, {6, 0, false}}
	for _, tt := range lastIn {
		if got, ok := ti.LastInTerm(tt.term); got != tt.want || ok != tt.ok {
			t.Errorf("LastInTerm(%d) = %d %v, want %d %v", tt.term, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := ti.Term(9); ok {
		t.Error("term beyond the log")
	}
	if err := ti.Append(10, 5); err == nil {
		t.Error("append with a gap accepted")
	}
	if err := ti.Append(9, 4); err == nil {
		t.Error("append of a lower term accepted")
	}
	ti.CompactTo(4, 2)
	if _, ok := ti.Term(3); ok {
		t.Error("term of a compacted entry")
	}
	if x, ok := ti.Term(4); !ok || x != 2 {
		t.Errorf("term of the base: %d %v", x, ok)
	}
}

// FuzzTermIndex checks TermIndex against a plain slice of terms under
// random appends, truncations and compactions.
func FuzzTermIndex(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 2, 1, 2, 2, 1, 0, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		ti := &TermIndex{baseKnown: true}
		var model []uint64 // model[i] is the term of index i+1; nil entries below base
		base := uint64(0)
		term := uint64(1)
		for k := 0; k+1 < len(ops); k += 2 {
			arg := uint64(ops[k+1])
			switch ops[k] % 3 {
			case 0:
				term += arg % 2
				if err := ti.Append(uint64(len(model))+1, term); err != nil {
					t.Fatalf("append: %v", err)
				}
				model = append(model, term)
			case 1:
				i := max(base, arg%(uint64(len(model))+1))
				ti.TruncateAfter(i)
				model = model[:i]
				if len(model) > 0 {
					term = model[len(model)-1]
				}
			case 2:
				if len(model) == 0 {
					continue
				}
				i := arg % (uint64(len(model)) + 1)
				if i <= base {
					continue
				}
				ti.CompactTo(i, model[i-1])
				base = i
			}
			if err := ti.Validate(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if ti.LastIndex() != uint64(len(model)) || ti.FirstIndex() != base+1 {
				t.Fatalf("range %d..%d, want %d..%d", ti.FirstIndex(), ti.LastIndex(), base+1, len(model))
			}
			for i := base + 1; i <= uint64(len(model)); i++ {
				if got, ok := ti.Term(i); !ok || got != model[i-1] {
					t.Fatalf("term(%d) = %d %v, want %d", i, got, ok, model[i-1])
				}
			}
		}
	})
}
