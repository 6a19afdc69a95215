package domain

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrInvalidInput marks a value that breaks a domain rule; the wrapping
	// *ValidationError names the field.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnknownTaskType marks a task type with no registered handler.
	ErrUnknownTaskType = errors.New("unknown task type")
	// ErrTaskNotFound is returned when no task has the requested id (or it
	// has outlived its retention).
	ErrTaskNotFound = errors.New("task not found")
	// ErrQueueFull is returned when the queue already holds as many pending
	// tasks as it may.
	ErrQueueFull = errors.New("queue is full")
	// ErrStorageFull is returned when the broker has no room left for the
	// task's bytes (a memory limit, or a store refusing writes for lack of
	// memory); the task is not stored.
	ErrStorageFull = errors.New("broker storage is full")
	// ErrShuttingDown is returned for new work once shutdown has begun.
	ErrShuttingDown = errors.New("service is shutting down")
	// ErrUnavailable marks a broker that cannot be reached right now; the
	// call may succeed if retried later.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrInvalidTransition marks a status change the task's lifecycle does
	// not allow; the wrapping *TransitionError says which.
	ErrInvalidTransition = errors.New("invalid task status transition")
	// ErrIdempotencyKeyReused is returned when an idempotency key comes back
	// with a different request than the one it was first used for.
	ErrIdempotencyKeyReused = errors.New("idempotency key was used for a different request")
	// ErrIdempotencyInFlight is returned when an idempotency key comes back
	// while the first request with it is still being processed.
	ErrIdempotencyInFlight = errors.New("a request with this idempotency key is still being processed")
	// ErrStaleAttempt is returned when the outcome of an attempt arrives
	// after the broker stopped considering that attempt running (its lease
	// expired and the task was recovered, or the outcome was already stored).
	ErrStaleAttempt = errors.New("attempt is no longer current")
	// ErrAttemptTimedOut marks an attempt that ran past its deadline.
	ErrAttemptTimedOut = errors.New("attempt timed out")
	// ErrHandlerPanicked marks an attempt whose handler panicked.
	ErrHandlerPanicked = errors.New("handler panicked")
)

// ValidationError names the field that broke a rule and the rule it broke.
type ValidationError struct {
	Field   string
	Problem string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes errors.Is(err, ErrInvalidInput) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidInput }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// ItemError says which element of a batch broke a rule: its message is
// the element's place ("tasks[3].") followed by the element's own error,
// which names the field.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("tasks[%d].%v", e.Index, e.Err) }

// Unwrap returns the element's own error.
func (e *ItemError) Unwrap() error { return e.Err }

// UnknownTypeError says which type was asked for and which ones exist.
type UnknownTypeError struct {
	Type  string
	Known []string
}

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("type: %q is not a type this instance runs or accepts (known types: %s)", e.Type, strings.Join(e.Known, ", "))
}

// Unwrap makes errors.Is(err, ErrUnknownTaskType) true.
func (e *UnknownTypeError) Unwrap() error { return ErrUnknownTaskType }

// TransitionError says which move was refused from which status.
type TransitionError struct {
	Action string
	From   Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s a task that is %s", e.Action, e.From)
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// TimeoutError reports an attempt stopped at its deadline. Abandoned says
// its handler did not return even after its context ended, so it was
// left running and its result, if any, will be discarded.
type TimeoutError struct {
	After     time.Duration
	Abandoned bool
}

func (e *TimeoutError) Error() string {
	if e.Abandoned {
		return fmt.Sprintf("attempt timed out after %s; its handler did not return and was abandoned", e.After)
	}
	return fmt.Sprintf("attempt timed out after %s", e.After)
}

// Unwrap makes errors.Is(err, ErrAttemptTimedOut) true.
func (e *TimeoutError) Unwrap() error { return ErrAttemptTimedOut }

// PanicError carries the value a handler panicked with and the stack at
// the panic, so the failure can be logged and recorded instead of crashing.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

// Unwrap makes errors.Is(err, ErrHandlerPanicked) true.
func (e *PanicError) Unwrap() error { return ErrHandlerPanicked }
