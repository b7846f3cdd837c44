package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/raftor/raftor/actors"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/store/kvsm"
)

// api serves the HTTP API of one node. Every node serves all of it: the
// node forwards writes, read indexes and membership changes to the leader.
type api struct {
	node      *actors.Node
	sm        *kvsm.SM
	system    *actor.ActorSystem
	clusterID string
	maxValue  int
	timeout   time.Duration // KV requests
	admin     time.Duration // membership, transfer, snapshot
	metrics   *serviceMetrics
	log       *slog.Logger
}

// handler returns the API's routes. Methods are dispatched by hand so that
// a wrong method is answered in JSON like every other error.
func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/kv/{key}", a.methods(map[string]http.HandlerFunc{
		http.MethodGet: a.get, http.MethodPut: a.put, http.MethodDelete: a.del,
	}))
	mux.HandleFunc("/kv/{key}/cas", a.methods(map[string]http.HandlerFunc{http.MethodPost: a.cas}))
	mux.HandleFunc("/status", a.methods(map[string]http.HandlerFunc{http.MethodGet: a.status}))
	mux.HandleFunc("/metrics", a.methods(map[string]http.HandlerFunc{http.MethodGet: a.prometheus}))
	mux.HandleFunc("/cluster/learners", a.methods(map[string]http.HandlerFunc{http.MethodPost: a.addLearner}))
	mux.HandleFunc("/cluster/learners/{id}", a.methods(map[string]http.HandlerFunc{http.MethodDelete: a.removeLearner}))
	mux.HandleFunc("/cluster/voters", a.methods(map[string]http.HandlerFunc{http.MethodPut: a.setVoters}))
	mux.HandleFunc("/cluster/transfer-leader", a.methods(map[string]http.HandlerFunc{http.MethodPost: a.transferLeader}))
	mux.HandleFunc("/cluster/snapshot", a.methods(map[string]http.HandlerFunc{http.MethodPost: a.snapshot}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (a *api) methods(h map[string]http.HandlerFunc) http.HandlerFunc {
	allowed := make([]string, 0, len(h))
	for m := range h {
		allowed = append(allowed, m)
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		if f, ok := h[r.Method]; ok {
			f(w, r)
			return
		}
		w.Header().Set("Allow", allow)
		a.fail(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
	}
}

// ---- answers ----

type errorBody struct {
	Error  string `json:"error"`
	Leader uint64 `json:"leader"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// fail answers an error the API found itself (bad input, wrong route).
func (a *api) fail(w http.ResponseWriter, code int, msg string) {
	leader, _ := a.node.Leader()
	writeJSON(w, code, errorBody{Error: msg, Leader: leader})
}

// failNode answers an error of the node, with the status a client acts on.
func (a *api) failNode(w http.ResponseWriter, err error) int {
	leader, _ := a.node.Leader()
	code := http.StatusInternalServerError
	var e *actors.Error
	if errors.As(err, &e) {
		code = statusOf(e.Code)
		if e.LeaderID != 0 {
			leader = e.LeaderID
		}
		if e.Code == messages.ErrorCode_ERROR_CODE_OVERLOADED {
			w.Header().Set("Retry-After", "1")
		}
	} else if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, errorBody{Error: err.Error(), Leader: leader})
	return code
}

// statusOf maps a node's error to an HTTP status. 503 says "try again":
// no leader, no quorum, or an outcome the node cannot know yet.
func statusOf(c messages.ErrorCode) int {
	switch c {
	case messages.ErrorCode_ERROR_CODE_INVALID:
		return http.StatusBadRequest
	case messages.ErrorCode_ERROR_CODE_TOO_LARGE:
		return http.StatusRequestEntityTooLarge
	case messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS:
		return http.StatusConflict
	case messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, messages.ErrorCode_ERROR_CODE_CORRUPT:
		return http.StatusInternalServerError
	}
	return http.StatusServiceUnavailable
}

// ---- retries ----

// retryable reports whether a request may be sent again as is: the node
// did not act on it (no leader yet, leadership moving, or the leader's
// entry was replaced so the write is known not to be applied). A TIMEOUT or
// UNKNOWN_OUTCOME write is never retried: it may have been applied.
func retryable(err error, idempotent bool) bool {
	var e *actors.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case messages.ErrorCode_ERROR_CODE_NOT_LEADER, messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS,
		messages.ErrorCode_ERROR_CODE_ABORTED, messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED:
		return true
	case messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS, messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME:
		// Membership requests state the configuration they want: sending
		// one again after a change finished (or a leader died) is safe.
		return idempotent
	}
	return false
}

// retry calls f until it succeeds, fails for good, or ctx ends; the
// pauses grow from 10ms to 200ms, short next to an election.
func retry(ctx context.Context, idempotent bool, f func(context.Context) error) error {
	pause := 10 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil || !retryable(err, idempotent) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// ---- key-value ----

// key returns the {key} path value, or answers 400.
func (a *api) key(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	k := r.PathValue("key")
	switch {
	case k == "":
		a.fail(w, http.StatusBadRequest, "empty key")
		return nil, false
	case len(k) > maxKeyBytes:
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("key of %d bytes is over the limit of %d", len(k), maxKeyBytes))
		return nil, false
	}
	return []byte(k), true
}

// readBody reads at most limit bytes of the body; beyond it answers 413.
func (a *api) readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, bool) {
	if r.ContentLength > int64(limit) {
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over the limit of %d", r.ContentLength, limit))
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	switch {
	case err != nil:
		a.fail(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return nil, false
	case len(b) > limit:
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the limit of %d bytes", limit))
		return nil, false
	}
	return b, true
}

// write replicates cmd and returns the state machine's answer.
func (a *api) write(ctx context.Context, cmd *messages.KVCommand) (*actors.WriteResult, *messages.KVResult, error) {
	var res *actors.WriteResult
	err := retry(ctx, false, func(ctx context.Context) error {
		var err error
		res, err = a.node.ClientWriteCommand(ctx, cmd)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	kv := &messages.KVResult{}
	if err := res.Decode(kv); err != nil {
		return nil, nil, fmt.Errorf("decoding the state machine's answer: %w", err)
	}
	if kv.GetError() != "" {
		return nil, nil, &actors.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Msg: kv.GetError()}
	}
	return res, kv, nil
}

func (a *api) count(op string, code int) { a.metrics.requests.inc(op + " " + strconv.Itoa(code)) }

type indexBody struct {
	Index uint64 `json:"index"`
}

func (a *api) put(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key, ok := a.key(w, r)
	if !ok {
		a.count("put", http.StatusBadRequest)
		return
	}
	value, ok := a.readBody(w, r, a.maxValue)
	if !ok {
		a.count("put", http.StatusRequestEntityTooLarge)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	res, _, err := a.write(ctx, kvsm.Put(key, value))
	if err != nil {
		a.count("put", a.failNode(w, err))
		return
	}
	a.metrics.writeLatency.observeSince(start)
	a.count("put", http.StatusOK)
	writeJSON(w, http.StatusOK, indexBody{Index: res.Index})
}

func (a *api) del(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key, ok := a.key(w, r)
	if !ok {
		a.count("delete", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	res, _, err := a.write(ctx, kvsm.Delete(key))
	if err != nil {
		a.count("delete", a.failNode(w, err))
		return
	}
	a.metrics.writeLatency.observeSince(start)
	a.count("delete", http.StatusOK)
	writeJSON(w, http.StatusOK, indexBody{Index: res.Index})
}

// casRequest distinguishes "expect": null (the key must be absent) from a
// missing "expect" (a mistake): a present null decodes to the raw "null".
type casRequest struct {
	Expect json.RawMessage `json:"expect"`
	Value  *string         `json:"value"`
}

type casAnswer struct {
	OK      bool    `json:"ok"`
	Current *string `json:"current"`
}

func (a *api) cas(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key, ok := a.key(w, r)
	if !ok {
		a.count("cas", http.StatusBadRequest)
		return
	}
	// Two JSON strings of up to maxValue bytes, each escaped at worst 6x.
	body, ok := a.readBody(w, r, 12*a.maxValue+1024)
	if !ok {
		a.count("cas", http.StatusRequestEntityTooLarge)
		return
	}
	var req casRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.fail(w, http.StatusBadRequest, `body: want {"expect":"old" or null,"value":"new"}: `+err.Error())
		a.count("cas", http.StatusBadRequest)
		return
	}
	if req.Expect == nil || req.Value == nil {
		a.fail(w, http.StatusBadRequest, `body: "expect" and "value" are both required ("expect":null means the key must be absent)`)
		a.count("cas", http.StatusBadRequest)
		return
	}
	var cmd *messages.KVCommand
	if string(req.Expect) == "null" {
		cmd = kvsm.CreateIfAbsent(key, []byte(*req.Value))
	} else {
		var expect string
		if err := json.Unmarshal(req.Expect, &expect); err != nil {
			a.fail(w, http.StatusBadRequest, `"expect" must be a string or null`)
			a.count("cas", http.StatusBadRequest)
			return
		}
		if len(expect) > a.maxValue {
			a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(`"expect" is over the limit of %d bytes`, a.maxValue))
			a.count("cas", http.StatusRequestEntityTooLarge)
			return
		}
		cmd = kvsm.CompareAndSet(key, []byte(expect), []byte(*req.Value))
	}
	if len(*req.Value) > a.maxValue {
		a.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(`"value" is over the limit of %d bytes`, a.maxValue))
		a.count("cas", http.StatusRequestEntityTooLarge)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	_, kv, err := a.write(ctx, cmd)
	if err != nil {
		a.count("cas", a.failNode(w, err))
		return
	}
	a.metrics.writeLatency.observeSince(start)
	if kv.GetOk() {
		a.count("cas", http.StatusOK)
		writeJSON(w, http.StatusOK, okBody{OK: true})
		return
	}
	ans := casAnswer{}
	if kv.GetExisted() {
		cur := string(kv.GetPrevious())
		ans.Current = &cur
	}
	a.count("cas", http.StatusConflict)
	writeJSON(w, http.StatusConflict, ans)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key, ok := a.key(w, r)
	if !ok {
		a.count("get", http.StatusBadRequest)
		return
	}
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
		// Read index: once this node applied everything acknowledged
		// before now, its local state answers linearizably.
		ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
		defer cancel()
		if err := retry(ctx, true, a.node.EnsureLinearizable); err != nil {
			a.count("get", a.failNode(w, err))
			return
		}
	case "stale":
	default:
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("consistency %q: use linearizable (the default) or stale", c))
		a.count("get", http.StatusBadRequest)
		return
	}
	v, found, err := a.sm.Get(key)
	if err != nil {
		a.fail(w, http.StatusInternalServerError, err.Error())
		a.count("get", http.StatusInternalServerError)
		return
	}
	a.metrics.readLatency.observeSince(start)
	if !found {
		a.count("get", http.StatusNotFound)
		a.fail(w, http.StatusNotFound, "key not found")
		return
	}
	a.count("get", http.StatusOK)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(v)
}

// ---- status and metrics ----

type statusBody struct {
	ID             uint64   `json:"id"`
	Role           string   `json:"role"`
	Term           uint64   `json:"term"`
	Leader         uint64   `json:"leader"`
	Commit         uint64   `json:"commit"`
	Applied        uint64   `json:"applied"`
	Voters         []uint64 `json:"voters"`
	Learners       []uint64 `json:"learners"`
	VotersOutgoing []uint64 `json:"voters_outgoing,omitempty"`
}

func (a *api) status(w http.ResponseWriter, _ *http.Request) {
	m := a.node.Metrics()
	ms := m.GetMembership()
	sorted := func(ids []uint64) []uint64 {
		out := append([]uint64{}, ids...) // [] rather than null in JSON
		slices.Sort(out)
		return out
	}
	writeJSON(w, http.StatusOK, statusBody{
		ID: a.node.ID(), Role: roleName(m.GetRole()), Term: m.GetTerm(), Leader: m.GetLeaderId(),
		Commit: m.GetCommitIndex(), Applied: m.GetAppliedIndex(),
		Voters: sorted(ms.GetVoters()), Learners: sorted(ms.GetLearners()),
		VotersOutgoing: sorted(ms.GetVotersOutgoing()),
	})
}

func (a *api) prometheus(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	writePrometheus(&buf, a.node.Metrics(), a.node.StorageStats(), a.metrics)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// ---- cluster ----

// decodeJSON decodes a small JSON body into v, or answers 400.
func (a *api) decodeJSON(w http.ResponseWriter, r *http.Request, v any, want string) bool {
	body, ok := a.readBody(w, r, 64<<10)
	if !ok {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		a.fail(w, http.StatusBadRequest, "body: want "+want+": "+err.Error())
		return false
	}
	return true
}

type okBody struct {
	OK bool `json:"ok"`
}

func (a *api) addLearner(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID   uint64 `json:"id"`
		Addr string `json:"addr"`
	}
	if !a.decodeJSON(w, r, &req, `{"id":4,"addr":"host:port"}`) {
		return
	}
	if req.ID == 0 {
		a.fail(w, http.StatusBadRequest, `"id" must be 1 or more`)
		return
	}
	if err := checkAddr(`"addr"`, req.Addr, false); err != nil {
		a.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.admin)
	defer cancel()
	// AddLearner returns once the learner caught up with the log; asking
	// again for a learner already added (same address) only waits for that.
	err := retry(ctx, true, func(ctx context.Context) error { return a.node.AddLearner(ctx, req.ID, req.Addr) })
	if err != nil {
		_ = a.failNode(w, err)
		return
	}
	a.log.Info("kvstore: learner added", "learner", req.ID, "addr", req.Addr)
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

func (a *api) removeLearner(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		a.fail(w, http.StatusBadRequest, "the learner's ID must be a number from 1")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.admin)
	defer cancel()
	if err := retry(ctx, false, func(ctx context.Context) error { return a.node.RemoveLearner(ctx, id) }); err != nil {
		_ = a.failNode(w, err)
		return
	}
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

func (a *api) setVoters(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Voters []uint64 `json:"voters"`
	}
	if !a.decodeJSON(w, r, &req, `{"voters":[1,2,3]}`) {
		return
	}
	if len(req.Voters) == 0 {
		a.fail(w, http.StatusBadRequest, `"voters" must name at least one node`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.admin)
	defer cancel()
	// ChangeMembership names the whole voter set, so sending it again is
	// safe; once the set is in place it answers at once.
	err := retry(ctx, true, func(ctx context.Context) error { return a.node.ChangeMembership(ctx, req.Voters) })
	if err != nil {
		_ = a.failNode(w, err)
		return
	}
	a.log.Info("kvstore: voters changed", "voters", req.Voters)
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

func (a *api) transferLeader(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID uint64 `json:"id"`
	}
	if !a.decodeJSON(w, r, &req, `{"id":2}`) {
		return
	}
	if req.ID == 0 {
		a.fail(w, http.StatusBadRequest, `"id" must be 1 or more`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.admin)
	defer cancel()
	if err := retry(ctx, false, func(ctx context.Context) error { return a.transfer(ctx, req.ID) }); err != nil {
		_ = a.failNode(w, err)
		return
	}
	writeJSON(w, http.StatusOK, okBody{OK: true})
}

// transfer asks the leader to hand leadership to target. A node forwards
// no transfer request, so a follower sends it to the leader's RaftCore
// itself, over the remote, as any application actor may.
func (a *api) transfer(ctx context.Context, target uint64) error {
	if a.node.IsLeader() {
		return a.node.TransferLeader(ctx, target)
	}
	leader, addr := a.node.Leader()
	if leader == target {
		return nil
	}
	if leader == 0 {
		return &actors.Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER, Msg: "no leader known"}
	}
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	pid := actor.NewPID(addr, actors.CoreName(a.clusterID, 1, leader))
	if addr == "" {
		pid = actor.NewPID(a.system.Address(), actors.CoreName(a.clusterID, 1, leader))
	}
	f := a.system.Root.RequestFuture(pid, &messages.TransferLeaderRequest{Target: target, TimeoutMs: uint64(max(wait.Milliseconds(), 1))}, wait)
	res, err := f.Result()
	if err != nil {
		return &actors.Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT, Msg: "the leader did not answer: " + err.Error()}
	}
	switch m := res.(type) {
	case *messages.TransferLeaderResponse:
		return actors.FromProto(m.GetError())
	case *actor.DeadLetterResponse:
		return &actors.Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER, Msg: "the leader is unreachable"}
	}
	return fmt.Errorf("unexpected answer %T", res)
}

func (a *api) snapshot(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.admin)
	defer cancel()
	meta, err := a.node.TriggerSnapshot(ctx)
	if err != nil {
		_ = a.failNode(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Index uint64 `json:"index"`
		Term  uint64 `json:"term"`
	}{meta.GetIndex(), meta.GetTerm()})
}
