package domain

import "unicode/utf8"

// DefaultMaxResultBytes is the default bound on a stored result: 64 KiB.
const DefaultMaxResultBytes = 64 << 10

// Result is what a successful attempt returned: JSON when it is whole.
// A result over the bound is kept cut to it, and Truncated says so (the
// cut bytes are then not valid JSON, and are shown as text).
type Result struct {
	Data      []byte
	Truncated bool
}

// NewResult returns data as a result of at most max bytes: cut at a
// character boundary and flagged when longer. A max below 1 keeps none.
func NewResult(data []byte, max int) Result {
	if len(data) <= max {
		return Result{Data: data}
	}
	if max < 1 {
		return Result{Truncated: len(data) > 0}
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(data[cut]) {
		cut--
	}
	return Result{Data: data[:cut:cut], Truncated: true}
}

// Empty reports whether there is no result.
func (r Result) Empty() bool { return len(r.Data) == 0 && !r.Truncated }
