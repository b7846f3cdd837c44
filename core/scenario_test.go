package core_test

// Multi-node scenarios driven step by step on the coretest harness, which
// checks election safety, commit monotonicity and state machine safety
// after every delivery.

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/core"
	"github.com/raftor/raftor/core/coretest"
	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
)

var robust = coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1, PreVote: true, CheckQuorum: true}

// write proposes data on leader and runs until it is answered.
func write(t *testing.T, net *coretest.Network, leader uint64, data string) *messages.ClientWriteResponse {
	t.Helper()
	nd := net.Node(leader)
	h := nd.Propose(data)
	net.RunUntil(50, "write "+data+" answered", func() bool { return nd.Response(h) != nil })
	return nd.Response(h).(*messages.ClientWriteResponse)
}

func mustWrite(t *testing.T, net *coretest.Network, leader uint64, data string) {
	t.Helper()
	if r := write(t, net, leader, data); r.GetError() != nil {
		t.Fatalf("write %s: %v", data, r.GetError())
	}
}

func role(net *coretest.Network, id uint64) messages.Role { return net.Node(id).Status().Role }

// mustAddLearner has the leader add node id as a learner, waiting until it
// holds the log.
func mustAddLearner(t *testing.T, net *coretest.Network, leader, id uint64) {
	t.Helper()
	h := net.Node(leader).Request(&messages.AddLearnerRequest{NodeId: id, Address: coretest.Address(id), WaitCaughtUp: true})
	net.RunUntil(50, "learner added", func() bool { return net.Node(leader).Response(h) != nil })
	if r := net.Node(leader).Response(h).(*messages.MembershipChangeResponse); r.GetError() != nil {
		t.Fatalf("add learner %d: %v", id, r.GetError())
	}
}

// Two candidates split the vote of term 2; randomized timeouts then elect
// exactly one leader in a later term.
func TestScenarioSplitVote(t *testing.T) {
	net := coretest.New(t, coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1}, 1, 2, 3, 4)
	net.Node(1).Core.Campaign()
	net.Node(2).Core.Campaign()
	net.Tick(1, 2) // let the drains run
	// Node 3 hears only from 1, node 4 only from 2: two votes each of four.
	net.DropIf(func(e coretest.Envelope) bool { return (e.From == 1 && e.To == 4) || (e.From == 2 && e.To == 3) })
	net.DeliverAll()
	for _, id := range []uint64{1, 2} {
		if st := net.Node(id).Status(); st.Role != messages.Role_ROLE_CANDIDATE || st.Term != 2 {
			t.Fatalf("node %d after the split: %v term %d", id, st.Role, st.Term)
		}
	}
	net.RunUntil(100, "a leader", func() bool { return net.Leader() != 0 })
	if st := net.Node(net.Leader()).Status(); st.Term < 3 {
		t.Fatalf("leader of term %d; term 2 had no majority", st.Term)
	}
}

