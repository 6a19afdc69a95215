package domain

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Limits on what a task may hold.
const (
	MaxTypeLength     = 128
	MaxMaxRetries     = 100
	DefaultMaxRetries = 1
	// MaxScheduleAhead is how far ahead a task may be scheduled.
	MaxScheduleAhead = 366 * 24 * time.Hour
)

// Task is one unit of work: a type naming its handler, an opaque payload,
// and the record of its attempts. Its fields change only through the
// transition methods, which refuse moves the lifecycle does not allow.
//
// A Task is not safe for concurrent use; brokers hand out copies.
type Task struct {
	id            uuid.UUID
	taskType      string
	payload       []byte
	priority      Priority
	maxRetries    int
	status        Status
	attempts      int
	retriesUsed   int
	lastError     string
	createdAt     time.Time
	updatedAt     time.Time
	startedAt     time.Time
	finishedAt    time.Time
	nextAttemptAt time.Time
	runAt         time.Time
	result        Result
	key           string
}

// NewTask returns a pending task, or a *ValidationError naming the first
// field that breaks a rule: id must be set, taskType must pass
// ValidateType, maxRetries must be in 0..MaxMaxRetries. payload is kept as
// given and must not be modified afterwards.
func NewTask(id uuid.UUID, taskType string, payload []byte, priority Priority, maxRetries int, now time.Time) (*Task, error) {
	if id == uuid.Nil {
		return nil, invalid("id", "must not be empty")
	}
	if err := ValidateType(taskType); err != nil {
		return nil, err
	}
	if maxRetries < 0 || maxRetries > MaxMaxRetries {
		return nil, invalid("max_retries", "must be an integer from 0 to %d, got %d", MaxMaxRetries, maxRetries)
	}
	now = now.UTC()
	return &Task{
		id:         id,
		taskType:   taskType,
		payload:    payload,
		priority:   priority,
		maxRetries: maxRetries,
		status:     StatusPending,
		createdAt:  now,
		updatedAt:  now,
	}, nil
}

// ValidateType returns a *ValidationError for field "type" unless t is 1 to
// MaxTypeLength characters of ASCII letters, digits, '_', '-', '.' or ':'.
// The error names the first character that is not allowed and its
// position, counting characters (not bytes) from 1.
func ValidateType(t string) error {
	if t == "" {
		return invalid("type", "is required")
	}
	n := 0
	for _, c := range t {
		n++
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == ':'
		if !ok {
			return invalid("type", "may contain only letters, digits and _ - . : (found %q at position %d)", c, n)
		}
		if n > MaxTypeLength {
			return invalid("type", "must be at most %d characters", MaxTypeLength)
		}
	}
	return nil
}

// ID returns the task's id.
func (t *Task) ID() uuid.UUID { return t.id }

// Type returns the name of the handler that runs the task.
func (t *Task) Type() string { return t.taskType }

// Payload returns the task's payload; callers must not modify it.
func (t *Task) Payload() []byte { return t.payload }

// Priority returns the task's priority.
func (t *Task) Priority() Priority { return t.priority }

// MaxRetries returns how many times a failed attempt may be retried.
func (t *Task) MaxRetries() int { return t.maxRetries }

// Status returns where the task is in its lifecycle.
func (t *Task) Status() Status { return t.status }

// Attempts returns how many attempts have started. It never goes down:
// an attempt handed back unfinished still counts, so every attempt has a
// number of its own and a handler can tell a rerun.
func (t *Task) Attempts() int { return t.attempts }

// RetriesLeft returns how many more failed attempts will be retried. It is
// the retry budget, separate from the attempt count: an attempt handed
// back unfinished does not use it up.
func (t *Task) RetriesLeft() int { return t.maxRetries - t.retriesUsed }

// LastError returns the message of the most recent failure, or "".
func (t *Task) LastError() string { return t.lastError }

// CreatedAt returns when the task was submitted.
func (t *Task) CreatedAt() time.Time { return t.createdAt }

// UpdatedAt returns when the task last changed.
func (t *Task) UpdatedAt() time.Time { return t.updatedAt }

// StartedAt returns when the latest attempt started, or the zero time.
func (t *Task) StartedAt() time.Time { return t.startedAt }

