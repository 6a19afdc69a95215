package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

func TestEffectiveLevel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level  int
		waited time.Duration
		step   time.Duration
		want   int
	}{
		{0, time.Hour, 0, 0}, // aging off
		{0, 59 * time.Second, time.Minute, 0},
		{0, time.Minute, time.Minute, 1},
		{2, 5 * time.Minute, time.Minute, 7},
		{0, 20 * time.Minute, time.Minute, 9}, // capped
		{9, time.Hour, time.Minute, 9},
		{3, -time.Second, time.Minute, 3}, // a clock that went back
	} {
		if got := domain.EffectiveLevel(tc.level, tc.waited, tc.step); got != tc.want {
			t.Errorf("EffectiveLevel(%d, %v, %v) = %d; want %d", tc.level, tc.waited, tc.step, got, tc.want)
		}
	}
}

func TestCandidateOrder(t *testing.T) {
	t.Parallel()
	now := t0
	high := domain.Candidate{Level: 9, Seq: 10, PendingSince: now}
	low := domain.Candidate{Level: 0, Seq: 1, PendingSince: now.Add(-5 * time.Minute)}
	if !high.Outranks(low, now, 0) || low.Outranks(high, now, 0) {
		t.Fatal("without aging the higher level goes first")
	}
	older := domain.Candidate{Level: 9, Seq: 3, PendingSince: now}
	if !older.Outranks(high, now, 0) {
		t.Fatal("same level: the one pending first goes first")
	}
	// A priority-0 task that waited 9 steps counts as 9 and is older.
	if !low.Outranks(high, now, 30*time.Second) {
		t.Fatal("an aged task does not outrank a newer high one")
	}
	if low.Outranks(high, now, time.Hour) {
		t.Fatal("a task that waited less than a step ages nothing")
	}
}

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	l, err := domain.NewTypeLimits(0, 10, time.Second) // burst 10, 10/s
	if err != nil {
		t.Fatal(err)
	}
	var b domain.TokenBucket
	now := t0
	for i := 0; i < 10; i++ {
		var ok bool
		if b, ok, _ = l.Take(b, now); !ok {
			t.Fatalf("burst: token %d refused", i)
		}
	}
	b, ok, wait := l.Take(b, now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("empty bucket: %v, wait %v; want refused, 100ms", ok, wait)
	}
	if _, ok, _ := l.Take(b, now.Add(99*time.Millisecond)); ok {
		t.Fatal("a token before it refilled")
	}
	if _, ok, _ := l.Take(b, now.Add(100*time.Millisecond)); !ok {
		t.Fatal("no token after it refilled")
	}
	// Over a long run the rate holds: 10 s at most 10 + 100 tokens.
	b, taken := domain.TokenBucket{}, 0
	for ms := 0; ms < 10000; ms++ {
		if nb, ok, _ := l.Take(b, now.Add(time.Duration(ms)*time.Millisecond)); ok {
			taken++
			b = nb
		} else {
			b = nb
		}
	}
	if taken < 105 || taken > 110 {
		t.Fatalf("%d tokens in 10s at 10/s with a burst of 10", taken)
	}
	if _, ok, _ := (domain.TypeLimits{Concurrency: 3}).Take(domain.TokenBucket{}, now); !ok {
		t.Fatal("no rate means no limit")
	}
	var ve *domain.ValidationError
	if _, err := domain.NewTypeLimits(0, 5, 0); !errors.As(err, &ve) || ve.Field != "rate" {
		t.Fatalf("a rate without a period: %v", err)
	}
	if s := (domain.TypeLimits{Concurrency: 10, Rate: 100, Period: time.Second}).String(); s != "concurrency:10,rate:100/1s" {
		t.Fatalf("String = %q", s)
	}
}

func TestBackpressureFromHandlers(t *testing.T) {
	t.Parallel()
	policy := mustPolicy(t, time.Second, time.Minute)
	task := newTask(t, 3)
	_ = task.Start(t0)
	if err := task.FailRetryAfter(t0, "busy", policy, 0.5, 30*time.Second); err != nil || task.NextAttemptAt() != t0.Add(30*time.Second) {
		t.Fatalf("retry after 30s: %v %v", err, task.NextAttemptAt())
	}
	_ = task.Requeue(t0)
	_ = task.Start(t0)
	if _ = task.FailRetryAfter(t0, "busy", policy, 0.5, time.Hour); task.NextAttemptAt() != t0.Add(time.Minute) {
		t.Fatalf("retry after an hour is capped at the max backoff: %v", task.NextAttemptAt())
	}
	_ = task.Requeue(t0)
	_ = task.Start(t0)
	if err := task.FailNoRetry(t0, "bad input"); err != nil || task.Status() != domain.StatusFailed || task.RetriesLeft() != 0 {
		t.Fatalf("no retry: %v %+v", err, task.Snapshot())
	}
	e := &domain.NoRetryError{Err: errors.New("webhook returned 400")}
	if !strings.Contains(e.Error(), "asked not to retry") {
		t.Fatal(e.Error())
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	task := newTask(t, 0)
	if err := task.SetKey("acme-corp"); err != nil || task.Key() != "acme-corp" {
		t.Fatalf("SetKey: %v", err)
	}
	for _, bad := range []string{"", strings.Repeat("k", 129), "a\nb", "\xff"} {
		if err := domain.ValidateKey(bad); !errors.Is(err, domain.ErrInvalidInput) {
			t.Errorf("key %q: %v", bad, err)
		}
	}
	if err := domain.ValidateKey(strings.Repeat("é", 128)); err != nil {
		t.Fatalf("128 characters: %v", err)
	}
	_ = task.Start(t0)
	var te *domain.TransitionError
	if err := task.SetKey("x"); !errors.As(err, &te) {
		t.Fatalf("SetKey on a running task: %v", err)
	}
}
