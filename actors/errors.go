package actors

import (
	"errors"
	"fmt"

	"github.com/raftor/raftor/messages"
)

// Error is the error every Node method returns for a refused or failed
// request. Code is what a caller acts on; with NOT_LEADER, LeaderID and
// LeaderAddr name the leader when this node knows it.
type Error struct {
	Code       messages.ErrorCode
	LeaderID   uint64
	LeaderAddr string
	Msg        string
}

func (e *Error) Error() string {
	s := "raftor: " + codeText(e.Code)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Code == messages.ErrorCode_ERROR_CODE_NOT_LEADER && e.LeaderID != 0 {
		s += fmt.Sprintf(" (leader is node %d", e.LeaderID)
		if e.LeaderAddr != "" {
			s += " at " + e.LeaderAddr
		}
		s += ")"
	}
	return s
}

// Is makes errors.Is(err, ErrNotLeader) and the other sentinels match any
// *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is. Node methods never return them bare: they return
// an *Error with the same code and the details.
var (
	ErrNotLeader          = &Error{Code: messages.ErrorCode_ERROR_CODE_NOT_LEADER}
	ErrTimeout            = &Error{Code: messages.ErrorCode_ERROR_CODE_TIMEOUT}
	ErrStopped            = &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED}
	ErrChangeInProgress   = &Error{Code: messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS}
	ErrTooLarge           = &Error{Code: messages.ErrorCode_ERROR_CODE_TOO_LARGE}
	ErrInvalid            = &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID}
	ErrOverloaded         = &Error{Code: messages.ErrorCode_ERROR_CODE_OVERLOADED}
	ErrUnknownOutcome     = &Error{Code: messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME}
	ErrAborted            = &Error{Code: messages.ErrorCode_ERROR_CODE_ABORTED}
	ErrStorageFailed      = &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED}
	ErrNotInitialized     = &Error{Code: messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED}
	ErrAlreadyInitialized = &Error{Code: messages.ErrorCode_ERROR_CODE_ALREADY_INITIALIZED}
	ErrTransferInProgress = &Error{Code: messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS}
	ErrNoQuorum           = &Error{Code: messages.ErrorCode_ERROR_CODE_NO_QUORUM}
)

// FromProto converts a protocol error into an *Error; nil and an unset code
// give nil.
func FromProto(e *messages.Error) error {
	if e == nil || e.GetCode() == messages.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil
	}
	return &Error{Code: e.GetCode(), LeaderID: e.GetLeaderId(), LeaderAddr: e.GetLeaderAddress(), Msg: e.GetMessage()}
}

// toProto converts any error into the protocol's Error.
func toProto(err error) *messages.Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &messages.Error{Code: e.Code, Message: e.Msg, LeaderId: e.LeaderID, LeaderAddress: e.LeaderAddr}
	}
	return &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Message: err.Error()}
}

func newError(code messages.ErrorCode, format string, args ...any) *messages.Error {
	return &messages.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func codeText(c messages.ErrorCode) string {
	switch c {
	case messages.ErrorCode_ERROR_CODE_NOT_LEADER:
		return "not leader"
	case messages.ErrorCode_ERROR_CODE_TIMEOUT:
		return "timeout"
	case messages.ErrorCode_ERROR_CODE_STOPPED:
		return "node stopped"
	case messages.ErrorCode_ERROR_CODE_CHANGE_IN_PROGRESS:
		return "membership change in progress"
	case messages.ErrorCode_ERROR_CODE_TOO_LARGE:
		return "too large"
	case messages.ErrorCode_ERROR_CODE_INVALID:
		return "invalid request"
	case messages.ErrorCode_ERROR_CODE_OVERLOADED:
		return "overloaded"
	case messages.ErrorCode_ERROR_CODE_UNKNOWN_OUTCOME:
		return "outcome unknown"
	case messages.ErrorCode_ERROR_CODE_ABORTED:
		return "aborted"
	case messages.ErrorCode_ERROR_CODE_STORAGE_FAILED:
		return "storage failed"
	case messages.ErrorCode_ERROR_CODE_NOT_INITIALIZED:
		return "not initialized"
	case messages.ErrorCode_ERROR_CODE_ALREADY_INITIALIZED:
		return "already initialized"
	case messages.ErrorCode_ERROR_CODE_TRANSFER_IN_PROGRESS:
		return "leader transfer in progress"
	case messages.ErrorCode_ERROR_CODE_NO_QUORUM:
		return "no quorum"
	}
	return c.String()
}
