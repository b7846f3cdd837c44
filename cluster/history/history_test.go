package history

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

type storyCase struct {
	name string
	want string // "linearizable" or "not-linearizable"
	rec  *Recorder
	line int
}

// loadStories parses testdata/histories.txt into recorded histories.
func loadStories(t *testing.T) []storyCase {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "histories.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []storyCase
	var cur *storyCase
	clients := map[string]int{}
	pending := map[string]OpID{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if name, ok := strings.CutPrefix(line, "=== "); ok {
			cases = append(cases, storyCase{name: name, rec: NewRecorder(), line: n})
			cur = &cases[len(cases)-1]
			clients, pending = map[string]int{}, map[string]OpID{}
			continue
		}
		if cur == nil {
			t.Fatalf("line %d: event before the first case", n)
		}
		f := strings.Fields(line)
		if f[0] == "want" {
			cur.want = f[1]
			continue
		}
		client, verb, args := f[0], f[1], f[2:]
		if _, ok := clients[client]; !ok {
			clients[client] = len(clients)
		}
		now := int64(n)
		switch verb {
		case "call":
			var in Input
			switch args[0] {
			case "put":
				in = Put(args[1], args[2])
			case "get":
				in = Get(args[1])
			case "delete":
				in = Delete(args[1])
			case "cas":
				if args[2] == "-" {
					in = CASAbsent(args[1], args[3])
				} else {
					in = CAS(args[1], args[2], args[3])
				}
			default:
				t.Fatalf("line %d: unknown op %q", n, args[0])
			}
			pending[client] = cur.rec.Invoke(clients[client], in, now)
		case "ret":
			id, ok := pending[client]
			if !ok {
				t.Fatalf("line %d: %s returns without a call", n, client)
			}
			delete(pending, client)
			var out Output
			if args[0] == "failed" {
				cur.rec.Fail(id, now)
				continue
			}
			switch args[0] {
			case "ok":
			case "absent":
			case "value":
				out = Output{Value: args[1], Found: true}
			case "swapped":
				out = Output{Swapped: true}
			case "not-swapped":
			case "unknown":
				out = Output{Unknown: true}
			default:
				t.Fatalf("line %d: unknown result %q", n, args[0])
			}
			cur.rec.Return(id, out, now)
		default:
			t.Fatalf("line %d: unknown verb %q", n, verb)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestStories(t *testing.T) {
	cases := loadStories(t)
	if len(cases) < 20 {
		t.Fatalf("only %d stories parsed", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := c.rec.Check(10 * time.Second)
			switch c.want {
			case "linearizable":
				if !res.OK() {
					t.Fatalf("story at line %d: want linearizable, got %s: %v", c.line, res.Outcome, res.Err())
				}
				if res.Err() != nil {
					t.Fatalf("Err() = %v for a linearizable history", res.Err())
				}
			case "not-linearizable":
				if res.Outcome != porcupine.Illegal {
					t.Fatalf("story at line %d: want not linearizable, got %s", c.line, res.Outcome)
				}
				if res.Err() == nil || len(res.BadKeys) == 0 {
					t.Fatalf("an illegal history must explain itself: err=%v keys=%v", res.Err(), res.BadKeys)
				}
			default:
				t.Fatalf("story at line %d has no valid want line", c.line)
			}
		})
	}
}

// The failure report names the offending key only, and shows its operations.
func TestFailureReportNamesBadKey(t *testing.T) {
	r := NewRecorder()
	a := r.Invoke(0, Put("good", "1"), 10)
	r.Return(a, Output{}, 20)
	b := r.Invoke(1, Get("good"), 30)
	r.Return(b, Output{Value: "1", Found: true}, 40)
	c := r.Invoke(0, Put("bad", "1"), 50)
	r.Return(c, Output{}, 60)
	d := r.Invoke(1, Get("bad"), 70)
	r.Return(d, Output{}, 80)

	res := r.Check(0)
	if res.OK() {
		t.Fatal("stale read of key bad was accepted")
	}
	if len(res.BadKeys) != 1 || res.BadKeys[0] != "bad" {
		t.Fatalf("BadKeys = %v, want [bad]", res.BadKeys)
	}
	msg := res.Err().Error()
	for _, want := range []string{"key bad", `put(bad, "1") -> ok`, "get(bad) -> <absent>"} {
		if !strings.Contains(msg, want) {
			t.Errorf("report lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "key good") {
		t.Errorf("report shows a linearizable key:\n%s", msg)
	}

	path := filepath.Join(t.TempDir(), "viz", "history.html")
	if err := res.WriteVisualization(path); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "<html") {
		t.Fatalf("visualization at %s is not HTML", path)
	}
}

// Stamps come from one counter, so operations that did not overlap in
// reality never overlap in the history, even when the caller's clock gives
// them the same time.
func TestStampsOrderEventsExactly(t *testing.T) {
	r := NewRecorder()
	a := r.Invoke(0, Put("x", "1"), 5)
	r.Return(a, Output{}, 5)
	b := r.Invoke(1, Get("x"), 5)
	r.Return(b, Output{}, 5)
	if r.Check(0).OK() {
		t.Fatal("a read that started after a put returned missed it, yet the history passed")
	}
}

func TestReturnIsIdempotentAndCounts(t *testing.T) {
	r := NewRecorder()
	a := r.Invoke(0, Put("x", "1"), 1)
	r.Return(a, Output{}, 2)
	r.ReturnUnknown(a, 3) // a late duplicate answer must not override
	r.Return(OpID(99), Output{}, 4)
	g := r.Invoke(1, Get("x"), 5)
	r.ReturnUnknown(g, 6)
	r.Invoke(2, Put("x", "2"), 7) // pending
	refused := r.Invoke(3, Put("x", "3"), 8)
	r.Fail(refused, 9)
	got := r.Counts()
	want := Counts{Ops: 4, Reads: 1, Writes: 3, Unknown: 1, Pending: 1, Failed: 1}
	if got != want {
		t.Fatalf("Counts = %+v, want %+v", got, want)
	}
	ops := r.Operations()
	if len(ops) != 2 {
		t.Fatalf("got %d operations, want 2 (the unknown read and the refused put carry nothing)", len(ops))
	}
	if ops[0].Return == Infinity || ops[1].Return != Infinity {
		t.Fatalf("returns = %d, %d: the answered put keeps its stamp, the pending one is at +inf", ops[0].Return, ops[1].Return)
	}
}
