package store

import (
	"io"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/raftor/raftor/messages"
)

// Result is a state machine's answer to one entry. Data and Typed travel
// back to the client in ClientWriteResponse.result and typed_result.
type Result struct {
	Data  []byte
	Typed *anypb.Any
	// Skipped is set for an entry at or below LastApplied that Apply did
	// not apply again.
	Skipped bool
}

// StateMachine is the user's replicated state. The apply actor calls
// Apply, Snapshot and Restore from one goroutine, never concurrently;
// StateSnapshot.WriteTo runs on another goroutine while Apply goes on.
type StateMachine interface {
	// Apply applies committed entries in log order and returns one Result
	// per entry. Entries at or below LastApplied are skipped (Result.Skipped),
	// so that a restart that replays the log never applies an entry twice;
	// the first entry above it must be LastApplied+1. BLANK and MEMBERSHIP
	// entries only advance LastApplied. An error means the state machine
	// cannot go on (its storage failed): the node stops applying. The
	// entries are shared with the log and must not be modified.
	Apply(entries []*messages.Entry) ([]Result, error)

	// Snapshot captures the state as of LastApplied. It must be cheap (a
	// Pebble snapshot, a copy-on-write root): the body is written later by
	// WriteTo, while new entries are being applied.
	Snapshot() (StateSnapshot, error)

	// Restore replaces the whole state with a body written by WriteTo. After
	// it, LastApplied is the snapshot's index and term.
	Restore(r io.Reader) error

	// LastApplied is the index and term of the last entry applied (or
	// restored), durable with the state it produced.
	LastApplied() (index, term uint64)
}

// StateSnapshot is a point-in-time view of a state machine.
type StateSnapshot interface {
	// Index and Term are the last entry the view includes.
	Index() uint64
	Term() uint64
	// WriteTo writes the body; it may run concurrently with Apply.
	WriteTo(w io.Writer) (int64, error)
	// Close releases the view.
	Close() error
}
