package httpapi

import (
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// limitedLog writes a warning per key at most once per interval, with how
// many it held back since the last one, so a flood of refused requests
// makes a few lines, not one each. Keys are a fixed handful of reasons.
type limitedLog struct {
	out      logrus.FieldLogger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newLimitedLog(log logrus.FieldLogger, interval time.Duration, now func() time.Time) *limitedLog {
	return &limitedLog{out: log, interval: interval, now: now, last: map[string]time.Time{}, held: map[string]int{}}
}

func (l *limitedLog) log(key string, fields logrus.Fields, msg string) {
	now := l.now()
	l.mu.Lock()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.interval {
		l.held[key]++
		l.mu.Unlock()
		return
	}
	held := l.held[key]
	l.last[key], l.held[key] = now, 0
	l.mu.Unlock()
	if held > 0 {
		fields["suppressed"] = held
	}
	l.out.WithFields(fields).Warn(msg)
}

// errBusy refuses a request whose body would pass the in-flight budget.
var errBusy = errors.New("too many request bodies in flight")

// byteBudget counts the bytes of request bodies in flight against a limit.
type byteBudget struct {
	mu          sync.Mutex
	used, limit int64
}

// take reserves n bytes, or reports false when that would pass the limit.
func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}
