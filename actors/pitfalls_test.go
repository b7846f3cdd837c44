package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/raftor/raftor/messages"
)

// countingMeterProvider hands out meters that count the callbacks
// registered on them: protoactor registers one, on the global meter, for
// the mailbox gauge of every actor it spawns, and never removes it.
type countingMeterProvider struct {
	noop.MeterProvider
	callbacks *atomic.Int64
}

func (p countingMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter {
	return countingMeter{callbacks: p.callbacks}
}

type countingMeter struct {
	noop.Meter
	callbacks *atomic.Int64
}

func (m countingMeter) RegisterCallback(metric.Callback, ...metric.Observable) (metric.Registration, error) {
	m.callbacks.Add(1)
	return noop.Registration{}, nil
}

// protoactor-go at the pinned version: with actor metrics on, every spawn
// registers a gauge on the global OpenTelemetry meter that is never
// removed, so actor churn leaks. Raftor spawns actors only when a node
// starts (three) and when a node becomes leader (two per peer); requests,
// forwarded requests, reads and answers go through reusable processes and
// spawn nothing. Hundreds of operations on a cluster whose actor system
// has metrics on register no gauge; a change of leader registers at most
// two per peer.
func TestActorMetricsRegisterNoGaugePerRequest(t *testing.T) {
	var callbacks atomic.Int64
	provider := countingMeterProvider{callbacks: &callbacks}
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(provider)
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		actor.WithMetricProviders(provider))
	tc, _, l := manualCluster(t, system, 3)
	write(t, l.node, "warm")
	tc.waitApplied(l.node.Metrics().GetCommitIndex())
	term := l.node.Metrics().GetTerm()
	base := callbacks.Load()
	if base < 3*3+2*2 {
		t.Fatalf("%d gauges registered by three nodes and a leader, want at least 13: the count does not see spawns", base)
	}
	f := tc.nodes[l.id%3+1]
	for i := 0; i < 300; i++ {
		via := l.node
		if i%3 == 0 {
			via = f.node // forwarded to the leader
		}
		write(t, via, fmt.Sprint(i))
		if i%10 == 0 {
			for _, n := range tc.nodes {
				if err := n.node.EnsureLinearizable(ctxT(t, 10*time.Second)); err != nil {
					t.Fatalf("node %d: EnsureLinearizable: %v", n.id, err)
				}
				_ = n.node.Metrics()
			}
		}
	}
	if got := l.node.Metrics().GetTerm(); got != term {
		t.Fatalf("term moved from %d to %d during the test: an election spawned replication actors", term, got)
	}
	if got := callbacks.Load(); got != base {
		t.Fatalf("%d gauges registered by 300 writes and 90 linearizable reads: requests spawn actors", got-base)
	}
	target := f.id
	if err := l.node.TransferLeader(ctxT(t, 20*time.Second), target); err != nil {
		t.Fatalf("transfer to %d: %v", target, err)
	}
	nl := tc.leader()
	terms := nl.node.Metrics().GetTerm() - term
	grew := callbacks.Load() - base
	if grew > int64(terms)*2*2 {
		t.Fatalf("%d gauges registered over %d changes of leader, want at most 4 each (two actors per peer)", grew, terms)
	}
	t.Logf("%d gauges for three nodes and a leader; none for 300 writes and 90 reads; %d for %d change(s) of leader", base, grew, terms)
}

// protoactor-go at the pinned version: a request to a dead PID comes back
// as *actor.DeadLetterResponse. A follower that forwards a write to a
// leader which has just stopped (the follower does not know yet: its clock
// stands still) gets that
// answer, and the caller hears NOT_LEADER at once, naming the unreachable
// leader: not a timeout, and not a result it could take for the write's.
func TestForwardToAStoppedLeaderAnswersNotLeader(t *testing.T) {
	tc, _, l := manualCluster(t, quietSystem(), 3)
	write(t, l.node, "before")
	f := tc.nodes[l.id%3+1]
	if got := f.node.Metrics().GetLeaderId(); got != l.id {
		t.Fatalf("follower %d believes %d leads, want %d", f.id, got, l.id)
	}
	tc.stop(l.id)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err := f.node.ClientWrite(ctx, []byte("after"))
	took := time.Since(start)
	var e *Error
	if !errors.As(err, &e) || e.Code != messages.ErrorCode_ERROR_CODE_NOT_LEADER || !strings.Contains(e.Msg, "unreachable") {
		t.Fatalf("write forwarded to a stopped leader: %v, want NOT_LEADER (unreachable)", err)
	}
	if took > 2*time.Second {
		t.Fatalf("the answer took %v: the dead letter was not turned into an answer", took)
	}
	if got := f.sm.snapshotData(); slices.Contains(got, "after") {
		t.Fatalf("follower applied %v: the refused write was applied", got)
	}
}

// manualCluster starts n nodes of one cluster in system on one manual
// clock, moves the clock until one node leads and the others follow it,
// and returns the cluster, the clock and the leader. Time then stands
// still unless the test moves it: no election happens by itself, however
// slow the machine.
func manualCluster(t *testing.T, system *actor.ActorSystem, n int) (*testCluster, *ManualClock, *testNode) {
	t.Helper()
	clock := NewManualClock(time.Unix(0, 0))
	tc := &testCluster{t: t, system: system, nodes: map[uint64]*testNode{}, cfg: func(id uint64) Config {
		c := testConfig(id)
		c.Clock = clock
		return c
	}}
	t.Cleanup(tc.stopAll)
	tc.boot(n)
	waitFor(t, 20*time.Second, "a leader followed by every node", func() bool {
		clock.Advance(20 * time.Millisecond)
		var l *testNode
		var term uint64
		for _, nd := range tc.nodes {
			if m := nd.node.Metrics(); m.GetRole() == messages.Role_ROLE_LEADER && m.GetTerm() >= term {
				l, term = nd, m.GetTerm()
			}
		}
		if l == nil {
			return false
		}
		for _, nd := range tc.nodes {
			if m := nd.node.Metrics(); nd != l && (m.GetLeaderId() != l.id || m.GetTerm() != term) {
				return false
			}
		}
		return true
	})
	return tc, clock, tc.leader()
}
