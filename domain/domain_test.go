package domain_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustPriority(t *testing.T, level int) domain.Priority {
	t.Helper()
	p, err := domain.ParsePriority(level)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustPolicy(t *testing.T, initial, max time.Duration) domain.RetryPolicy {
	t.Helper()
	p, err := domain.NewRetryPolicy(initial, max)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTask(t *testing.T, maxRetries int) *domain.Task {
	t.Helper()
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), "email:send", []byte(`{}`), mustPriority(t, 3), maxRetries, t0)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func TestParsePriority(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level int
		ok    bool
	}{{-1, false}, {0, true}, {5, true}, {9, true}, {10, false}, {1 << 40, false}} {
		p, err := domain.ParsePriority(tc.level)
		if tc.ok && (err != nil || p.Level() != tc.level) {
			t.Errorf("ParsePriority(%d) = %v, %v; want level %d", tc.level, p, err, tc.level)
		}
		var ve *domain.ValidationError
		if !tc.ok && (!errors.As(err, &ve) || ve.Field != "priority" || !errors.Is(err, domain.ErrInvalidInput)) {
			t.Errorf("ParsePriority(%d) error = %v; want a priority ValidationError", tc.level, err)
		}
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, s := range domain.Statuses() {
		got, err := domain.ParseStatus(s.String())
		if err != nil || got != s || !s.Valid() {
			t.Errorf("round trip of %v gave %v, %v", s, got, err)
		}
	}
	if _, err := domain.ParseStatus("done"); !errors.Is(err, domain.ErrInvalidInput) {
		t.Errorf("ParseStatus(done) error = %v", err)
	}
	if _, err := domain.ParseStatus(""); !errors.Is(err, domain.ErrInvalidInput) {
		t.Errorf("ParseStatus(\"\") error = %v", err)
	}
	if domain.Status(0).Valid() || domain.Status(8).Valid() {
		t.Error("zero and out-of-range statuses must not be valid")
	}
	if !domain.StatusFailed.Finished() || !domain.StatusSucceeded.Finished() || !domain.StatusCancelled.Finished() || domain.StatusRetrying.Finished() || domain.StatusScheduled.Finished() {
		t.Error("Finished is wrong")
	}
	if !domain.StatusScheduled.Waiting() || !domain.StatusRetrying.Waiting() || domain.StatusRunning.Waiting() || domain.StatusCancelled.Waiting() {
		t.Error("Waiting is wrong")
	}
	if len(domain.Statuses()) != 7 {
		t.Errorf("Statuses() = %v", domain.Statuses())
	}
}

func TestValidateType(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, typ string
		problem   string
	}{
		{"simple", "example_task", ""},
		{"all allowed characters", "a-Z_0.9:x", ""},
		{"max length", strings.Repeat("a", 128), ""},
		{"empty", "", "required"},
		{"too long", strings.Repeat("a", 129), "at most 128"},
		{"space", "a b", "only letters"},
		{"slash", "a/b", "only letters"},
		{"non-ascii letter", "tâche", "only letters"},
		{"names the character, not a byte", "tâsk", "found 'â' at position 2"},
		{"long with a bad character late", strings.Repeat("a", 50) + "/", "found '/' at position 51"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := domain.ValidateType(tc.typ)
			if tc.problem == "" {
				if err != nil {
					t.Fatalf("ValidateType(%q) = %v", tc.typ, err)
				}
				return
			}
			var ve *domain.ValidationError
			if !errors.As(err, &ve) || ve.Field != "type" || !strings.Contains(ve.Problem, tc.problem) {
				t.Fatalf("ValidateType(%q) = %v; want type error containing %q", tc.typ, err, tc.problem)
			}
		})
	}
}