// FinishedAt returns when the task succeeded or failed for good, or the
// zero time.
func (t *Task) FinishedAt() time.Time { return t.finishedAt }

// NextAttemptAt returns when a retrying task becomes pending again, or the
// zero time.
func (t *Task) NextAttemptAt() time.Time { return t.nextAttemptAt }

// RunAt returns the time the task was scheduled for, or the zero time if
// it was submitted to run at once.
func (t *Task) RunAt() time.Time { return t.runAt }

// DueAt returns when a task that waits for a time (scheduled or
// retrying) becomes pending, or the zero time.
func (t *Task) DueAt() time.Time {
	switch t.status {
	case StatusScheduled:
		return t.runAt
	case StatusRetrying:
		return t.nextAttemptAt
	}
	return time.Time{}
}

// Result returns what the last successful attempt returned, if anything.
func (t *Task) Result() Result { return t.result }

// Key returns the task's fairness key (a tenant, say), or "" for none.
func (t *Task) Key() string { return t.key }

// SetKey gives a new task its fairness key: tasks with different keys are
// served round-robin within a priority. It returns a *ValidationError for
// a bad key and a *TransitionError unless the task is new.
func (t *Task) SetKey(key string) error {
	if t.attempts > 0 || (t.status != StatusPending && t.status != StatusScheduled) {
		return &TransitionError{Action: "set the key of", From: t.status}
	}
	if err := ValidateKey(key); err != nil {
		return err
	}
	t.key = key
	return nil
}

// Schedule makes a new task wait until runAt: it becomes scheduled when
// runAt is after now, and stays pending (due at once) otherwise. It
// returns a *ValidationError for field "run_at" when runAt is more than
// MaxScheduleAhead after now, and a *TransitionError unless the task is a
// new pending one.
func (t *Task) Schedule(runAt, now time.Time) error {
	if t.status != StatusPending || t.attempts > 0 {
		return &TransitionError{Action: "schedule", From: t.status}
	}
	if runAt.Sub(now) > MaxScheduleAhead {
		return invalid("run_at", "must be at most %d days ahead, got %s", MaxScheduleAhead/(24*time.Hour), runAt.UTC().Format(time.RFC3339))
	}
	t.runAt = runAt.UTC()
	if runAt.After(now) {
		t.status = StatusScheduled
	}
	return nil
}

// Due makes a scheduled task pending once its time has come. It returns
// a *TransitionError unless the task is scheduled.
func (t *Task) Due(now time.Time) error {
	if t.status != StatusScheduled {
		return &TransitionError{Action: "make due", From: t.status}
	}
	t.status = StatusPending
	t.updatedAt = now.UTC()
	return nil
}

// Cancel ends a task that has not finished: it becomes cancelled, for
// good (never retried by itself). A running attempt's outcome no longer
// counts, and the last error says so. It returns a *TransitionError for a
// task that has already finished.
func (t *Task) Cancel(now time.Time) error {
	if t.status.Finished() {
		return &TransitionError{Action: "cancel", From: t.status}
	}
	now = now.UTC()
	if t.status == StatusRunning {
		t.lastError = fmt.Sprintf("cancelled while attempt %d was running; its outcome was discarded", t.attempts)
	} else {
		t.lastError = "cancelled before it ran again"
		if t.attempts == 0 {
			t.lastError = "cancelled before it ran"
		}
	}
	t.status = StatusCancelled
	t.nextAttemptAt = time.Time{}
	t.finishedAt = now
	t.updatedAt = now
	return nil
}

// Retry puts a failed or cancelled task back to work: it is pending again
// with a fresh retry budget (MaxRetries counts again from now; Attempts
// keeps counting). It returns a *TransitionError from any other status.
func (t *Task) Retry(now time.Time) error {
	if !t.status.DeadLetter() {
		return &TransitionError{Action: "retry", From: t.status}
	}
	t.status = StatusPending
	t.retriesUsed = 0
	t.finishedAt = time.Time{}
	t.nextAttemptAt = time.Time{}
	t.runAt = time.Time{}
	t.updatedAt = now.UTC()
	return nil
}

// CheckDelete returns a *TransitionError unless the task has finished:
// only a finished task may be deleted (cancel it first).
func (t *Task) CheckDelete() error {
	if !t.status.Finished() {
		return &TransitionError{Action: "delete", From: t.status}
	}
	return nil
}

