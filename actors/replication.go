package actors

import (
	"fmt"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/raftor/raftor/messages"
	"github.com/raftor/raftor/replication"
)

// A leader runs, for each peer of its term, a ReplicationState actor (a
// child of RaftCore) that drives replication.Peer, and under it a
// ReplicationStream actor that drives replication.Stream and does the I/O:
// storage reads and wire requests. Both take time as replTick messages
// that RaftCore forwards from its own clock, so a node has one timer.
//
// A failure (panic) inside a stream restarts the stream alone: its
// ReplicationState fails the requests that were in flight, and the Peer
// probes again. RaftCore stops the ReplicationStates of a term when it
// steps down, so no stream of an old term survives.

// replTick is one tick of RaftCore's clock, forwarded to replication.
type replTick struct{}

// streamRestarted tells a ReplicationState that its stream restarted and
// lost the requests it had in flight.
type streamRestarted struct{}

// replEnv is what the replication actors of one node share.
type replEnv struct {
	clusterID string
	group     uint64
	self      uint64
	cfg       replication.Config
	storage   *actor.PID
	dispatch  actor.Dispatcher
	log       *slog.Logger
}

type replState struct {
	env     *replEnv
	start   *messages.ReplicationStart
	peerPID *actor.PID
	peer    *replication.Peer
	stream  *actor.PID
	// outstanding are the seqs sent to the stream and not yet answered,
	// so that a restarted stream's lost requests can be failed.
	outstanding map[uint64]struct{}
}

func newReplStateProps(env *replEnv, start *messages.ReplicationStart, peerPID *actor.PID) *actor.Props {
	opts := []actor.PropsOption{
		actor.WithSupervisor(actor.NewOneForOneStrategy(100, 0, actor.DefaultDecider)),
	}
	if env.dispatch != nil {
		opts = append(opts, actor.WithDispatcher(env.dispatch))
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &replState{env: env, start: start, peerPID: peerPID, outstanding: map[uint64]struct{}{}}
	}, opts...)
}

func (r *replState) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		p, err := replication.NewPeer(r.env.cfg, r.start)
		if err != nil {
			r.env.log.Error("replication: cannot start peer", slog.Uint64("peer", r.start.GetPeer()), slog.Any("err", err))
			return
		}
		r.peer = p
		r.stream = ctx.Spawn(newReplStreamProps(r.env, r.start, r.peerPID))
	case *actor.Stopping:
		if r.peer != nil {
			r.peer.Stop()
		}
		return
	case *actor.Restarting:
		return
	}
	if r.peer == nil {
		return
	}
	var err error
	switch m := ctx.Message().(type) {
	case *messages.ReplicationNotify:
		if stagesOn && len(m.GetEntries()) > 0 {
			stages.mark(lastIndex(m.GetEntries()), fmt.Sprintf("%d/state-%d", r.env.self, r.start.GetPeer()), "took the entries")
		}
		err = r.peer.Notify(m)
	case *replTick:
		r.peer.Tick()
		ctx.Send(r.stream, m)
	case *messages.AppendEntriesResponse:
		if stagesOn {
			stages.mark(m.GetMatchIndex(), fmt.Sprintf("%d/state-%d", r.env.self, r.start.GetPeer()), "took the answer")
		}
		delete(r.outstanding, m.GetSeq())
		err = r.peer.HandleAppendResponse(m)
	case *messages.InstallSnapshotResponse:
		delete(r.outstanding, m.GetSeq())
		err = r.peer.HandleSnapshotResponse(m)
	case *messages.StreamFailure:
		delete(r.outstanding, m.GetSeq())
		err = r.peer.HandleFailure(m)
	case *streamRestarted:
		// The stream's requests died with it. Failing the oldest one resets
		// the whole window; the peer probes again after a backoff.
		var oldest uint64
		for seq := range r.outstanding {
			if oldest == 0 || seq < oldest {
				oldest = seq
			}
		}
		clear(r.outstanding)
		if oldest != 0 {
			err = r.peer.HandleFailure(&messages.StreamFailure{Term: r.start.GetTerm(), Seq: oldest,
				Error: newError(messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME, "replication stream restarted")})
		}
	case *actor.Started:
	default:
		return
	}
	if err != nil {
		r.env.log.Debug("replication: input refused", slog.Uint64("peer", r.start.GetPeer()), slog.Any("err", err))
	}
	out := r.peer.Output()
	for _, cmd := range out.Stream {
		switch c := cmd.(type) {
		case *messages.StreamSend:
			if !c.GetHeartbeat() {
				r.outstanding[c.GetSeq()] = struct{}{}
			}
		case *messages.StreamSendSnapshot:
			r.outstanding[c.GetSeq()] = struct{}{}
		}
		ctx.Send(r.stream, cmd)
	}
	if out.Report != nil {
		ctx.Send(ctx.Parent(), out.Report)
	}
}

