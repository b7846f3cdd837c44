package core

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The core and replication packages are plain deterministic code: they
// import neither protoactor nor pebble, read no clock, use no global
// randomness and start no goroutines.
func TestPlainCode(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "../core/...", "../replication/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"protoactor", "pebble", "net/http", "database/sql"} {
			if strings.Contains(dep, banned) {
				t.Errorf("core or replication depends on %s", dep)
			}
		}
	}
	banned := regexp.MustCompile(`time\.(Now|Since|Until|Sleep|After|Tick|NewTimer|NewTicker)\(|` +
		`\brand\.(Int|Intn|IntN|Int31|Int31n|Int63|Int63n|Uint32|Uint64|Float32|Float64|Perm|Shuffle|N)\(|` +
		`(^|\s)go (func|\w+\()|"os"|"net"|"math/rand"$`)
	for _, dir := range []string{".", "../replication"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, "mutation_on.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for n, line := range strings.Split(string(b), "\n") {
				code := strings.TrimSpace(line)
				if strings.HasPrefix(code, "//") {
					continue
				}
				if banned.MatchString(code) {
					t.Errorf("%s:%d: %s", f, n+1, code)
				}
			}
		}
	}
}