// Start begins a new attempt of a pending task: it becomes running and its
// attempt count grows by one. It returns a *TransitionError otherwise.
func (t *Task) Start(now time.Time) error {
	if t.status != StatusPending {
		return &TransitionError{Action: "start", From: t.status}
	}
	now = now.UTC()
	t.status = StatusRunning
	t.attempts++
	t.startedAt = now
	t.nextAttemptAt = time.Time{}
	t.updatedAt = now
	return nil
}

// Succeed ends a running task's attempt in success with no result. It
// returns a *TransitionError unless the task is running.
func (t *Task) Succeed(now time.Time) error { return t.SucceedWith(now, Result{}) }

// SucceedWith ends a running task's attempt in success, keeping what the
// attempt returned. It returns a *TransitionError unless the task is
// running.
func (t *Task) SucceedWith(now time.Time, result Result) error {
	if t.status != StatusRunning {
		return &TransitionError{Action: "succeed", From: t.status}
	}
	now = now.UTC()
	t.result = result
	t.status = StatusSucceeded
	t.finishedAt = now
	t.updatedAt = now
	return nil
}

// Fail ends a running task's attempt in failure with the given cause. If
// the task has retries left it uses one and becomes retrying until now
// plus the policy's delay for that retry (the first retry waits the
// initial backoff; random in [0, 1) picks the jitter); otherwise it
// becomes failed. It returns a *TransitionError unless the task is
// running.
func (t *Task) Fail(now time.Time, cause string, policy RetryPolicy, random float64) error {
	if t.status != StatusRunning {
		return &TransitionError{Action: "fail", From: t.status}
	}
	now = now.UTC()
	t.lastError = cause
	t.updatedAt = now
	if t.retriesUsed < t.maxRetries {
		t.retriesUsed++
		t.status = StatusRetrying
		t.nextAttemptAt = now.Add(policy.NextDelay(t.retriesUsed, random))
		return nil
	}
	t.status = StatusFailed
	t.finishedAt = now
	return nil
}

// FailRetryAfter is Fail for a handler that asked for its next attempt no
// sooner than after: the wait is the longer of the policy's and after,
// never more than the policy's maximum.
func (t *Task) FailRetryAfter(now time.Time, cause string, policy RetryPolicy, random float64, after time.Duration) error {
	if err := t.Fail(now, cause, policy, random); err != nil || t.status != StatusRetrying {
		return err
	}
	if wait := min(after, policy.Max()); t.nextAttemptAt.Before(t.updatedAt.Add(wait)) {
		t.nextAttemptAt = t.updatedAt.Add(wait)
	}
	return nil
}

// FailNoRetry ends a running task's attempt in failure for good, whatever
// retries it had left: its handler asked not to retry. It returns a
// *TransitionError unless the task is running.
func (t *Task) FailNoRetry(now time.Time, cause string) error {
	if t.status != StatusRunning {
		return &TransitionError{Action: "fail", From: t.status}
	}
	now = now.UTC()
	t.lastError = cause
	t.retriesUsed = t.maxRetries
	t.status = StatusFailed
	t.finishedAt = now
	t.updatedAt = now
	return nil
}

// WillRetry reports whether the task is waiting for another attempt.
func (t *Task) WillRetry() bool { return t.status == StatusRetrying }

// Requeue makes a retrying task pending again once its backoff is over. It
// returns a *TransitionError unless the task is retrying.
func (t *Task) Requeue(now time.Time) error {
	if t.status != StatusRetrying {
		return &TransitionError{Action: "requeue", From: t.status}
	}
	t.status = StatusPending
	t.nextAttemptAt = time.Time{}
	t.updatedAt = now.UTC()
	return nil
}

// Release hands a running task back unfinished (its instance is stopping):
// it becomes pending again. The attempt keeps its number (Attempts does
// not go down) but does not use up a retry. reason is recorded as the
// last error. It returns a *TransitionError unless the task is running.
func (t *Task) Release(now time.Time, reason string) error {
	if t.status != StatusRunning {
		return &TransitionError{Action: "release", From: t.status}
	}
	t.status = StatusPending
	t.lastError = reason
	t.updatedAt = now.UTC()
	return nil
}
