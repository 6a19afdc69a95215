package redis

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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
	Retries    int    `json:"r,omitempty"` // retries used
	LastError  string `json:"e,omitempty"`
	Created    string `json:"c"`
	Updated    string `json:"u"`
	Started    string `json:"st,omitempty"`
	Finished   string `json:"f,omitempty"`
	Next       string `json:"n,omitempty"`
}

func encodeRecord(t *domain.Task) (string, error) {
	s := t.Snapshot()
	b, err := json.Marshal(record{
		Type:       s.Type,
		Payload:    string(s.Payload),
		Priority:   s.Priority,
		MaxRetries: s.MaxRetries,
		Status:     s.Status.String(),
		Attempts:   s.Attempts,
		Retries:    s.RetriesUsed,
		LastError:  s.LastError,
		Created:    nanos(s.CreatedAt),
		Updated:    nanos(s.UpdatedAt),
		Started:    nanos(s.StartedAt),
		Finished:   nanos(s.FinishedAt),
		Next:       nanos(s.NextAttemptAt),
	})
	return string(b), err
}

// decodeRecord rebuilds the task with the given id from its stored record.
func decodeRecord(id uuid.UUID, raw string) (*domain.Task, error) {
	var r record
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("task %s: corrupt record: %w", id, err)
	}
	status, err := domain.ParseStatus(r.Status)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
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
		RetriesUsed:   r.Retries,
		LastError:     r.LastError,
		CreatedAt:     fromNanos(r.Created),
		UpdatedAt:     fromNanos(r.Updated),
		StartedAt:     fromNanos(r.Started),
		FinishedAt:    fromNanos(r.Finished),
		NextAttemptAt: fromNanos(r.Next),
	})
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	return t, nil
}

// runningView is the task as it stands while the attempt of the given
// running member runs: the stored record plus that attempt, started at the
// time the member's token ends with. A record already stored as running
// (an older writer) is taken as it is.
func runningView(t *domain.Task, member string) (*domain.Task, error) {
	if t.Status() == domain.StatusRunning {
		return t, nil
	}
	i := strings.LastIndexByte(member, ':')
	if i < 0 {
		return nil, fmt.Errorf("task %s: malformed running member %q", t.ID(), member)
	}
	if err := t.Start(fromNanos(member[i+1:])); err != nil {
		return nil, fmt.Errorf("task %s: %w", t.ID(), err)
	}
	return t, nil
}

// memberID returns the task id a running member belongs to.
func memberID(member string) (uuid.UUID, error) {
	id, _, _ := strings.Cut(member, "|")
	return uuid.Parse(id)
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
