package domain

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// MaxKeyLength bounds a fairness key, in characters.
const MaxKeyLength = 128

// ValidateKey returns a *ValidationError for field "key" unless k is 1 to
// MaxKeyLength characters of valid UTF-8 without control characters.
func ValidateKey(k string) error {
	if k == "" {
		return invalid("key", "must not be empty (leave it out for no key)")
	}
	if !utf8.ValidString(k) {
		return invalid("key", "must be valid UTF-8")
	}
	n := 0
	for _, r := range k {
		n++
		if r < 0x20 || r == 0x7f {
			return invalid("key", "must not contain control characters (found %q at position %d)", r, n)
		}
	}
	if n > MaxKeyLength {
		return invalid("key", "must be at most %d characters, got %d", MaxKeyLength, n)
	}
	return nil
}

// EffectiveLevel is the priority level a pending task counts as after
// waiting waited, with aging step: one level higher per step waited, up to
// MaxPriority. A step of 0 turns aging off: the level is the task's own.
func EffectiveLevel(level int, waited, step time.Duration) int {
	if step <= 0 || waited < step {
		return level
	}
	return min(MaxPriority, level+int(min(waited/step, MaxPriority)))
}

// Candidate is the next task one queue offers a worker: its priority
// level, the order it became pending in, and since when.
type Candidate struct {
	Level        int
	Seq          uint64
	PendingSince time.Time
}

// Outranks reports whether c goes before o: the higher effective level
// (see EffectiveLevel) first, then the one that became pending first.
// This is the one global order every broker follows.
func (c Candidate) Outranks(o Candidate, now time.Time, aging time.Duration) bool {
	cl, ol := c.Level, o.Level
	if aging > 0 {
		cl, ol = EffectiveLevel(cl, now.Sub(c.PendingSince), aging), EffectiveLevel(ol, now.Sub(o.PendingSince), aging)
	}
	if cl != ol {
		return cl > ol
	}
	return c.Seq < o.Seq
}

// TypeLimits bound the attempts of one task type across every instance
// sharing a broker. A zero field means no limit.
type TypeLimits struct {
	// Concurrency is the most attempts running at once.
	Concurrency int
	// Rate attempts may start per Period: a token bucket that holds up to
	// Rate tokens (the burst) and refills Rate per Period.
	Rate   int
	Period time.Duration
}

// NewTypeLimits returns limits, or a *ValidationError naming the bad part.
func NewTypeLimits(concurrency, rate int, period time.Duration) (TypeLimits, error) {
	switch {
	case concurrency < 0:
		return TypeLimits{}, invalid("concurrency", "must not be negative, got %d", concurrency)
	case rate < 0:
		return TypeLimits{}, invalid("rate", "must not be negative, got %d", rate)
	case rate > 0 && period < time.Millisecond:
		return TypeLimits{}, invalid("rate", "needs a period of at least 1ms, got %s", period)
	}
	return TypeLimits{Concurrency: concurrency, Rate: rate, Period: period}, nil
}

// String renders the limits as --type-limit takes them.
func (l TypeLimits) String() string {
	s := ""
	if l.Concurrency > 0 {
		s = fmt.Sprintf("concurrency:%d", l.Concurrency)
	}
	if l.Rate > 0 {
		if s != "" {
			s += ","
		}
		s += fmt.Sprintf("rate:%d/%s", l.Rate, l.Period)
	}
	return s
}

// TokenBucket is a rate limit's state: Tokens left as of At. The zero
// value is a full bucket.
type TokenBucket struct {
	Tokens float64
	At     time.Time
}

// Take refills the bucket for the time since At (Rate tokens per Period,
// never above Rate) and takes one token if there is one. It returns the
// new state, whether a token was taken, and, when not, how long until one
// will be there. Limits without a rate always give a token.
func (l TypeLimits) Take(b TokenBucket, now time.Time) (TokenBucket, bool, time.Duration) {
	if l.Rate <= 0 {
		return b, true, 0
	}
	burst := float64(l.Rate)
	tokens := burst
	if !b.At.IsZero() {
		elapsed := max(0, now.Sub(b.At))
		tokens = min(burst, b.Tokens+float64(elapsed)*burst/float64(l.Period))
	}
	if tokens >= 1 {
		return TokenBucket{Tokens: tokens - 1, At: now}, true, 0
	}
	wait := time.Duration((1 - tokens) * float64(l.Period) / burst)
	return TokenBucket{Tokens: tokens, At: now}, false, max(wait, time.Millisecond)
}

// RetryAfterError is a handler's failure that asks for the next attempt no
// sooner than After (a webhook's 429 or 503 with Retry-After).
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }

// Unwrap returns the failure itself.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// NoRetryError is a handler's failure that asks not to be retried (a
// webhook's X-Task-No-Retry: true).
type NoRetryError struct {
	Err error
}

func (e *NoRetryError) Error() string { return e.Err.Error() + " (the handler asked not to retry)" }

// Unwrap returns the failure itself.
func (e *NoRetryError) Unwrap() error { return e.Err }
