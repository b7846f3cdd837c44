//go:build !race

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The story runs to its end: orders are placed from every member, a
// second placement of an order is refused by the state machine, and after
// the member that leads most shards stops, the others place and read.
func TestOrderStory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, t.TempDir(), 3, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"member 1 placed o-10 in",
		"member 3 placed o-32 in",
		`member 2 placed o-10 again: refused: already placed as "1 widgets"`,
		"stopping member",
		"reads o-10: 1 widgets",
		"done",
	} {
		if !strings.Contains(s, want) {
			t.Fatalf("the story lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "reads o-10: 1 widgets"); n != 2 {
		t.Fatalf("%d members read o-10 after the stop, want 2:\n%s", n, s)
	}
}
