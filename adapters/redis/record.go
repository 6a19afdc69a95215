package redis

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// record is how a task is stored: one compact JSON string per task. The
// scripts read and rewrite it with cjson, so every number that may pass 14
// significant digits (times, scores) is kept as a decimal string.
type record struct {
	Type       string `json:"t"`
	Payload    string `json:"p"`
	Priority   int    `json:"pr"`
	MaxRetries int    `json:"mr"`
	Status     string `json:"s"`
	Attempts   int    `json:"a"`
	LastError  string `json:"e,omitempty"`
	Created    string `json:"c"`
	Updated    string `json:"u"`
	Started    string `json:"st,omitempty"`
	Finished   string `json:"f,omitempty"`
	Next       string `json:"n,omitempty"`
	Score      string `json:"q,omitempty"` // place in the ready set, kept for hand-backs
}

func encodeRecord(t *domain.Task, score string) (string, error) {
	s := t.Snapshot()
	b, err := json.Marshal(record{
		Type:       s.Type,
		Payload:    string(s.Payload),
		Priority:   s.Priority,
		MaxRetries: s.MaxRetries,
		Status:     s.Status.String(),
		Attempts:   s.Attempts,
		LastError:  s.LastError,
		Created:    nanos(s.CreatedAt),
		Updated:    nanos(s.UpdatedAt),
		Started:    nanos(s.StartedAt),
		Finished:   nanos(s.FinishedAt),
		Next:       nanos(s.NextAttemptAt),
		Score:      score,
	})
	return string(b), err
}

// decodeRecord rebuilds the task with the given id from its stored record
// and returns it with its ready score.
func decodeRecord(id uuid.UUID, raw string) (*domain.Task, string, error) {
	var r record
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, "", fmt.Errorf("task %s: corrupt record: %w", id, err)
	}
	status, err := domain.ParseStatus(r.Status)
	if err != nil {
		return nil, "", fmt.Errorf("task %s: %w", id, err)
	}
	var payload []byte
	if r.Payload != "" {
		payload = []byte(r.Payload)
	}
	t, err := domain.RehydrateTask(domain.TaskSnapshot{
		ID:            id,
		Type:          r.Type,
		Payload:       payload,
		Priority:      r.Priority,
		MaxRetries:    r.MaxRetries,
		Status:        status,
		Attempts:      r.Attempts,
		LastError:     r.LastError,
		CreatedAt:     fromNanos(r.Created),
		UpdatedAt:     fromNanos(r.Updated),
		StartedAt:     fromNanos(r.Started),
		FinishedAt:    fromNanos(r.Finished),
		NextAttemptAt: fromNanos(r.Next),
	})
	if err != nil {
		return nil, "", fmt.Errorf("task %s: %w", id, err)
	}
	return t, r.Score, nil
}

func nanos(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func fromNanos(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || s == "" {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func jsonUnmarshal(raw string, v any) error { return json.Unmarshal([]byte(raw), v) }
