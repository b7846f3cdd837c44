package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftor/raftor/remote"
)

// Limits that are not flags.
const (
	// maxKeyBytes bounds a key. Keys travel in the URL path.
	maxKeyBytes = 4096
	// entryOverhead is room for a command's encoding around its key and
	// value.
	entryOverhead = 1024
	// minAdminTimeout is the least a membership change, a leader transfer
	// or a snapshot may take: a new learner catches up within it.
	minAdminTimeout = 30 * time.Second
)

// maxAppendBytes is the largest AppendEntries a node sends: what fits in
// one message of the remote transport with its default limits.
var maxAppendBytes = uint64(remote.Config{}.MaxPayloadBytes())

// maxValueLimit is the largest --max-value-bytes: one entry (key, value,
// encoding) must fit in one AppendEntries.
var maxValueLimit = int(maxAppendBytes) - maxKeyBytes - entryOverhead

// config is the parsed command line.
type config struct {
	// One node per process (--id given).
	id       uint64
	raftAddr string
	httpAddr string
	dir      string
	peers    map[uint64]string
	join     string

	// The in-process cluster (no --id).
	local    bool
	raftPort int
	httpPort int

	clusterID       string
	maxValueBytes   int
	requestTimeout  time.Duration
	logLevel        slog.Level
	debug           bool
	tickInterval    time.Duration
	electionTicks   int
	snapshotEntries uint64
	snapshotBytes   uint64
	snapshotKeep    uint64
}

// adminTimeout bounds membership changes, transfers and snapshots.
func (c config) adminTimeout() time.Duration { return max(c.requestTimeout, minAdminTimeout) }

const usageHead = `kvstore: a replicated key-value service on Raftor.

Usage:
  kvstore                        three nodes in this process (raft on 127.0.0.1:7001-7003,
                                 HTTP on 127.0.0.1:8001-8003, data under data/kvstore/node-N)
  kvstore --id N [flags]         one node of a cluster, for instance
  kvstore --id 1 --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 --dir data/1 \
          --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
  kvstore --id 4 --raft-addr 127.0.0.1:7004 --http-addr 127.0.0.1:8004 --dir data/4 \
          --join http://127.0.0.1:8001

On an empty --dir the nodes named in --peers form the cluster (give each the same list, start them
in any order). On a --dir with data, --peers is ignored and the node rejoins. --join asks a member
to add this node as a learner; promote it with PUT /cluster/voters.

Flags:
`

// errHelp is returned by parseFlags for --help: the usage was printed.
var errHelp = errors.New("help requested")

// usageError is a bad command line: the process exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags parses args (without the program name). --help prints the
// usage to stdout and returns errHelp; every mistake is a usageError.
func parseFlags(args []string, stdout io.Writer) (config, error) {
	var (
		c        config
		id       uint64
		peers    string
		logLevel string
	)
	fs := flag.NewFlagSet("kvstore", flag.ContinueOnError)
	// Errors are reported once, by the caller, without the whole usage.
	fs.SetOutput(io.Discard)
	fs.Uint64Var(&id, "id", 0, "this node's ID, 1 or more; without it, three nodes run in this process")
	fs.StringVar(&c.raftAddr, "raft-addr", "", "`host:port` other nodes reach this node's Raft at (default 127.0.0.1:7000+ID, or its --peers entry)")
	fs.StringVar(&c.httpAddr, "http-addr", "", "`host:port` of the HTTP API (default 127.0.0.1:8000+ID)")
	fs.StringVar(&c.dir, "dir", "", "data `directory` (default data/kvstore/node-ID; without --id, the parent of the nodes' directories, default data/kvstore)")
	fs.StringVar(&peers, "peers", "", "founding members `ID=host:port,...` (raft addresses), used on an empty --dir only")
	fs.StringVar(&c.join, "join", "", "`URL` of a member (http://host:port) that adds this node as a learner")
	fs.StringVar(&c.clusterID, "cluster-id", "kvstore", "cluster `name`; every node of a cluster uses the same")
	fs.IntVar(&c.maxValueBytes, "max-value-bytes", 1<<20, "largest value in `bytes`; larger writes get 413")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 5*time.Second, "how long a request waits for a leader and a quorum before 503")
	fs.StringVar(&logLevel, "log-level", "", "info or debug (default: warnings and errors only)")
	fs.DurationVar(&c.tickInterval, "tick-interval", 100*time.Millisecond, "Raft clock period; elections start after election-ticks to twice that many ticks of silence")
	fs.IntVar(&c.electionTicks, "election-ticks", 10, "minimum election timeout in ticks")
	fs.Uint64Var(&c.snapshotEntries, "snapshot-entries", 10000, "take a snapshot after this many applied `entries` (0: only on POST /cluster/snapshot)")
	fs.Uint64Var(&c.snapshotBytes, "snapshot-bytes", 64<<20, "also take a snapshot once the entries applied since the last one add up to this many `bytes` (0: count entries only)")
	fs.Uint64Var(&c.snapshotKeep, "snapshot-trailing", 1024, "log `entries` kept after a snapshot, so that a follower a little behind catches up without one (at least 1)")
	fs.IntVar(&c.raftPort, "raft-port", 7001, "without --id: first Raft `port` of the three nodes")
	fs.IntVar(&c.httpPort, "http-port", 8001, "without --id: first HTTP `port` of the three nodes")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return c, errHelp
		}
		return c, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch logLevel {
	case "":
		c.logLevel = slog.LevelWarn
	case "info":
		c.logLevel = slog.LevelInfo
	case "debug":
		c.logLevel, c.debug = slog.LevelDebug, true
	default:
		return c, usagef("--log-level %q: use info or debug", logLevel)
	}
	if err := c.checkCommon(); err != nil {
		return c, err
	}

	if !set["id"] {
		// The in-process cluster.
		for _, name := range []string{"raft-addr", "http-addr", "peers", "join"} {
			if set[name] {
				return c, usagef("--%s needs --id (without --id, three nodes run in this process)", name)
			}
		}
		if c.raftPort < 1 || c.raftPort+2 > 65535 || c.httpPort < 1 || c.httpPort+2 > 65535 {
			return c, usagef("--raft-port and --http-port must leave room for three ports below 65536")
		}
		if c.raftPort <= c.httpPort+2 && c.httpPort <= c.raftPort+2 {
			return c, usagef("--raft-port %d and --http-port %d overlap", c.raftPort, c.httpPort)
		}
		c.local = true
		if c.dir == "" {
			c.dir = filepath.Join("data", "kvstore")
		}
		return c, nil
	}

	for _, name := range []string{"raft-port", "http-port"} {
		if set[name] {
			return c, usagef("--%s applies without --id only; use --raft-addr and --http-addr", name)
		}
	}
	if id == 0 {
		return c, usagef("--id must be 1 or more")
	}
	c.id = id
	if peers != "" {
		p, err := parsePeers(peers)
		if err != nil {
			return c, err
		}
		c.peers = p
		addr, ok := p[id]
		if !ok {
			return c, usagef("--peers does not name this node (--id %d)", id)
		}
		if c.raftAddr == "" {
			c.raftAddr = addr
		} else if c.raftAddr != addr {
			return c, usagef("--raft-addr %s differs from this node's --peers entry %d=%s", c.raftAddr, id, addr)
		}
	}
	if c.join != "" {
		if c.peers != nil {
			return c, usagef("--join and --peers exclude each other: --peers forms a new cluster, --join enters an existing one")
		}
		if err := checkJoinURL(c.join); err != nil {
			return c, err
		}
		c.join = strings.TrimRight(c.join, "/")
	}
	if c.raftAddr == "" {
		c.raftAddr = "127.0.0.1:" + strconv.FormatUint(7000+id, 10)
	}
	if c.httpAddr == "" {
		c.httpAddr = "127.0.0.1:" + strconv.FormatUint(8000+id, 10)
	}
	if err := checkAddr("--raft-addr", c.raftAddr, false); err != nil {
		return c, err
	}
	if err := checkAddr("--http-addr", c.httpAddr, true); err != nil {
		return c, err
	}
	if c.raftAddr == c.httpAddr {
		return c, usagef("--raft-addr and --http-addr are both %s", c.raftAddr)
	}
	if c.dir == "" {
		c.dir = filepath.Join("data", "kvstore", "node-"+strconv.FormatUint(id, 10))
	}
	return c, nil
}