func TestNewTask(t *testing.T) {
	t.Parallel()
	id := uuid.Must(uuid.NewV7())
	local := t0.In(time.FixedZone("X", 3600))
	for _, tc := range []struct {
		name       string
		id         uuid.UUID
		typ        string
		maxRetries int
		field      string
	}{
		{"valid", id, "x", 3, ""},
		{"zero retries", id, "x", 0, ""},
		{"max retries", id, "x", 100, ""},
		{"nil id", uuid.Nil, "x", 1, "id"},
		{"bad type", id, "", 1, "type"},
		{"negative retries", id, "x", -1, "max_retries"},
		{"too many retries", id, "x", 101, "max_retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			task, err := domain.NewTask(tc.id, tc.typ, []byte(`{"a":1}`), mustPriority(t, 7), tc.maxRetries, local)
			if tc.field != "" {
				var ve *domain.ValidationError
				if !errors.As(err, &ve) || ve.Field != tc.field {
					t.Fatalf("NewTask error = %v; want ValidationError for %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if task.ID() != tc.id || task.Type() != tc.typ || string(task.Payload()) != `{"a":1}` ||
				task.Priority().Level() != 7 || task.MaxRetries() != tc.maxRetries ||
				task.Status() != domain.StatusPending || task.Attempts() != 0 || task.LastError() != "" {
				t.Fatalf("unexpected task %+v", task.Snapshot())
			}
			if task.CreatedAt() != t0 || task.UpdatedAt() != t0 || task.CreatedAt().Location() != time.UTC {
				t.Fatalf("times not stored in UTC: %v", task.CreatedAt())
			}
		})
	}
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, time.Second, time.Minute)
	for _, tc := range []struct {
		name    string
		attempt int
		random  float64
		want    time.Duration
	}{
		{"first attempt, no jitter", 1, 0.5, time.Second},
		{"first attempt, lowest jitter", 1, 0, 800 * time.Millisecond},
		{"first attempt, highest jitter", 1, 0.999999, 1199999800 * time.Nanosecond},
		{"doubles", 2, 0.5, 2 * time.Second},
		{"doubles again", 4, 0.5, 8 * time.Second},
		{"capped at max", 7, 0.5, time.Minute},
		{"jitter below max when capped", 7, 0, 48 * time.Second},
		{"jitter never passes max", 7, 0.99, time.Minute},
		{"huge attempt cannot overflow", 1000, 0.5, time.Minute},
		{"attempt below 1 treated as 1", 0, 0.5, time.Second},
		{"random out of range clamped", 1, 7, 1200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := p.NextDelay(tc.attempt, tc.random)
			diff := got - tc.want
			if diff < -time.Microsecond || diff > time.Microsecond {
				t.Fatalf("NextDelay(%d, %v) = %v; want %v", tc.attempt, tc.random, got, tc.want)
			}
		})
	}
	huge := mustPolicy(t, time.Duration(1<<62), time.Duration(1<<62))
	if d := huge.NextDelay(50, 0.99); d != time.Duration(1<<62) {
		t.Fatalf("overflow guard: got %v", d)
	}
}

func TestNewRetryPolicyValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		initial, max time.Duration
		field        string
	}{
		{0, time.Second, "retry-initial-backoff"},
		{-time.Second, time.Second, "retry-initial-backoff"},
		{2 * time.Second, time.Second, "retry-max-backoff"},
		{time.Second, time.Second, ""},
	} {
		p, err := domain.NewRetryPolicy(tc.initial, tc.max)
		var ve *domain.ValidationError
		switch {
		case tc.field == "" && (err != nil || p.Initial() != tc.initial || p.Max() != tc.max):
			t.Errorf("NewRetryPolicy(%v, %v) = %v, %v", tc.initial, tc.max, p, err)
		case tc.field != "" && (!errors.As(err, &ve) || ve.Field != tc.field):
			t.Errorf("NewRetryPolicy(%v, %v) error = %v; want %s", tc.initial, tc.max, err, tc.field)
		}
	}
}

func TestTaskLifecycleSuccess(t *testing.T) {
	t.Parallel()
	task := newTask(t, 1)
	t1 := t0.Add(time.Second)
	if err := task.Start(t1); err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.StatusRunning || task.Attempts() != 1 || task.StartedAt() != t1 {
		t.Fatalf("after Start: %+v", task.Snapshot())
	}
	t2 := t1.Add(time.Second)
	if err := task.Succeed(t2); err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.StatusSucceeded || task.FinishedAt() != t2 || task.UpdatedAt() != t2 {
		t.Fatalf("after Succeed: %+v", task.Snapshot())
	}
}