// Figure 8 of the Raft paper, step by step. An entry of an old term that
// a new leader replicated to a majority must not be counted as committed:
// a later leader may still overwrite it. With the figure8 mutation, node 1
// commits and applies "a" at index 3, node 5 then overwrites index 3, and
// the harness's state machine safety check fails.
func TestScenarioFigure8(t *testing.T) {
	opts := coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1, Replication: replication.Config{MaxAppendEntries: 1}}
	net := coretest.New(t, opts, 1, 2, 3, 4, 5)
	// (a) node 1 leads term 2 and replicates "a" (index 3) to node 2 only.
	net.Elect(1)
	net.Run(2)
	for _, id := range []uint64{3, 4, 5} {
		net.Cut(1, id)
	}
	net.Node(1).Propose("a")
	net.DeliverAll()
	if got := net.Node(2).Status().LastIndex; got != 3 {
		t.Fatalf("node 2 last index %d, want 3", got)
	}
	// (b) node 5 wins term 3 with votes of 3 and 4 and appends index 3 of
	// term 3 only locally.
	net.Heal()
	net.Isolate(1)
	net.Cut(5, 2)
	net.Node(5).Core.Campaign()
	net.Tick(5)
	for role(net, 5) != messages.Role_ROLE_LEADER {
		if !net.DeliverOne() {
			t.Fatal("node 5 not elected in term 3")
		}
	}
	net.DropIf(func(e coretest.Envelope) bool { return e.From == 5 })
	net.Isolate(5)
	// (c) node 1 wins term 4 (votes of 2 and 3) and brings "a" to node 3,
	// but its own blank entry (index 4, term 4) reaches nobody.
	net.Heal()
	net.Isolate(5)
	net.Cut(1, 4)
	net.Tick(1)
	net.DeliverAll() // node 1 learns of term 3 and steps down
	net.Drop = func(e coretest.Envelope) bool {
		a, ok := e.Msg.(*messages.AppendEntriesRequest)
		return ok && slices.ContainsFunc(a.Entries, func(x *messages.Entry) bool { return x.Term == 4 })
	}
	net.Node(1).Core.Campaign()
	net.Tick(1)
	net.DeliverAll()
	for range 5 {
		net.Tick(1)
		net.DeliverAll()
	}
	if st := net.Node(1).Status(); st.Role != messages.Role_ROLE_LEADER || st.Term != 4 {
		t.Fatalf("node 1 should lead term 4: %+v", st)
	}
	if got := net.Node(3).Status().LastIndex; got != 3 {
		t.Fatalf("node 3 should hold index 3 of term 2, last index %d", got)
	}
	if c := net.Node(1).Status().Commit; c >= 3 {
		t.Fatalf("node 1 committed index %d, an entry of term 2 counted by a term-4 leader", c)
	}
	// (d) node 1 goes away; node 5 wins term 5 with 2, 3 and 4 and
	// overwrites index 3. Every state machine must still agree.
	net.Drop = nil
	net.Heal()
	net.Isolate(1)
	for range 3 { // node 5 may first need to catch up on terms
		net.Node(5).Core.Campaign()
		net.Tick(5)
		net.DeliverAll()
	}
	if role(net, 5) != messages.Role_ROLE_LEADER {
		t.Fatalf("node 5 did not win term 5: %v", role(net, 5))
	}
	net.Run(5)
	net.Heal()
	net.Run(20)
	for _, id := range net.IDs() {
		if got := net.Node(id).AppliedData(); len(got) != 0 {
			t.Fatalf("node %d applied %v; the overwritten write must never apply", id, got)
		}
	}
}

