package actors

import (
	"strings"
	"testing"
)

// The recorder keeps, of each mark, the first at or after the followed
// write's index, drops the marks of a failed write, and follows one write
// at a time.
func TestStageRecorderFollowsOneWriteAtATime(t *testing.T) {
	s := newStageRecorder()
	if !s.begin() {
		t.Fatal("begin refused with no write followed")
	}
	if s.begin() {
		t.Fatal("a second write was followed while the first was")
	}
	s.mark(0, "client", "request sent")
	s.mark(6, "2/core", "took append_entries") // the write before's entries
	s.mark(7, "2/core", "took append_entries")
	s.mark(7, "2/core", "took append_entries") // a retry: not the first
	s.mark(9, "1/core", "commit")              // a later index counts
	s.end(7)

	if !s.begin() {
		t.Fatal("begin refused after the write ended")
	}
	s.mark(0, "client", "request sent")
	s.mark(0, "1/core", "only in a failed write")
	s.end(0)

	if s.writes != 1 {
		t.Fatalf("followed writes = %d, want 1 (the failed one does not count)", s.writes)
	}
	for key, want := range map[stageKey]int{
		{"client", "request sent"}:           1,
		{"2/core", "took append_entries"}:    1,
		{"1/core", "commit"}:                 1,
		{"client", "call returned"}:          1,
		{"1/core", "only in a failed write"}: 0,
	} {
		if got := len(s.offsets[key]); got != want {
			t.Errorf("%v: %d offsets, want %d", key, got, want)
		}
	}
	var b strings.Builder
	if err := s.report(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	sent, returned := strings.Index(out, "request sent"), strings.Index(out, "call returned")
	if sent < 0 || returned < 0 || sent > returned {
		t.Fatalf("report does not list the request before the return:\n%s", out)
	}
}

func TestStageWhoShortensRaftorNames(t *testing.T) {
	for id, want := range map[string]string{
		CoreName("orders", 0, 2):           "2/core",
		actorName("orders", 3, 1, "apply"): "1/apply",
		"client":                           "client",
		"raftor/too/short":                 "raftor/too/short",
	} {
		if got := stageWho(id); got != want {
			t.Errorf("stageWho(%q) = %q, want %q", id, got, want)
		}
	}
}

// Without the build tag, nothing is reported.
func TestStageReportNeedsTheBuildTag(t *testing.T) {
	var b strings.Builder
	on, err := WriteStageReport(&b)
	if err != nil {
		t.Fatal(err)
	}
	if on != stagesOn || (!on && b.Len() != 0) {
		t.Fatalf("WriteStageReport = %v with %d bytes, stagesOn = %v", on, b.Len(), stagesOn)
	}
}
