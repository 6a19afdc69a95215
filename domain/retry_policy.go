package domain

import (
	"math"
	"time"
)

// JitterFraction is how far a backoff may stray either side of its base:
// ±20%.
const JitterFraction = 0.2

// RetryPolicy says how long a failed task waits before its next attempt:
// min(initial × 2^(n-1), max) after failed attempt n, with ±20% jitter,
// never more than max. It is a pure value: time and randomness are passed
// in, so the same inputs always give the same delay.
type RetryPolicy struct {
	initial time.Duration
	max     time.Duration
}

// NewRetryPolicy returns a policy, or a *ValidationError when initial is
// not positive or max is below initial.
func NewRetryPolicy(initial, max time.Duration) (RetryPolicy, error) {
	if initial <= 0 {
		return RetryPolicy{}, invalid("retry-initial-backoff", "must be positive, got %s", initial)
	}
	if max < initial {
		return RetryPolicy{}, invalid("retry-max-backoff", "must be at least the initial backoff %s, got %s", initial, max)
	}
	return RetryPolicy{initial: initial, max: max}, nil
}

// Initial returns the base delay after the first failed attempt.
func (p RetryPolicy) Initial() time.Duration { return p.initial }

// Max returns the longest delay the policy ever gives.
func (p RetryPolicy) Max() time.Duration { return p.max }

// NextDelay returns the wait after failed attempt number attempt (counting
// from 1). random must be in [0, 1): 0 gives the shortest jittered delay,
// values near 1 the longest. Attempts below 1 are treated as 1.
func (p RetryPolicy) NextDelay(attempt int, random float64) time.Duration {
	base := p.max
	if attempt < 1 {
		attempt = 1
	}
	// Shift only while it cannot overflow or pass max.
	if shift := attempt - 1; shift < 62 && p.initial <= p.max>>uint(shift) {
		base = p.initial << uint(shift)
	}
	random = math.Min(math.Max(random, 0), 1)
	factor := 1 - JitterFraction + 2*JitterFraction*random
	d := time.Duration(float64(base) * factor)
	if d > p.max {
		d = p.max
	}
	if d < 0 {
		d = 0
	}
	return d
}
