package domain

import "fmt"

// Status is where a task is in its lifecycle. The zero value is invalid so
// an unset status is never mistaken for a real one.
type Status uint8

// The statuses a task moves through:
// pending -> running -> succeeded | retrying | failed; retrying -> pending.
const (
	StatusPending Status = iota + 1
	StatusRunning
	StatusRetrying
	StatusSucceeded
	StatusFailed
)

var statusNames = [...]string{
	StatusPending:   "pending",
	StatusRunning:   "running",
	StatusRetrying:  "retrying",
	StatusSucceeded: "succeeded",
	StatusFailed:    "failed",
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
func (s Status) Valid() bool { return s >= StatusPending && s <= StatusFailed }

// Finished reports whether s is a terminal status.
func (s Status) Finished() bool { return s == StatusSucceeded || s == StatusFailed }

// String returns the lower-case name used in logs and the API.
func (s Status) String() string {
	if !s.Valid() {
		return fmt.Sprintf("Status(%d)", uint8(s))
	}
	return statusNames[s]
}
