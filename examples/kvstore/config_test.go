package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftor/raftor/store"
)

func TestParseFlagsDefaults(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want func(c config) bool
	}{
		{"no flags: three nodes in this process", nil, func(c config) bool {
			return c.local && c.raftPort == 7001 && c.httpPort == 8001 && c.dir == filepath.Join("data", "kvstore") &&
				c.clusterID == "kvstore" && c.maxValueBytes == 1<<20 &&
				c.snapshotEntries == 10000 && c.snapshotBytes == 64<<20 && c.snapshotKeep == 1024
		}},
		{"snapshots by bytes, or by entries only", []string{"--snapshot-bytes", "1048576", "--snapshot-entries", "0"}, func(c config) bool {
			return c.snapshotBytes == 1<<20 && c.snapshotEntries == 0
		}},
		{"one node takes its addresses from --peers", []string{"--id", "2", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7102"}, func(c config) bool {
			return !c.local && c.id == 2 && c.raftAddr == "127.0.0.1:7102" && c.httpAddr == "127.0.0.1:8002" &&
				c.dir == filepath.Join("data", "kvstore", "node-2") && len(c.peers) == 2
		}},
		{"join trims the URL", []string{"--id", "4", "--join", "http://127.0.0.1:8001/"}, func(c config) bool {
			return c.join == "http://127.0.0.1:8001" && c.raftAddr == "127.0.0.1:7004"
		}},
		{"admin requests wait at least 30s", []string{"--id", "1", "--request-timeout", "2s"}, func(c config) bool {
			return c.requestTimeout == 2*time.Second && c.adminTimeout() == 30*time.Second
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Fatalf("parsed %+v", c)
			}
		})
	}
}

// Every mistake on the command line, and a directory or port that cannot
// be used, ends with a message that names it and exit status 2, before
// anything starts.
func TestCommandLineErrorsExitWithStatus2(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := freePorts(t, 2)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	otherNode := t.TempDir()
	st, err := store.OpenPebble(filepath.Join(otherNode, "log"), store.PebbleOptions{Options: store.Options{ClusterID: "kvstore", NodeID: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	node := func(more ...string) []string {
		return append([]string{"--id", "1", "--raft-addr", free[0], "--http-addr", free[1], "--dir", t.TempDir()}, more...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"missing value", []string{"--id"}, "flag needs an argument: -id"},
		{"not a number", []string{"--id", "one"}, `invalid value "one" for flag -id`},
		{"stray argument", []string{"serve"}, `unexpected argument "serve"`},
		{"id zero", []string{"--id", "0"}, "--id must be 1 or more"},
		{"peers without this node", node("--peers", "2=127.0.0.1:7002,3=127.0.0.1:7003"), "--peers does not name this node"},
		{"peers entry malformed", node("--peers", "1=127.0.0.1:7001,two"), `--peers entry "two"`},
		{"peers twice the same node", []string{"--id", "1", "--peers", "1=127.0.0.1:7001,1=127.0.0.1:7002"}, "names node 1 twice"},
		{"raft address differs from peers", node("--peers", "1=127.0.0.1:1,2=127.0.0.1:2"), "differs from this node's --peers entry"},
		{"join and peers", node("--peers", "1="+free[0], "--join", "http://127.0.0.1:8001"), "exclude each other"},
		{"join is not a URL", node("--join", "127.0.0.1:8001"), "--join"},
		{"unspecified raft host", []string{"--id", "1", "--raft-addr", "0.0.0.0:7001"}, "not an unspecified host"},
		{"raft port zero", []string{"--id", "1", "--raft-addr", "127.0.0.1:0"}, "fixed port"},
		{"value limit too large", []string{"--max-value-bytes", "100000000"}, "--max-value-bytes"},
		{"log level", []string{"--log-level", "loud"}, "--log-level"},
		{"cluster id with a slash", []string{"--cluster-id", "a/b"}, "--cluster-id"},
		{"local flags with --id", []string{"--id", "1", "--raft-port", "9000"}, "--raft-port applies without --id"},
		{"node flags without --id", []string{"--peers", "1=127.0.0.1:7001"}, "--peers needs --id"},
		{"overlapping base ports", []string{"--raft-port", "9000", "--http-port", "9001"}, "overlap"},
		{"unwritable dir", []string{"--id", "1", "--raft-addr", free[0], "--http-addr", free[1], "--dir", filepath.Join(file, "sub")}, "--dir"},
		{"dir of another node", []string{"--id", "2", "--raft-addr", free[0], "--http-addr", free[1], "--dir", otherNode}, "belongs to cluster \"kvstore\" node 1"},
		{"raft port taken", []string{"--id", "1", "--raft-addr", taken.Addr().String(), "--http-addr", free[1], "--dir", t.TempDir()}, "--raft-addr " + taken.Addr().String() + " cannot be used"},
		{"http port taken", []string{"--id", "1", "--raft-addr", free[0], "--http-addr", taken.Addr().String(), "--dir", t.TempDir()}, "--http-addr " + taken.Addr().String() + " cannot be used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errOut)
			if code != 2 {
				t.Fatalf("exit status %d, want 2; stderr:\n%s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("stderr %q does not say %q", errOut.String(), tt.want)
			}
		})
	}
}

// The binary itself: --help lists every flag and exits 0; a bad flag
// exits with status 2.
func TestBinaryHelpAndBadFlag(t *testing.T) {
	out, err := exec.Command(binary(t), "--help").Output()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, flag := range []string{"-id", "-raft-addr", "-http-addr", "-dir", "-peers", "-join", "-cluster-id",
		"-max-value-bytes", "-request-timeout", "-log-level", "-tick-interval", "-election-ticks",
		"-snapshot-entries", "-snapshot-bytes", "-snapshot-trailing", "-raft-port", "-http-port"} {
		if !strings.Contains(string(out), flag+" ") {
			t.Errorf("--help does not list %s", flag)
		}
	}
	cmd := exec.Command(binary(t), "--no-such-flag")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Fatalf("bad flag: %v, want exit status 2", err)
	}
	if !strings.Contains(stderr.String(), "-no-such-flag") {
		t.Fatalf("stderr %q does not name the flag", stderr.String())
	}
}