// A leader cut off from the rest steps down (check-quorum), the majority
// elects another, and the old leader's write, which may or may not have
// committed, is answered only once its fate is known: ABORTED when a new
// leader replaced it. The old leader does not disrupt on return (pre-vote).
func TestScenarioPartitionedLeader(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	net.Isolate(1)
	lost := net.Node(1).Propose("lost")
	net.RunUntil(40, "node 1 steps down", func() bool { return role(net, 1) != messages.Role_ROLE_LEADER })
	net.RunUntil(60, "a new leader", func() bool { l := net.Leader(); return l == 2 || l == 3 })
	newLeader := net.Leader()
	mustWrite(t, net, newLeader, "b")
	if r := net.Node(1).Response(lost); r != nil {
		t.Fatalf("isolated leader answered %v before the write's fate was known", r)
	}
	oldTerm := net.Node(1).Status().Term
	if oldTerm >= net.Node(newLeader).Status().Term {
		t.Fatalf("isolated node raised its term to %d (pre-vote should prevent it)", oldTerm)
	}
	leaderTerm := net.Node(newLeader).Status().Term
	net.Heal()
	net.RunUntil(40, "the lost write answered", func() bool { return net.Node(1).Response(lost) != nil })
	r := net.Node(1).Response(lost).(*messages.ClientWriteResponse)
	if r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_ABORTED {
		t.Fatalf("lost write answered %v, want ABORTED", r)
	}
	if net.Leader() != newLeader || net.Node(newLeader).Status().Term != leaderTerm {
		t.Fatalf("the returning node disrupted the leader")
	}
	for _, id := range net.IDs() {
		if got := net.Node(id).AppliedData(); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
}

// A follower whose log diverged over several terms is repaired, and the
// conflict hints find the match point in one round trip per term.
func TestScenarioLogRepair(t *testing.T) {
	net := coretest.New(t, coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1}, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	// Node 1 appends entries of term 2 that nobody else gets.
	net.Isolate(1)
	for _, d := range []string{"x1", "x2", "x3", "x4", "x5"} {
		net.Node(1).Propose(d)
	}
	net.Heal()
	net.Isolate(1)
	net.Elect(2)
	mustWrite(t, net, 2, "b")
	net.Heal()
	net.Isolate(1)
	net.Elect(3)
	mustWrite(t, net, 3, "c")
	net.Heal()
	rejections := 0
	net.Drop = func(e coretest.Envelope) bool {
		if r, ok := e.Msg.(*messages.AppendEntriesResponse); ok && e.From == 1 && !r.Success {
			rejections++
		}
		return false
	}
	net.Run(10)
	if rejections > 2 {
		t.Fatalf("%d rejected appends to repair a log that diverged in one term", rejections)
	}
	want := net.Node(3).DurableLog()
	if got := net.Node(1).DurableLog(); !slices.EqualFunc(got, want, func(a, b *messages.Entry) bool { return proto.Equal(a, b) }) {
		t.Fatalf("node 1 log not repaired:\n%v\nwant\n%v", got, want)
	}
	if got := net.Node(1).AppliedData(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("node 1 applied %v", got)
	}
}

// Joint consensus with the leader leaving: a learner is added, caught up and
// promoted while the leader removes itself; the leader steps down once C_new
// commits, a member of C_new takes over, and the removed node stays quiet.
func TestScenarioJointConsensusLeaderLeaves(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.AddEmpty(4)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	mustAddLearner(t, net, 1, 4)
	if got := net.Node(4).AppliedData(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("learner applied %v", got)
	}
	h := net.Node(1).Request(&messages.ChangeMembershipRequest{Voters: []uint64{2, 3, 4}})
	net.RunUntil(50, "membership changed", func() bool { return net.Node(1).Response(h) != nil })
	sawJoint := slices.ContainsFunc(net.Node(2).DurableLog(), func(e *messages.Entry) bool {
		return len(e.GetMembership().GetVotersOutgoing()) > 0
	})
	r := net.Node(1).Response(h).(*messages.MembershipChangeResponse)
	if r.GetError() != nil || !slices.Equal(r.GetMembership().GetVoters(), []uint64{2, 3, 4}) || len(r.GetMembership().GetVotersOutgoing()) != 0 {
		t.Fatalf("change answered %v", r)
	}
	if !sawJoint {
		t.Fatal("the change did not go through a joint configuration")
	}
	net.RunUntil(60, "a leader in C_new", func() bool { l := net.Leader(); return l != 0 && l != 1 })
	if role(net, 1) == messages.Role_ROLE_LEADER || role(net, 1) == messages.Role_ROLE_CANDIDATE {
		t.Fatalf("removed node is %v", role(net, 1))
	}
	leader, term := net.Leader(), net.Node(net.Leader()).Status().Term
	mustWrite(t, net, leader, "b")
	net.Run(100)
	if net.Leader() != leader || net.Node(leader).Status().Term != term {
		t.Fatalf("leadership changed after the removal: leader %d term %d", net.Leader(), net.Node(net.Leader()).Status().Term)
	}
	for _, id := range []uint64{2, 3, 4} {
		if got := net.Node(id).AppliedData(); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
}

// A node removed while partitioned never learns of its removal; its
// elections must not disturb the cluster when it comes back.
func TestScenarioRemovedNodeDoesNotDisrupt(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3, 4)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	net.Isolate(4)
	h := net.Node(1).Request(&messages.ChangeMembershipRequest{Voters: []uint64{1, 2, 3}})
	net.RunUntil(50, "node 4 removed", func() bool { return net.Node(1).Response(h) != nil })
	if r := net.Node(1).Response(h).(*messages.MembershipChangeResponse); r.GetError() != nil {
		t.Fatalf("remove: %v", r.GetError())
	}
	term := net.Node(1).Status().Term
	net.Run(30) // node 4 times out alone
	net.Heal()
	net.Run(100)
	if net.Leader() != 1 || net.Node(1).Status().Term != term {
		t.Fatalf("removed node disrupted the cluster: leader %d, term %d (was %d)", net.Leader(), net.Node(1).Status().Term, term)
	}
	mustWrite(t, net, 1, "b")
}

// Leader transfer: the target is brought up to date and elects itself at
// once, without pre-vote; the old leader answers the transfer.
func TestScenarioLeaderTransfer(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	term := net.Node(1).Status().Term
	h := net.Node(1).Request(&messages.TransferLeaderRequest{Target: 3})
	net.RunUntil(20, "transfer answered", func() bool { return net.Node(1).Response(h) != nil })
	if r := net.Node(1).Response(h).(*messages.TransferLeaderResponse); r.GetError() != nil {
		t.Fatalf("transfer: %v", r.GetError())
	}
	if net.Leader() != 3 || net.Node(3).Status().Term != term+1 {
		t.Fatalf("leader %d term %d, want 3 in term %d", net.Leader(), net.Node(3).Status().Term, term+1)
	}
	mustWrite(t, net, 3, "b")
}

// A transfer to an unreachable target aborts after an election timeout and
// the leader takes writes again.
func TestScenarioLeaderTransferAborts(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	net.Isolate(3)
	mustWrite(t, net, 1, "b") // node 3 falls behind
	h := net.Node(1).Request(&messages.TransferLeaderRequest{Target: 3})
	refused := write(t, net, 1, "during")
	if refused.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS {
		t.Fatalf("write during transfer: %v", refused)
	}
	net.RunUntil(20, "transfer answered", func() bool { return net.Node(1).Response(h) != nil })
	if r := net.Node(1).Response(h).(*messages.TransferLeaderResponse); r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_TIMEOUT {
		t.Fatalf("transfer answered %v, want TIMEOUT", r)
	}
	if net.Leader() != 1 {
		t.Fatalf("leader %d after an aborted transfer", net.Leader())
	}
	mustWrite(t, net, 1, "after")
}

// Read index: answered with the commit index once a quorum confirmed the
// leadership in a heartbeat round started after the request.
func TestScenarioReadIndex(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	commit := net.Node(1).Status().Commit
	h := net.Node(1).Request(&messages.ReadIndexRequest{WaitApplied: true})
	if net.Node(1).Response(h) != nil {
		t.Fatal("read answered before a quorum confirmed the leadership")
	}
	net.DeliverAll()
	r, _ := net.Node(1).Response(h).(*messages.ReadIndexResponse)
	if r == nil || r.GetError() != nil || r.GetReadIndex() != commit {
		t.Fatalf("read answered %v, want index %d", r, commit)
	}
}

// A new leader answers a read only after its term's first entry committed.
func TestScenarioReadIndexWaitsForBlank(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Node(1).Core.Campaign()
	net.Tick(1)
	for net.Node(1).Status().Role != messages.Role_ROLE_LEADER {
		if !net.DeliverOne() {
			t.Fatal("node 1 not elected")
		}
	}
	h := net.Node(1).Request(&messages.ReadIndexRequest{})
	if net.Node(1).Response(h) != nil {
		t.Fatal("read answered before the leader's first entry committed")
	}
	net.DeliverAll()
	r, _ := net.Node(1).Response(h).(*messages.ReadIndexResponse)
	st := net.Node(1).Status()
	if r == nil || r.GetError() != nil || r.GetReadIndex() != st.Commit || st.Commit < 2 {
		t.Fatalf("read answered %v with commit %d", r, st.Commit)
	}
}

// A deposed leader that does not know it yet (no check-quorum here) never
// answers a read: it cannot get its heartbeat round confirmed, and once it
// learns of the new term it answers NOT_LEADER.
func TestScenarioReadIndexDeposedLeader(t *testing.T) {
	net := coretest.New(t, coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1}, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	net.Isolate(1)
	net.Elect(2)
	mustWrite(t, net, 2, "b")
	h := net.Node(1).Request(&messages.ReadIndexRequest{})
	net.Run(5)
	if r := net.Node(1).Response(h); r != nil {
		t.Fatalf("deposed leader answered a read: %v", r)
	}
	net.Heal()
	net.Run(3)
	r, _ := net.Node(1).Response(h).(*messages.ReadIndexResponse)
	if r == nil || r.GetError().GetCode() != messages.ErrorCode_ERROR_CODE_NOT_LEADER {
		t.Fatalf("read answered %v, want NOT_LEADER", r)
	}
}

// With LeaseRead, a leader whose lease holds answers at once, without a
// heartbeat round; the lease ends with a transfer.
func TestScenarioLeaseRead(t *testing.T) {
	opts := robust
	opts.LeaseRead = true
	net := coretest.New(t, opts, 1, 2, 3)
	net.Elect(1)
	mustWrite(t, net, 1, "a")
	net.Run(1)
	h := net.Node(1).Request(&messages.ReadIndexRequest{})
	r, _ := net.Node(1).Response(h).(*messages.ReadIndexResponse)
	if r == nil || r.GetError() != nil || len(net.Queue()) != 0 {
		t.Fatalf("lease read answered %v with %d messages in flight", r, len(net.Queue()))
	}
	net.Isolate(1)
	net.Run(10) // the lease runs out
	h = net.Node(1).Request(&messages.ReadIndexRequest{})
	if r := net.Node(1).Response(h); r != nil {
		t.Fatalf("read answered after the lease expired: %v", r)
	}
}

// A follower that needs entries the leader purged gets a snapshot, and ends
// up with the same state.
func TestScenarioSnapshotCatchUp(t *testing.T) {
	opts := robust
	opts.SnapshotEntries, opts.SnapshotTrailing = 4, 1
	opts.Replication.SnapshotChunkBytes = 16
	net := coretest.New(t, opts, 1, 2, 3)
	net.Elect(1)
	net.Isolate(3)
	var want []string
	for i := range 12 {
		d := string(rune('a' + i))
		want = append(want, d)
		mustWrite(t, net, 1, d)
	}
	if first := net.Node(1).Status().FirstIndex; first <= 3 {
		t.Fatalf("leader did not purge its log: first index %d", first)
	}
	net.Heal()
	net.RunUntil(100, "node 3 caught up", func() bool {
		return net.Node(3).Status().Applied == net.Node(1).Status().Commit
	})
	if got := net.Node(3).AppliedData(); !slices.Equal(got, want) {
		t.Fatalf("node 3 applied %v, want %v", got, want)
	}
	if net.Node(3).Status().SnapshotIndex == 0 {
		t.Fatal("node 3 caught up without a snapshot")
	}
	mustWrite(t, net, 1, "z")
}

// Crash recovery: what was durable survives, what was not is lost, and a
// write is acknowledged only once durable (PITFALLS #3).
func TestScenarioCrashLosesOnlyUnsynced(t *testing.T) {
	net := coretest.New(t, robust, 1)
	net.Elect(1)
	net.Run(1)
	nd := net.Node(1)
	mustWrite(t, net, 1, "kept")
	nd.HoldPersist = true
	h := nd.Propose("lost")
	net.Run(3)
	if nd.Response(h) != nil {
		t.Fatalf("write acknowledged before it was durable: %v", nd.Response(h))
	}
	net.Crash(1)
	nd.HoldPersist = false
	net.RunUntil(50, "leader again", func() bool { return net.Leader() == 1 })
	net.Run(2)
	if got := nd.AppliedData(); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("after the crash applied %v", got)
	}
}