type replStream struct {
	env     *replEnv
	start   *messages.ReplicationStart
	peerPID *actor.PID
	s       *replication.Stream
	starts  *int
}

func newReplStreamProps(env *replEnv, start *messages.ReplicationStart, peerPID *actor.PID) *actor.Props {
	// starts counts incarnations across restarts (the producer makes a new
	// instance each time; the counter outlives them).
	starts := new(int)
	var opts []actor.PropsOption
	if env.dispatch != nil {
		opts = append(opts, actor.WithDispatcher(env.dispatch))
	}
	return actor.PropsFromProducer(func() actor.Actor {
		return &replStream{env: env, start: start, peerPID: peerPID, starts: starts}
	}, opts...)
}

// streamFailpoint, when set (by tests only, before any node starts), runs
// at the start of every stream's Receive; it may panic to show what a
// failing stream does.
var streamFailpoint func(peer uint64, msg any)

func (s *replStream) Receive(ctx actor.Context) {
	if streamFailpoint != nil {
		streamFailpoint(s.start.GetPeer(), ctx.Message())
	}
	var err error
	switch ctx.Message().(type) {
	case *actor.Started:
		*s.starts++
		s.s, err = replication.NewStream(replication.StreamConfig{Config: s.env.cfg, ClusterID: s.env.clusterID,
			GroupID: s.env.group, Leader: s.env.self, Peer: s.start.GetPeer(), Term: s.start.GetTerm()})
		if err != nil {
			s.env.log.Error("replication: cannot start stream", slog.Uint64("peer", s.start.GetPeer()), slog.Any("err", err))
			return
		}
		if *s.starts > 1 {
			ctx.Send(ctx.Parent(), &streamRestarted{})
		}
		return
	case *actor.Stopping:
		if s.s != nil {
			s.s.Stop()
		}
		return
	}
	if s.s == nil {
		return
	}
	switch m := ctx.Message().(type) {
	case *replTick:
		s.s.Tick()
	case *messages.ReplicationNotify:
		s.s.Notify(m)
	case *messages.StreamSend:
		if stagesOn && !m.GetHeartbeat() && m.GetHi() > 0 {
			stages.mark(m.GetHi()-1, fmt.Sprintf("%d/stream-%d", s.env.self, s.start.GetPeer()), "took the send")
		}
		err = s.s.Send(m)
	case *messages.StreamSendSnapshot:
		err = s.s.SendSnapshot(m)
	case *messages.StorageEntries:
		err = s.s.HandleEntries(m)
	case *messages.StorageSnapshotChunk:
		err = s.s.HandleSnapshotChunk(m)
	case *messages.AppendEntriesResponse, *messages.InstallSnapshotResponse, *messages.WireReject:
		if a, ok := m.(*messages.AppendEntriesResponse); stagesOn && ok {
			stages.mark(a.GetMatchIndex(), fmt.Sprintf("%d/stream-%d", s.env.self, s.start.GetPeer()), "took the answer")
		}
		err = s.s.HandleResponse(m.(proto.Message))
	case *actor.DeadLetterResponse:
		// The peer's RaftCore is not there (stopped, or not started yet):
		// the request times out and is retried after a backoff.
		return
	default:
		return
	}
	if err != nil {
		s.env.log.Debug("replication: stream input refused", slog.Uint64("peer", s.start.GetPeer()), slog.Any("err", err))
	}
	out := s.s.Output()
	for _, m := range out.Storage {
		ctx.Request(s.env.storage, m)
	}
	for _, m := range out.Send {
		// The peer answers to ctx.Sender(), which is this stream.
		if a, ok := m.(*messages.AppendEntriesRequest); stagesOn && ok && len(a.GetEntries()) > 0 {
			stages.mark(lastIndex(a.GetEntries()), fmt.Sprintf("%d/stream-%d", s.env.self, s.start.GetPeer()), "sent append_entries")
		}
		ctx.Request(s.peerPID, m)
	}
	for _, m := range out.ToPeer {
		ctx.Send(ctx.Parent(), m)
	}
}
