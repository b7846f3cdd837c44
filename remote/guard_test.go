package remote

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/asynkron/protoactor-go/actor"
	pr "github.com/asynkron/protoactor-go/remote"
)

func newTestGuard() *guard { return &guard{log: slog.New(slog.DiscardHandler)} }

func TestFilterBatch(t *testing.T) {
	target := actor.NewPID("127.0.0.1:1", "core")
	sender := actor.NewPID("127.0.0.1:2", "stream")
	tests := []struct {
		name   string
		env    *pr.MessageEnvelope
		reason RejectReason
		kept   bool
	}{
		{"well formed", &pr.MessageEnvelope{TypeId: 0, Target: 0}, 0, true},
		{"well formed with sender", &pr.MessageEnvelope{TypeId: 0, Target: 0, Sender: 1}, 0, true},
		{"unknown type", &pr.MessageEnvelope{TypeId: 1, Target: 0}, RejectUnknownType, false},
		{"negative type index", &pr.MessageEnvelope{TypeId: -1, Target: 0}, RejectBadIndex, false},
		{"type index past table", &pr.MessageEnvelope{TypeId: 4, Target: 0}, RejectBadIndex, false},
		{"target index past table", &pr.MessageEnvelope{TypeId: 0, Target: 1}, RejectBadIndex, false},
		{"negative target", &pr.MessageEnvelope{TypeId: 0, Target: -1}, RejectBadIndex, false},
		{"sender index past table", &pr.MessageEnvelope{TypeId: 0, Target: 0, Sender: 2}, RejectBadIndex, false},
		{"json serializer", &pr.MessageEnvelope{TypeId: 0, Target: 0, SerializerId: 1}, RejectSerializer, false},
		{"serializer out of range", &pr.MessageEnvelope{TypeId: 0, Target: 0, SerializerId: 7}, RejectSerializer, false},
		{"poison pill", &pr.MessageEnvelope{TypeId: 2, Target: 0}, RejectDeniedType, false},
		{"stop", &pr.MessageEnvelope{TypeId: 3, Target: 0}, RejectDeniedType, false},
		{"nil envelope", nil, RejectBadIndex, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGuard()
			b := &pr.MessageBatch{
				TypeNames: []string{"raftor.v1.VoteRequest", "raftor.v1.Nope", "actor.PoisonPill", "actor.Stop"},
				Targets:   []*actor.PID{target},
				Senders:   []*actor.PID{sender},
				Envelopes: []*pr.MessageEnvelope{tt.env},
			}
			g.filterBatch(b)
			if got := len(b.Envelopes) == 1; got != tt.kept {
				t.Fatalf("kept = %v, want %v", got, tt.kept)
			}
			if !tt.kept && g.rejects[tt.reason].Load() != 1 {
				t.Fatalf("reason %v not counted", tt.reason)
			}
			if tt.kept && g.passed.Load() != 1 {
				t.Fatalf("passed not counted")
			}
		})
	}
}

// TestStreamInterceptorRecoversPanics: whatever panics inside protoactor's
// stream handler ends that stream with an error; it does not end the process.
func TestStreamInterceptorRecoversPanics(t *testing.T) {
	g := newTestGuard()
	err := g.streamInterceptor(nil, nil, &grpc.StreamServerInfo{FullMethod: "/remote.Remoting/Receive"},
		func(srv any, stream grpc.ServerStream) error { panic("nil map") })
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want an Internal error", err)
	}
	if g.rejects[RejectPanic].Load() != 1 {
		t.Fatal("panic not counted")
	}
}

func TestUnaryInterceptorRefuses(t *testing.T) {
	g := newTestGuard()
	called := false
	_, err := g.unaryInterceptor(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/remote.Remoting/ListProcesses"},
		func(ctx context.Context, req any) (any, error) { called = true; return nil, nil })
	if status.Code(err) != codes.Unimplemented || called {
		t.Fatalf("got %v (handler called: %v), want Unimplemented without calling protoactor", err, called)
	}
}