// Pre-vote keeps an isolated node from raising its term; without it the
// term climbs and the returning node deposes the leader.
func TestScenarioPreVoteStopsTermInflation(t *testing.T) {
	tests := []struct {
		name     string
		preVote  bool
		wantBump bool
	}{
		{"with pre-vote", true, false},
		{"without pre-vote", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			net := coretest.New(t, coretest.Options{ElectionTicks: 10, HeartbeatTicks: 1, PreVote: tt.preVote, CheckQuorum: true}, 1, 2, 3)
			net.Elect(1)
			term := net.Node(1).Status().Term
			net.Isolate(3)
			net.Run(50)
			bumped := net.Node(3).Status().Term > term
			if bumped != tt.wantBump {
				t.Fatalf("isolated node term %d (leader term %d)", net.Node(3).Status().Term, term)
			}
		})
	}
}

// Check-quorum: a leader that hears from no quorum for an election timeout
// steps down.
func TestScenarioCheckQuorum(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	net.Isolate(1)
	net.Run(9)
	if role(net, 1) != messages.Role_ROLE_LEADER {
		t.Fatal("stepped down before an election timeout")
	}
	net.Run(12)
	if role(net, 1) == messages.Role_ROLE_LEADER {
		t.Fatal("leader without a quorum did not step down")
	}
}

// Stop answers every pending request; a write that may commit is UNKNOWN.
func TestScenarioStopAnswersPending(t *testing.T) {
	net := coretest.New(t, robust, 1, 2, 3)
	net.Elect(1)
	net.Isolate(1)
	h := net.Node(1).Propose("x")
	rs := net.Node(1).Core.Stop()
	if len(rs) != 1 || rs[0].Handle != h ||
		rs[0].Msg.(*messages.ClientWriteResponse).GetError().GetCode() != messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME {
		t.Fatalf("stop answered %v", rs)
	}
	if err := net.Node(1).Core.Step(&messages.Tick{}); err == nil {
		t.Fatal("stopped core took input")
	}
	_ = core.ErrStopped
}

func coreHandle(h uint64) core.Handle { return core.Handle(h) }