// checkCommon validates the flags of both modes.
func (c config) checkCommon() error {
	switch {
	case c.clusterID == "" || strings.ContainsAny(c.clusterID, "/ \t\n"):
		return usagef("--cluster-id %q must be non-empty, without '/' or spaces", c.clusterID)
	case c.maxValueBytes < 1 || c.maxValueBytes > maxValueLimit:
		return usagef("--max-value-bytes %d must be from 1 to %d (an entry must fit in one replication message)", c.maxValueBytes, maxValueLimit)
	case c.requestTimeout < 10*time.Millisecond:
		return usagef("--request-timeout %v must be at least 10ms", c.requestTimeout)
	case c.tickInterval < time.Millisecond:
		return usagef("--tick-interval %v must be at least 1ms", c.tickInterval)
	case c.electionTicks < 2:
		return usagef("--election-ticks %d must be at least 2", c.electionTicks)
	case c.snapshotKeep < 1:
		return usagef("--snapshot-trailing must be at least 1")
	case c.dir != "" && strings.TrimSpace(c.dir) == "":
		return usagef("--dir must not be blank")
	}
	return nil
}

// parsePeers parses "1=host:port,2=host:port".
func parsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	addrs := map[string]uint64{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		idText, addr, ok := strings.Cut(item, "=")
		if !ok {
			return nil, usagef("--peers entry %q: want ID=host:port", item)
		}
		id, err := strconv.ParseUint(idText, 10, 64)
		if err != nil || id == 0 {
			return nil, usagef("--peers entry %q: the ID must be a number from 1", item)
		}
		if err := checkAddr("--peers entry "+idText, addr, false); err != nil {
			return nil, err
		}
		if _, dup := peers[id]; dup {
			return nil, usagef("--peers names node %d twice", id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, usagef("--peers gives nodes %d and %d the same address %s", other, id, addr)
		}
		peers[id], addrs[addr] = addr, id
	}
	if len(peers) == 0 {
		return nil, usagef("--peers is empty")
	}
	return peers, nil
}

// checkAddr checks a host:port flag. Raft addresses are advertised to the
// other nodes, so they need a concrete host and a fixed port.
func checkAddr(name, addr string, listenOnly bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("%s %q: want host:port", name, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return usagef("%s %q: the port must be a number from 0 to 65535", name, addr)
	}
	if listenOnly {
		return nil
	}
	if p == 0 {
		return usagef("%s %q: other nodes need a fixed port, not 0", name, addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return usagef("%s %q: other nodes need an address they can reach, not an unspecified host", name, addr)
	}
	return nil
}

func checkJoinURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return usagef("--join %q: want the URL of a member's HTTP API, like http://127.0.0.1:8001", s)
	}
	return nil
}

// sortedPeers returns the IDs of peers in order.
func sortedPeers(peers map[uint64]string) []uint64 {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
