package httpapi

import (
	"encoding/json"
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

type submitResponse struct {
	Message string `json:"message"`
	ID      string `json:"id"`
	Status  string `json:"status"`
}

type taskResponse struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Payload       json.RawMessage `json:"payload"`
	Priority      int             `json:"priority"`
	MaxRetries    int             `json:"max_retries"`
	Status        string          `json:"status"`
	Attempts      int             `json:"attempts"`
	RetriesLeft   int             `json:"retries_left"`
	LastError     string          `json:"last_error"`
	CreatedAt     string          `json:"created_at"`
	UpdatedAt     string          `json:"updated_at"`
	StartedAt     string          `json:"started_at,omitempty"`
	FinishedAt    string          `json:"finished_at,omitempty"`
	NextAttemptAt string          `json:"next_attempt_at,omitempty"`
}

type errorResponse struct {
	Error string `json:"error"`
}

func toTaskResponse(t *domain.Task) taskResponse {
	payload := t.Payload()
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	return taskResponse{
		ID:            t.ID().String(),
		Type:          t.Type(),
		Payload:       payload,
		Priority:      t.Priority().Level(),
		MaxRetries:    t.MaxRetries(),
		Status:        t.Status().String(),
		Attempts:      t.Attempts(),
		RetriesLeft:   t.RetriesLeft(),
		LastError:     t.LastError(),
		CreatedAt:     formatTime(t.CreatedAt()),
		UpdatedAt:     formatTime(t.UpdatedAt()),
		StartedAt:     formatTime(t.StartedAt()),
		FinishedAt:    formatTime(t.FinishedAt()),
		NextAttemptAt: formatTime(t.NextAttemptAt()),
	}
}

// formatTime renders t as RFC 3339 in UTC, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
