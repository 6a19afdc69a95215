package domain

import "fmt"

// Status is where a task is in its lifecycle. The zero value is invalid so
// an unset status is never mistaken for a real one.
type Status uint8

// The statuses a task moves through:
// scheduled -> pending -> running -> succeeded | retrying | failed;
// retrying -> pending; any status not terminal -> cancelled; failed |
// cancelled -> pending (retried by hand).
const (
	StatusPending Status = iota + 1
	StatusRunning
	StatusRetrying
	StatusSucceeded
	StatusFailed
	StatusScheduled
	StatusCancelled
)

// StatusCount bounds the values of Status, for arrays indexed by status.
const StatusCount = int(StatusCancelled) + 1

var statusNames = [...]string{
	StatusPending:   "pending",
	StatusRunning:   "running",
	StatusRetrying:  "retrying",
	StatusSucceeded: "succeeded",
	StatusFailed:    "failed",
	StatusScheduled: "scheduled",
	StatusCancelled: "cancelled",
}

// Statuses returns every status, in the order the API shows them.
func Statuses() []Status {
	return []Status{StatusScheduled, StatusPending, StatusRunning, StatusRetrying, StatusSucceeded, StatusFailed, StatusCancelled}
}

// ParseStatus returns the status named s, or a *ValidationError.
func ParseStatus(s string) (Status, error) {
	for st, name := range statusNames {
		if name != "" && name == s {
			return Status(st), nil
		}
	}
	return 0, invalid("status", "unknown status %q", s)
}

// Valid reports whether s is one of the declared statuses.
func (s Status) Valid() bool { return s >= StatusPending && s <= StatusCancelled }

// Finished reports whether s is a terminal status: succeeded, failed or
// cancelled.
func (s Status) Finished() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Waiting reports whether a task in status s waits to run (scheduled,
// pending or retrying): what --queue-size bounds.
func (s Status) Waiting() bool {
	return s == StatusScheduled || s == StatusPending || s == StatusRetrying
}

// DeadLetter reports whether s is a terminal status that did not succeed
// (failed or cancelled): kept longer, and retried by hand.
func (s Status) DeadLetter() bool { return s == StatusFailed || s == StatusCancelled }

// String returns the lower-case name used in logs and the API.
func (s Status) String() string {
	if !s.Valid() {
		return fmt.Sprintf("Status(%d)", uint8(s))
	}
	return statusNames[s]
}