func TestTaskFailRetriesThenGivesUp(t *testing.T) {
	t.Parallel()
	policy := mustPolicy(t, time.Second, time.Minute)
	task := newTask(t, 2)
	now := t0
	for attempt := 1; attempt <= 3; attempt++ {
		now = now.Add(time.Second)
		if err := task.Start(now); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if err := task.Fail(now, "boom", policy, 0.5); err != nil {
			t.Fatal(err)
		}
		if attempt < 3 {
			want := now.Add(time.Second << (attempt - 1))
			if task.Status() != domain.StatusRetrying || !task.WillRetry() || task.NextAttemptAt() != want || task.LastError() != "boom" {
				t.Fatalf("attempt %d: %+v; want retrying until %v", attempt, task.Snapshot(), want)
			}
			if err := task.Requeue(now); err != nil {
				t.Fatal(err)
			}
			if task.Status() != domain.StatusPending || !task.NextAttemptAt().IsZero() {
				t.Fatalf("after Requeue: %+v", task.Snapshot())
			}
		}
	}
	if task.Status() != domain.StatusFailed || task.Attempts() != 3 || task.FinishedAt() != now || task.LastError() != "boom" {
		t.Fatalf("after last attempt: %+v", task.Snapshot())
	}
}

func TestTaskZeroRetriesFailsAtOnce(t *testing.T) {
	t.Parallel()
	task := newTask(t, 0)
	_ = task.Start(t0)
	if err := task.Fail(t0, "x", mustPolicy(t, time.Second, time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.StatusFailed {
		t.Fatalf("status %v; want failed", task.Status())
	}
}

func TestTaskRelease(t *testing.T) {
	t.Parallel()
	task := newTask(t, 0)
	_ = task.Start(t0)
	if err := task.Release(t0, "handed back at shutdown"); err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.StatusPending || task.Attempts() != 1 || task.RetriesLeft() != 0 || task.LastError() != "handed back at shutdown" {
		t.Fatalf("after Release: %+v", task.Snapshot())
	}
}

// A hand-back keeps the attempt's number (attempts never go down, so the
// rerun gets a new number) and leaves the retry budget alone.
func TestHandBackNumbersEveryAttemptAndKeepsTheRetryBudget(t *testing.T) {
	t.Parallel()
	policy := mustPolicy(t, time.Second, time.Minute)
	task := newTask(t, 1)
	if task.RetriesLeft() != 1 {
		t.Fatalf("new task has %d retries left; want 1", task.RetriesLeft())
	}
	_ = task.Start(t0)
	_ = task.Release(t0, "handed back")
	_ = task.Start(t0)
	if task.Attempts() != 2 {
		t.Fatalf("rerun after a hand-back is attempt %d; want 2", task.Attempts())
	}
	_ = task.Fail(t0, "boom", policy, 0.5)
	if task.Status() != domain.StatusRetrying || task.RetriesLeft() != 0 || task.NextAttemptAt() != t0.Add(time.Second) {
		t.Fatalf("first failure after a hand-back: %+v; want a retry after the initial backoff", task.Snapshot())
	}
	_ = task.Requeue(t0)
	_ = task.Start(t0)
	_ = task.Release(t0, "handed back")
	_ = task.Start(t0)
	_ = task.Fail(t0, "boom", policy, 0.5)
	if task.Status() != domain.StatusFailed || task.Attempts() != 4 || task.RetriesLeft() != 0 {
		t.Fatalf("after two hand-backs and two failures: %+v; want failed at attempt 4", task.Snapshot())
	}
}

func TestTaskIllegalTransitions(t *testing.T) {
	t.Parallel()
	policy := mustPolicy(t, time.Second, time.Second)
	to := func(s domain.Status) *domain.Task {
		task := newTask(t, 1)
		switch s {
		case domain.StatusScheduled:
			_ = task.Schedule(t0.Add(time.Hour), t0)
		case domain.StatusRunning:
			_ = task.Start(t0)
		case domain.StatusRetrying:
			_ = task.Start(t0)
			_ = task.Fail(t0, "x", policy, 0)
		case domain.StatusSucceeded:
			_ = task.Start(t0)
			_ = task.Succeed(t0)
		case domain.StatusFailed:
			task = newTask(t, 0)
			_ = task.Start(t0)
			_ = task.Fail(t0, "x", policy, 0)
		case domain.StatusCancelled:
			_ = task.Cancel(t0)
		}
		if task.Status() != s {
			t.Fatalf("setup reached %v, want %v", task.Status(), s)
		}
		return task
	}
	actions := map[string]func(*domain.Task) error{
		"start":    func(k *domain.Task) error { return k.Start(t0) },
		"succeed":  func(k *domain.Task) error { return k.Succeed(t0) },
		"fail":     func(k *domain.Task) error { return k.Fail(t0, "x", policy, 0) },
		"requeue":  func(k *domain.Task) error { return k.Requeue(t0) },
		"release":  func(k *domain.Task) error { return k.Release(t0, "x") },
		"schedule": func(k *domain.Task) error { return k.Schedule(t0.Add(time.Hour), t0) },
		"make due": func(k *domain.Task) error { return k.Due(t0) },
		"cancel":   func(k *domain.Task) error { return k.Cancel(t0) },
		"retry":    func(k *domain.Task) error { return k.Retry(t0) },
		"delete":   func(k *domain.Task) error { return k.CheckDelete() },
	}
	allowed := map[domain.Status]map[string]bool{
		domain.StatusScheduled: {"make due": true, "cancel": true},
		domain.StatusPending:   {"start": true, "schedule": true, "cancel": true},
		domain.StatusRunning:   {"succeed": true, "fail": true, "release": true, "cancel": true},
		domain.StatusRetrying:  {"requeue": true, "cancel": true},
		domain.StatusSucceeded: {"delete": true},
		domain.StatusFailed:    {"retry": true, "delete": true},
		domain.StatusCancelled: {"retry": true, "delete": true},
	}
	for from, ok := range allowed {
		for name, act := range actions {
			t.Run(from.String()+"/"+name, func(t *testing.T) {
				task := to(from)
				before := task.Snapshot()
				err := act(task)
				if ok[name] {
					if err != nil {
						t.Fatalf("%s from %v: %v", name, from, err)
					}
					return
				}
				var te *domain.TransitionError
				if !errors.As(err, &te) || te.From != from || te.Action != name || !errors.Is(err, domain.ErrInvalidTransition) {
					t.Fatalf("%s from %v: error %v; want TransitionError", name, from, err)
				}
				if after := task.Snapshot(); after.Status != before.Status || after.Attempts != before.Attempts {
					t.Fatalf("refused %s changed the task", name)
				}
			})
		}
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	task := newTask(t, 0)
	if err := task.Schedule(t0.Add(time.Minute), t0); err != nil || task.Status() != domain.StatusScheduled || task.DueAt() != t0.Add(time.Minute) {
		t.Fatalf("scheduled a minute ahead: %v %+v", err, task.Snapshot())
	}
	if err := task.Due(t0.Add(time.Minute)); err != nil || task.Status() != domain.StatusPending || task.RunAt() != t0.Add(time.Minute) {
		t.Fatalf("due: %v %+v", err, task.Snapshot())
	}
	past := newTask(t, 0)
	if err := past.Schedule(t0.Add(-time.Hour), t0); err != nil || past.Status() != domain.StatusPending {
		t.Fatalf("a time in the past means now: %v %v", err, past.Status())
	}
	far := newTask(t, 0)
	var ve *domain.ValidationError
	if err := far.Schedule(t0.Add(domain.MaxScheduleAhead+time.Second), t0); !errors.As(err, &ve) || ve.Field != "run_at" {
		t.Fatalf("more than 366 days ahead: %v", err)
	}
}

func TestCancelAndRetryByHand(t *testing.T) {
	t.Parallel()
	policy := mustPolicy(t, time.Second, time.Second)
	task := newTask(t, 1)
	_ = task.Start(t0)
	if err := task.Cancel(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if task.Status() != domain.StatusCancelled || !strings.Contains(task.LastError(), "cancelled while attempt 1 was running") || task.FinishedAt().IsZero() {
		t.Fatalf("cancelled while running: %+v", task.Snapshot())
	}
	if err := task.Retry(t0.Add(2 * time.Second)); err != nil || task.Status() != domain.StatusPending || task.RetriesLeft() != 1 || task.Attempts() != 1 || !task.FinishedAt().IsZero() {
		t.Fatalf("retried by hand: %v %+v", err, task.Snapshot())
	}
	_ = task.Start(t0)
	_ = task.Fail(t0, "x", policy, 0)
	_ = task.Requeue(t0)
	_ = task.Start(t0)
	_ = task.Fail(t0, "x", policy, 0)
	if task.Status() != domain.StatusFailed || task.Attempts() != 3 {
		t.Fatalf("a fresh budget of one retry: %+v", task.Snapshot())
	}
	if err := task.Retry(t0); err != nil || task.RetriesLeft() != 1 {
		t.Fatalf("retry of a failed task: %v %+v", err, task.Snapshot())
	}
}

func TestResult(t *testing.T) {
	t.Parallel()
	if r := domain.NewResult([]byte(`{"ok":true}`), 64); r.Truncated || string(r.Data) != `{"ok":true}` {
		t.Fatalf("small result: %+v", r)
	}
	r := domain.NewResult([]byte(`"ééé"`), 4) // é is two bytes: never split one
	if !r.Truncated || string(r.Data) != `"é` {
		t.Fatalf("cut result: %+v %q", r, r.Data)
	}
	task := newTask(t, 0)
	_ = task.Start(t0)
	if err := task.SucceedWith(t0, r); err != nil || !task.Result().Truncated {
		t.Fatalf("succeed with result: %v %+v", err, task.Result())
	}
}

func TestRehydrateTask(t *testing.T) {
	t.Parallel()
	task := newTask(t, 2)
	_ = task.Start(t0.Add(time.Second))
	_ = task.Fail(t0.Add(2*time.Second), "boom", mustPolicy(t, time.Second, time.Minute), 0.5)
	snap := task.Snapshot()
	back, err := domain.RehydrateTask(snap)
	if err != nil {
		t.Fatal(err)
	}
	if back.Snapshot().NextAttemptAt != snap.NextAttemptAt || back.Status() != domain.StatusRetrying || back.Attempts() != 1 || back.LastError() != "boom" {
		t.Fatalf("round trip lost state: %+v", back.Snapshot())
	}
	for name, mutate := range map[string]func(*domain.TaskSnapshot){
		"priority":     func(s *domain.TaskSnapshot) { s.Priority = 10 },
		"status":       func(s *domain.TaskSnapshot) { s.Status = 0 },
		"attempts":     func(s *domain.TaskSnapshot) { s.Attempts = -1 },
		"retries_used": func(s *domain.TaskSnapshot) { s.RetriesUsed = 3 },
		"type":         func(s *domain.TaskSnapshot) { s.Type = "" },
	} {
		s := snap
		mutate(&s)
		var ve *domain.ValidationError
		if _, err := domain.RehydrateTask(s); !errors.As(err, &ve) || ve.Field != name {
			t.Errorf("bad %s: error %v", name, err)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		target error
		want   string
	}{
		{&domain.UnknownTypeError{Type: "x", Known: []string{"a", "b"}}, domain.ErrUnknownTaskType, `"x" is not a type this instance runs or accepts (known types: a, b)`},
		{&domain.TimeoutError{After: time.Second}, domain.ErrAttemptTimedOut, "timed out after 1s"},
		{&domain.PanicError{Value: "oops"}, domain.ErrHandlerPanicked, "panicked: oops"},
	} {
		if !errors.Is(tc.err, tc.target) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%v: want Is(%v) and message containing %q", tc.err, tc.target, tc.want)
		}
	}
}
