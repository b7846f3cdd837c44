package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store"
)

// Bucket bounds of the histograms, fixed so that every node's series line up.
var (
	latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	sizeBuckets    = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
)

// histogram is a Prometheus histogram with fixed buckets. counts[i] counts
// the observations in (bounds[i-1], bounds[i]]; the last slot is +Inf.
type histogram struct {
	bounds []float64

	mu     sync.Mutex
	counts []uint64
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v: le is inclusive
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

func (h *histogram) observeSince(start time.Time) { h.observe(time.Since(start).Seconds()) }

// write renders the histogram with cumulative buckets.
func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	counts := append([]uint64(nil), h.counts...)
	sum, n := h.sum, h.n
	h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.bounds {
		cum += counts[i]
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, formatFloat(b), cum)
	}
	cum += counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, cum, name, formatFloat(sum), name, n)
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// counterVec counts by one label value.
type counterVec struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *counterVec) inc(label string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[label]++
	c.mu.Unlock()
}

func (c *counterVec) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// serviceMetrics are what the HTTP layer and the store wrapper measure;
// the node's own state comes from Node.Metrics at scrape time.
type serviceMetrics struct {
	writeLatency  *histogram
	readLatency   *histogram
	appendLatency *histogram // one LogStore.Append: one write and one fsync
	batchEntries  *histogram // entries per LogStore.Append
	requests      counterVec // by "op code"
}

func newServiceMetrics() *serviceMetrics {
	return &serviceMetrics{
		writeLatency:  newHistogram(latencyBuckets),
		readLatency:   newHistogram(latencyBuckets),
		appendLatency: newHistogram(latencyBuckets),
		batchEntries:  newHistogram(sizeBuckets),
	}
}

// timedStore measures every Append of the node's log store: the storage
// writer shares one Append (one fsync) among every append waiting, so its
// duration is the fsync latency and its entry count the group commit size.
type timedStore struct {
	store.Store
	m *serviceMetrics
}

func (s timedStore) Append(reqs []*messages.StorageAppend) ([]*messages.StorageAppendResult, error) {
	start := time.Now()
	res, err := s.Store.Append(reqs)
	if err == nil {
		s.m.appendLatency.observeSince(start)
		n := 0
		for _, r := range reqs {
			n += len(r.GetEntries())
		}
		s.m.batchEntries.observe(float64(n))
	}
	return res, err
}

// roles lists every role the raftor_role gauge reports, one series each.
var roles = []messages.Role{
	messages.Role_ROLE_FOLLOWER, messages.Role_ROLE_PRE_CANDIDATE, messages.Role_ROLE_CANDIDATE,
	messages.Role_ROLE_LEADER, messages.Role_ROLE_LEARNER,
}

func roleName(r messages.Role) string {
	switch r {
	case messages.Role_ROLE_FOLLOWER:
		return "follower"
	case messages.Role_ROLE_PRE_CANDIDATE:
		return "pre-candidate"
	case messages.Role_ROLE_CANDIDATE:
		return "candidate"
	case messages.Role_ROLE_LEADER:
		return "leader"
	case messages.Role_ROLE_LEARNER:
		return "learner"
	}
	return "unknown"
}

// writePrometheus renders the node's metrics in the Prometheus text format.
func writePrometheus(w io.Writer, m *messages.Metrics, ss actors.StorageStats, sm *serviceMetrics) {
	gauge := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}

	fmt.Fprint(w, "# HELP raftor_role 1 for the role this node has, 0 for the others.\n# TYPE raftor_role gauge\n")
	for _, r := range roles {
		v := 0
		if m.GetRole() == r {
			v = 1
		}
		fmt.Fprintf(w, "raftor_role{role=%q} %d\n", roleName(r), v)
	}
	gauge("raftor_term", "Current Raft term.", m.GetTerm())
	gauge("raftor_leader_id", "ID of the leader this node knows, 0 for none.", m.GetLeaderId())
	gauge("raftor_commit_index", "Highest log index known to be committed.", m.GetCommitIndex())
	gauge("raftor_applied_index", "Highest log index applied to the state machine.", m.GetAppliedIndex())
	gauge("raftor_last_log_index", "Index of the last entry in the log.", m.GetLastLogIndex())
	gauge("raftor_first_log_index", "Index of the first entry still in the log.", m.GetFirstLogIndex())
	gauge("raftor_snapshot_index", "Last index of the latest snapshot.", m.GetSnapshotIndex())
	gauge("raftor_pending_writes", "Client writes held by this node (queued, uncommitted or unapplied).", m.GetPendingWrites())
	gauge("raftor_voters", "Voters of the latest configuration.", uint64(len(m.GetMembership().GetVoters())))
	gauge("raftor_learners", "Learners of the latest configuration.", uint64(len(m.GetMembership().GetLearners())))
	failed := uint64(0)
	if m.GetStorageError() != nil || ss.Failed {
		failed = 1
	}
	gauge("raftor_storage_failed", "1 once the node's storage failed; it takes no more writes.", failed)

	peers := append([]*messages.PeerMetrics(nil), m.GetPeers()...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].GetNodeId() < peers[j].GetNodeId() })
	peerGauge := func(name, help string, v func(p *messages.PeerMetrics) uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for _, p := range peers {
			fmt.Fprintf(w, "%s{peer=\"%d\"} %d\n", name, p.GetNodeId(), v(p))
		}
	}
	peerGauge("raftor_peer_lag", "Entries the peer is behind the leader's log (leader only).", (*messages.PeerMetrics).GetLag)
	peerGauge("raftor_peer_match_index", "Highest index known to be in the peer's log (leader only).", (*messages.PeerMetrics).GetMatchIndex)
	peerGauge("raftor_peer_reachable", "1 while the peer answers (leader only).", func(p *messages.PeerMetrics) uint64 {
		if p.GetReachable() {
			return 1
		}
		return 0
	})
	peerGauge("raftor_peer_last_contact_milliseconds", "Time since the peer last answered (leader only).", (*messages.PeerMetrics).GetLastContactMs)

	counter("raftor_storage_batches_total", "Log writes, one fsync each.", ss.Batches)
	counter("raftor_storage_appends_total", "Append requests carried by those writes (appends/batches is the group commit factor).", ss.Appends)
	sm.appendLatency.write(w, "raftor_storage_append_seconds", "Duration of one log write including its fsync.")
	sm.batchEntries.write(w, "raftor_storage_batch_entries", "Log entries written per fsync.")
	sm.writeLatency.write(w, "kvstore_write_latency_seconds", "PUT, DELETE and CAS requests from arrival to the answer, for those that succeeded.")
	sm.readLatency.write(w, "kvstore_read_latency_seconds", "GET requests from arrival to the answer, for those that succeeded.")

	reqs := sm.requests.snapshot()
	keys := make([]string, 0, len(reqs))
	for k := range reqs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprint(w, "# HELP kvstore_requests_total HTTP requests by operation and status code.\n# TYPE kvstore_requests_total counter\n")
	for _, k := range keys {
		op, code, _ := strings.Cut(k, " ")
		fmt.Fprintf(w, "kvstore_requests_total{op=%q,code=%q} %d\n", op, code, reqs[k])
	}
}
