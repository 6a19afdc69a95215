package httpapi

import (
	"encoding/json"
	"time"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

type submitResponse struct {
	Message string `json:"message"`
	ID      string `json:"id"`
	Status  string `json:"status"`
}

type batchResponse struct {
	Message string   `json:"message"`
	IDs     []string `json:"ids"`
}

type taskResponse struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Payload         json.RawMessage `json:"payload,omitempty"`
	Priority        int             `json:"priority"`
	Key             string          `json:"key,omitempty"`
	MaxRetries      int             `json:"max_retries"`
	Status          string          `json:"status"`
	Attempts        int             `json:"attempts"`
	RetriesLeft     int             `json:"retries_left"`
	LastError       string          `json:"last_error"`
	CreatedAt       string          `json:"created_at"`
	UpdatedAt       string          `json:"updated_at"`
	StartedAt       string          `json:"started_at,omitempty"`
	FinishedAt      string          `json:"finished_at,omitempty"`
	NextAttemptAt   string          `json:"next_attempt_at,omitempty"`
	RunAt           string          `json:"run_at,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	ResultTruncated bool            `json:"result_truncated,omitempty"`
}

type listResponse struct {
	Tasks      []taskResponse `json:"tasks"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

type statsResponse struct {
	Counts                  map[string]int64            `json:"counts"`
	Types                   map[string]map[string]int64 `json:"types"`
	OldestPendingAgeSeconds float64                     `json:"oldest_pending_age_seconds"`
}

type typeResponse struct {
	Name string `json:"name"`
	// Runs says whether the instance that answered has the type's
	// handler; other instances may.
	Runs   bool             `json:"runs_here"`
	Limits *limitsResponse  `json:"limits,omitempty"`
	Paused bool             `json:"paused"`
	Counts map[string]int64 `json:"counts"`
}

type limitsResponse struct {
	Concurrency int    `json:"concurrency,omitempty"`
	Rate        int    `json:"rate,omitempty"`
	Period      string `json:"period,omitempty"`
}

type typesResponse struct {
	Types []typeResponse `json:"types"`
}

type pausedResponse struct {
	Type   string `json:"type"`
	Paused bool   `json:"paused"`
}

type retriedResponse struct {
	Retried int `json:"retried"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// toTaskResponse renders a task; full adds its payload and result (a list
// leaves them out).
func toTaskResponse(t *domain.Task, full bool) taskResponse {
	r := taskResponse{
		ID:            t.ID().String(),
		Type:          t.Type(),
		Priority:      t.Priority().Level(),
		Key:           t.Key(),
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
		RunAt:         formatTime(t.RunAt()),
	}
	if !full {
		return r
	}
	r.Payload = t.Payload()
	if len(r.Payload) == 0 {
		r.Payload = []byte("{}")
	}
	if res := t.Result(); t.Status() == domain.StatusSucceeded && !res.Empty() {
		r.ResultTruncated = res.Truncated
		if res.Truncated || !json.Valid(res.Data) {
			// Cut bytes are not JSON: show them as text.
			r.Result, _ = json.Marshal(string(res.Data))
		} else {
			r.Result = res.Data
		}
	}
	return r
}

func toStatsResponse(st ports.Stats, now time.Time) statsResponse {
	out := statsResponse{Counts: map[string]int64{}, Types: map[string]map[string]int64{}}
	for _, s := range domain.Statuses() {
		out.Counts[s.String()] = 0
	}
	for typ, byStatus := range st.ByType {
		m := map[string]int64{}
		for s, n := range byStatus {
			m[s.String()] = n
			out.Counts[s.String()] += n
		}
		out.Types[typ] = m
	}
	if !st.OldestPending.IsZero() {
		out.OldestPendingAgeSeconds = max(0, now.Sub(st.OldestPending).Seconds())
	}
	return out
}

// formatTime renders t as RFC 3339 in UTC, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func toTypesResponse(infos []ports.TypeInfo) typesResponse {
	out := typesResponse{Types: make([]typeResponse, len(infos))}
	for i, ti := range infos {
		r := typeResponse{Name: ti.Name, Runs: ti.Runs, Paused: ti.Paused, Counts: map[string]int64{}}
		for _, s := range domain.Statuses() {
			r.Counts[s.String()] = ti.Counts[s]
		}
		if l := ti.Limits; l.Concurrency > 0 || l.Rate > 0 {
			r.Limits = &limitsResponse{Concurrency: l.Concurrency, Rate: l.Rate}
			if l.Rate > 0 {
				r.Limits.Period = l.Period.String()
			}
		}
		out.Types[i] = r
	}
	return out
}
