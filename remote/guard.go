package remote

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"
)

// RejectReason says why the guard refused an envelope or a call.
type RejectReason int

const (
	// RejectUnknownType: the envelope names a type this process does not
	// know. The pinned protoactor dereferences nil in its deserializer on
	// such a message and takes the whole process down.
	RejectUnknownType RejectReason = iota
	// RejectBadIndex: a type, target or sender index points outside the
	// batch's tables (an index panic in protoactor's reader).
	RejectBadIndex
	// RejectSerializer: a serializer ID other than protobuf's.
	RejectSerializer
	// RejectDeniedType: a type that must never arrive from the network,
	// such as a PoisonPill that would stop a Raft actor.
	RejectDeniedType
	// RejectUnimplemented: a call that protoactor's server answers with a
	// panic (ListProcesses, GetProcessDiagnostics).
	RejectUnimplemented
	// RejectPanic: a panic in protoactor's stream handler, recovered so the
	// process survives; the stream is closed and the peer reconnects.
	RejectPanic
	numRejectReasons
)

func (r RejectReason) String() string {
	switch r {
	case RejectUnknownType:
		return "unknown_type"
	case RejectBadIndex:
		return "bad_index"
	case RejectSerializer:
		return "serializer"
	case RejectDeniedType:
		return "denied_type"
	case RejectUnimplemented:
		return "unimplemented"
	case RejectPanic:
		return "panic"
	}
	return fmt.Sprintf("RejectReason(%d)", int(r))
}

// protoSerializerID is protoactor's protobuf serializer, the only one Raftor
// speaks.
const protoSerializerID = 0

// deniedTypes may never arrive from another node: they would stop or
// restart the receiving actor from outside.
var deniedTypes = map[string]bool{
	string((&actor.PoisonPill{}).ProtoReflect().Descriptor().FullName()): true,
	string((&actor.Stop{}).ProtoReflect().Descriptor().FullName()):       true,
}

// guard inspects everything that arrives on protoactor remote's gRPC
// server before protoactor's own reader sees it, so that malformed input is
// dropped with a counted, logged reason instead of panicking the process.
type guard struct {
	log     *slog.Logger
	rejects [numRejectReasons]atomic.Uint64
	passed  atomic.Uint64
	// faults is Config.Inbound's fault injection, nil unless configured.
	faults *faults
}

func (g *guard) reject(reason RejectReason, detail string) {
	g.rejects[reason].Add(1)
	g.log.Warn("remote: dropped inbound message", "reason", reason.String(), "detail", detail)
}

// streamInterceptor wraps protoactor's Receive stream: every RemoteMessage
// is checked as it is read, and a panic in the handler closes this stream
// only.
func (g *guard) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			g.reject(RejectPanic, fmt.Sprint(r))
			err = status.Errorf(codes.Internal, "raftor remote: recovered from %v", r)
		}
	}()
	return handler(srv, &guardedStream{ServerStream: ss, g: g})
}

// unaryInterceptor refuses protoactor's unimplemented unary calls, which
// panic on the server.
func (g *guard) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	g.reject(RejectUnimplemented, info.FullMethod)
	return nil, status.Errorf(codes.Unimplemented, "raftor remote: %s is not served", info.FullMethod)
}

type guardedStream struct {
	grpc.ServerStream
	g *guard
	// from is the address the peer announced in its ConnectRequest; only
	// the fault filter reads it.
	from string
}

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if rm, ok := m.(*pr.RemoteMessage); ok {
		if b := rm.GetMessageBatch(); b != nil {
			s.g.filterBatch(b)
			// Fault injection (Config.Inbound) sees only envelopes the
			// guard let through, so its indexes are safe to follow.
			if s.g.faults != nil {
				s.g.faults.apply(b, s.from)
			}
		} else if sc := rm.GetConnectRequest().GetServerConnection(); sc != nil {
			s.from = sc.GetAddress()
		}
	}
	return nil
}

// filterBatch removes from b, in place, every envelope that protoactor's
// reader would panic on or that may not arrive from the network.
func (g *guard) filterBatch(b *pr.MessageBatch) {
	kept := b.Envelopes[:0]
	for _, env := range b.Envelopes {
		if reason, detail, ok := g.checkEnvelope(b, env); !ok {
			g.reject(reason, detail)
			continue
		}
		g.passed.Add(1)
		kept = append(kept, env)
	}
	// Clear the tail so dropped envelopes can be collected.
	for i := len(kept); i < len(b.Envelopes); i++ {
		b.Envelopes[i] = nil
	}
	b.Envelopes = kept
}

func (g *guard) checkEnvelope(b *pr.MessageBatch, env *pr.MessageEnvelope) (RejectReason, string, bool) {
	if env == nil {
		return RejectBadIndex, "nil envelope", false
	}
	if env.TypeId < 0 || int(env.TypeId) >= len(b.TypeNames) {
		return RejectBadIndex, fmt.Sprintf("type index %d of %d", env.TypeId, len(b.TypeNames)), false
	}
	if env.Target < 0 || int(env.Target) >= len(b.Targets) || b.Targets[env.Target] == nil {
		return RejectBadIndex, fmt.Sprintf("target index %d of %d", env.Target, len(b.Targets)), false
	}
	if env.Sender < 0 || int(env.Sender) > len(b.Senders) || (env.Sender > 0 && b.Senders[env.Sender-1] == nil) {
		return RejectBadIndex, fmt.Sprintf("sender index %d of %d", env.Sender, len(b.Senders)), false
	}
	if env.SerializerId != protoSerializerID {
		return RejectSerializer, fmt.Sprintf("serializer %d", env.SerializerId), false
	}
	name := b.TypeNames[env.TypeId]
	if deniedTypes[name] {
		return RejectDeniedType, name, false
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name)); err != nil {
		return RejectUnknownType, name, false
	}
	return 0, "", true
}
