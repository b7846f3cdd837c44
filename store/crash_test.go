package store_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
	"github.com/raftor/raftor/store/storetest"
)

// crashChildEnv names the directory a child process appends to until it is
// killed.
const crashChildEnv = "RAFTOR_STORE_CRASH_CHILD"

const crashGroups = 4

func crashPayload(group, index uint64) []byte {
	return []byte(fmt.Sprintf("group %d entry %d %s", group, index, strings.Repeat("*", int(index%97))))
}

// runChild is the child side of TestKillDuringAppends: it appends to every
// group through the committer, several appends in flight per group, and
// prints "ack <group> <index>" for each append once it is acknowledged.
func runChild() bool {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		return false
	}
	s, err := store.OpenPebble(dir, store.PebbleOptions{Options: storetest.Options})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	c := store.NewCommitter(s, store.CommitterOptions{})
	var out sync.Mutex
	var wg sync.WaitGroup
	for g := uint64(1); g <= crashGroups; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			window := make(chan struct{}, 8)
			for i := uint64(1); ; i++ {
				window <- struct{}{}
				r := &messages.StorageAppend{GroupId: g, Seq: i, HardState: &messages.HardState{Term: 1},
					Entries: []*messages.Entry{{Index: i, Term: 1, Kind: messages.EntryKind_ENTRY_KIND_NORMAL, Data: crashPayload(g, i)}}}
				c.Submit(r, func(res *messages.StorageAppendResult) {
					if res.Error != nil {
						fmt.Fprintln(os.Stderr, "append:", res.Error)
						os.Exit(3)
					}
					out.Lock()
					fmt.Fprintf(os.Stdout, "ack %d %d\n", res.GroupId, res.Seq)
					out.Unlock()
					<-window
				})
			}
		}()
	}
	wg.Wait()
	return true
}

// TestKillDuringAppends kills a process with SIGKILL in the middle of
// appends and checks, after reopening, that every append it acknowledged is
// there and that each group's log is a clean prefix of what was appended.
func TestKillDuringAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		acked := killChildAfter(t, dir, 300*(round+1))
		s, err := store.OpenPebble(dir, store.PebbleOptions{Options: storetest.Options})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		for g := uint64(1); g <= crashGroups; g++ {
			st, err := s.Load(g)
			if err != nil {
				t.Fatalf("round %d: load group %d: %v", round, g, err)
			}
			if st.LastIndex < acked[g] {
				t.Fatalf("round %d: group %d has last index %d, but %d was acknowledged", round, g, st.LastIndex, acked[g])
			}
			ents, err := s.Entries(g, 1, st.LastIndex+1, 0)
			if err != nil {
				t.Fatalf("round %d: group %d: %v", round, g, err)
			}
			for i, e := range ents {
				want := uint64(i + 1)
				if e.Index != want || e.Term != 1 || string(e.Data) != string(crashPayload(g, want)) {
					t.Fatalf("round %d: group %d entry %d is %d/%d %q: not a clean prefix", round, g, want, e.Index, e.Term, e.Data)
				}
			}
			t.Logf("round %d: group %d acknowledged %d, found %d", round, g, acked[g], st.LastIndex)
		}
		// The next round's child continues a log that already has entries:
		// start it over so that it appends from index 1 again.
		s.Close()
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
}

// killChildAfter runs a child appending into dir, SIGKILLs it once it has
// acknowledged n appends, and returns the highest acknowledged index per
// group.
func killChildAfter(t *testing.T, dir string, n int) map[uint64]uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]uint64{}
	count := 0
	killed := false
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			t.Fatalf("child printed %q", sc.Text())
		}
		g, _ := strconv.ParseUint(f[1], 10, 64)
		i, _ := strconv.ParseUint(f[2], 10, 64)
		if i != acked[g]+1 {
			t.Fatalf("child acknowledged group %d index %d after %d", g, i, acked[g])
		}
		acked[g] = i
		count++
		if count == n && !killed {
			// Kill in the middle of appends: everything acknowledged so far,
			// and whatever the pipe still holds, must survive.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited after %d acknowledgements without being killed: %v", count, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v", err)
	}
	return acked
}
