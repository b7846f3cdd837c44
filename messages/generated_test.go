package messages_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// protocVersionLine is the one line of generated code that depends on the
// installed protoc rather than on the .proto files.
var protocVersionLine = regexp.MustCompile(`(?m)^// \tprotoc +v.*$`)

// TestGeneratedCodeInSync regenerates the Go code from the .proto files into
// a temporary folder and compares it with the committed .pb.go files. It
// needs protoc; without it the test is skipped, unless RAFTOR_REQUIRE_PROTOC
// is set (CI sets it), in which case it fails.
func TestGeneratedCodeInSync(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("RAFTOR_REQUIRE_PROTOC") != "" {
			t.Fatalf("protoc not found and RAFTOR_REQUIRE_PROTOC is set: apt-get install protobuf-compiler")
		}
		t.Skip("protoc not found; install protobuf-compiler to check generated code")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "gen.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh failed: %v\n%s", err, b)
	}
	protos, err := filepath.Glob("*.proto")
	if err != nil || len(protos) == 0 {
		t.Fatalf("no .proto files found: %v", err)
	}
	for _, p := range protos {
		name := p[:len(p)-len(".proto")] + ".pb.go"
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("regenerated %s missing: %v", name, err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s is not committed: run `go generate ./messages` (or `make proto`)", name)
			continue
		}
		if !bytes.Equal(protocVersionLine.ReplaceAll(got, nil), protocVersionLine.ReplaceAll(want, nil)) {
			t.Errorf("%s is out of date with %s: run `go generate ./messages` (or `make proto`) and commit the result", name, p)
		}
	}
	// A .pb.go without its .proto is stale too.
	gens, _ := filepath.Glob("*.pb.go")
	for _, g := range gens {
		if _, err := os.Stat(g[:len(g)-len(".pb.go")] + ".proto"); err != nil {
			t.Errorf("%s has no .proto source: delete it or restore the .proto", g)
		}
	}
}
