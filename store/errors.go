package store

import (
	"errors"
	"fmt"
	"strings"

	"github.com/raftor/raftor/messages"
)

// Error is the typed error of every store operation. Code is what a caller
// acts on; Group, Index and Path say where (zero when not relevant).
type Error struct {
	Code  messages.ErrorCode
	Op    string
	Group uint64
	Index uint64
	Path  string
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("store")
	if e.Op != "" {
		b.WriteString(": ")
		b.WriteString(e.Op)
	}
	if e.Group != 0 {
		fmt.Fprintf(&b, " group %d", e.Group)
	}
	if e.Index != 0 {
		fmt.Fprintf(&b, " index %d", e.Index)
	}
	if e.Path != "" {
		fmt.Fprintf(&b, " %s", e.Path)
	}
	b.WriteString(": ")
	if e.Msg != "" {
		b.WriteString(e.Msg)
	} else {
		b.WriteString(codeText(e.Code))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is one of the sentinel errors of this package
// with the same code, so that errors.Is(err, store.ErrCorrupt) works on any
// error the store returns.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.sentinel() && t.Code == e.Code
}

func (e *Error) sentinel() bool {
	return e.Op == "" && e.Group == 0 && e.Index == 0 && e.Path == "" && e.Msg == "" && e.Err == nil
}

// Sentinel errors, for errors.Is. The store never returns them bare: it
// returns an *Error with the same code and the details.
var (
	ErrCompacted     = &Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED}
	ErrCorrupt       = &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT}
	ErrStorageFailed = &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED}
	ErrClosed        = &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED}
	ErrInvalid       = &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID}
	ErrWrongIdentity = &Error{Code: messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER}
)

func codeText(c messages.ErrorCode) string {
	switch c {
	case messages.ErrorCode_ERROR_CODE_COMPACTED:
		return "entries compacted"
	case messages.ErrorCode_ERROR_CODE_CORRUPT:
		return "corrupt data"
	case messages.ErrorCode_ERROR_CODE_STORAGE_FAILED:
		return "storage failed"
	case messages.ErrorCode_ERROR_CODE_STOPPED:
		return "store closed"
	case messages.ErrorCode_ERROR_CODE_INVALID:
		return "invalid request"
	case messages.ErrorCode_ERROR_CODE_WRONG_CLUSTER:
		return "wrong identity"
	}
	return c.String()
}

// CodeOf returns the error code of err: the Code of a store *Error in its
// chain, ERROR_CODE_UNSPECIFIED for nil, and STORAGE_FAILED for any other
// error (an unexplained storage error is treated as a failed disk).
func CodeOf(err error) messages.ErrorCode {
	if err == nil {
		return messages.ErrorCode_ERROR_CODE_UNSPECIFIED
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return messages.ErrorCode_ERROR_CODE_STORAGE_FAILED
}

// ToProto converts err into the protocol's Error, nil for nil.
func ToProto(err error) *messages.Error {
	if err == nil {
		return nil
	}
	return &messages.Error{Code: CodeOf(err), Message: err.Error()}
}

func errCompacted(op string, group, index, first uint64) error {
	return &Error{Code: messages.ErrorCode_ERROR_CODE_COMPACTED, Op: op, Group: group, Index: index,
		Msg: fmt.Sprintf("purged (first index is %d)", first)}
}

func errUnavailable(op string, group, index, last uint64) error {
	return &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Op: op, Group: group, Index: index,
		Msg: fmt.Sprintf("beyond the last index %d", last)}
}

func errInvalid(op string, group uint64, format string, args ...any) error {
	return &Error{Code: messages.ErrorCode_ERROR_CODE_INVALID, Op: op, Group: group, Msg: fmt.Sprintf(format, args...)}
}

func errCorrupt(op string, group, index uint64, format string, args ...any) error {
	return &Error{Code: messages.ErrorCode_ERROR_CODE_CORRUPT, Op: op, Group: group, Index: index, Msg: fmt.Sprintf(format, args...)}
}

func errClosed(op string) error {
	return &Error{Code: messages.ErrorCode_ERROR_CODE_STOPPED, Op: op}
}

// errFailed wraps the cause of a storage failure.
func errFailed(op string, cause error) error {
	var e *Error
	if errors.As(cause, &e) && e.Code == messages.ErrorCode_ERROR_CODE_STORAGE_FAILED {
		return cause
	}
	return &Error{Code: messages.ErrorCode_ERROR_CODE_STORAGE_FAILED, Op: op, Msg: "storage failed, no more writes are accepted", Err: cause}
}
