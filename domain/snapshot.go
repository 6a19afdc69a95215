package domain

import (
	"time"

	"github.com/google/uuid"
)

// TaskSnapshot is a plain copy of a task's state, for brokers that store
// tasks outside the process. It carries no behaviour and no rules.
type TaskSnapshot struct {
	ID            uuid.UUID
	Type          string
	Payload       []byte
	Priority      int
	MaxRetries    int
	Status        Status
	Attempts      int
	RetriesUsed   int
	LastError     string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	StartedAt     time.Time
	FinishedAt    time.Time
	NextAttemptAt time.Time
	RunAt         time.Time
	Result        Result
	Key           string
}

// Snapshot returns a copy of the task's state.
func (t *Task) Snapshot() TaskSnapshot {
	return TaskSnapshot{
		ID:            t.id,
		Type:          t.taskType,
		Payload:       t.payload,
		Priority:      t.priority.Level(),
		MaxRetries:    t.maxRetries,
		Status:        t.status,
		Attempts:      t.attempts,
		RetriesUsed:   t.retriesUsed,
		LastError:     t.lastError,
		CreatedAt:     t.createdAt,
		UpdatedAt:     t.updatedAt,
		StartedAt:     t.startedAt,
		FinishedAt:    t.finishedAt,
		NextAttemptAt: t.nextAttemptAt,
		RunAt:         t.runAt,
		Result:        t.result,
		Key:           t.key,
	}
}

// RehydrateTask rebuilds a task that was stored earlier from its snapshot.
// It is not a way to create tasks (use NewTask): it exists so brokers can
// load what they saved. It returns a *ValidationError if the snapshot could
// not have come from a valid task.
func RehydrateTask(s TaskSnapshot) (*Task, error) {
	t, err := NewTask(s.ID, s.Type, s.Payload, Priority{}, s.MaxRetries, s.CreatedAt)
	if err != nil {
		return nil, err
	}
	if t.priority, err = ParsePriority(s.Priority); err != nil {
		return nil, err
	}
	if !s.Status.Valid() {
		return nil, invalid("status", "unknown status %d", uint8(s.Status))
	}
	if s.Attempts < 0 {
		return nil, invalid("attempts", "must not be negative, got %d", s.Attempts)
	}
	if s.RetriesUsed < 0 || s.RetriesUsed > s.MaxRetries {
		return nil, invalid("retries_used", "must be from 0 to max_retries %d, got %d", s.MaxRetries, s.RetriesUsed)
	}
	t.status = s.Status
	t.attempts = s.Attempts
	t.retriesUsed = s.RetriesUsed
	t.lastError = s.LastError
	t.createdAt = s.CreatedAt.UTC()
	t.updatedAt = s.UpdatedAt.UTC()
	t.startedAt = s.StartedAt.UTC()
	t.finishedAt = s.FinishedAt.UTC()
	t.nextAttemptAt = s.NextAttemptAt.UTC()
	if !s.RunAt.IsZero() {
		t.runAt = s.RunAt.UTC()
	}
	t.result = s.Result
	if s.Key != "" {
		if err := ValidateKey(s.Key); err != nil {
			return nil, err
		}
		t.key = s.Key
	}
	return t, nil
}
