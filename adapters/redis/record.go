package redis

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// A task is stored as one hash, {PREFIX}:t:<id>, so that `HGETALL`
// answers "where is this task" and every read is O(1):
//
//   - d, what was submitted, written once: {"t": type, "mr": max retries,
//     "c": created (Unix ns), "p": the payload exactly as submitted}.
//   - s, the state, rewritten on every move (by Go, or by the scripts with
//     cjson): type and priority (the scripts need them), status, attempts,
//     retries used, last error and times, fairness key (fk); while an
//     attempt runs also its lease token (k), lease deadline (l, Unix ms),
//     instance (i) and place in its key's ready FIFO (q).
//   - r, the result of the attempt that succeeded, if it returned one.
//
// Numbers that may pass 14 significant digits (times, scores) are decimal
// strings, because cjson keeps only 14.

// data is the d field without its payload, which is appended raw so the
// bytes a client submitted are the bytes it reads back.
type data struct {
	Type       string `json:"t"`
	MaxRetries int    `json:"mr"`
	Created    string `json:"c"`
	// PayloadString holds a payload that is not valid JSON (only Go code
	// can make one), instead of p.
	PayloadString *string `json:"ps,omitempty"`
}

// dataRead is data as decoded, with the raw payload.
type dataRead struct {
	data
	Payload json.RawMessage `json:"p"`
}

// state is the s field. The scripts set the running fields when an
// attempt starts (keeping ps and pu to undo a start nobody ran) and
// renew l; Go writes the rest. Token stays after its owner records the
// outcome, which tells a settle retried after a lost reply that it
// already landed.
type state struct {
	Type        string `json:"ty"`
	Priority    int    `json:"pr"`
	Status      string `json:"s"`
	Attempts    int    `json:"a"`
	Retries     int    `json:"r,omitempty"` // retries used
	LastError   string `json:"e,omitempty"`
	Updated     string `json:"u"`
	Started     string `json:"st,omitempty"`
	Finished    string `json:"f,omitempty"`
	Next        string `json:"n,omitempty"`
	RunAt       string `json:"ra,omitempty"`
	Truncated   bool   `json:"rt,omitempty"` // the result was cut
	Key         string `json:"fk,omitempty"`
	Token       string `json:"k,omitempty"`
	Lease       string `json:"l,omitempty"`
	Instance    string `json:"i,omitempty"`
	Score       string `json:"q,omitempty"`
	PrevStarted string `json:"ps,omitempty"`
	PrevUpdated string `json:"pu,omitempty"`
}

// encodeData returns the d field of t.
func encodeData(t *domain.Task) (string, error) {
	d := data{Type: t.Type(), MaxRetries: t.MaxRetries(), Created: nanos(t.CreatedAt())}
	payload := t.Payload()
	raw := len(payload) > 0 && json.Valid(payload)
	if len(payload) > 0 && !raw {
		s := string(payload)
		d.PayloadString = &s
	}
	head, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	if !raw {
		return string(head), nil
	}
	out := make([]byte, 0, len(head)+len(payload)+6)
	out = append(out, head[:len(head)-1]...)
	out = append(out, `,"p":`...)
	out = append(out, payload...)
	out = append(out, '}')
	return string(out), nil
}

// encodeState returns the s field of t as it is between attempts, with
// token kept when the attempt's owner writes it.
func encodeState(t *domain.Task, token string) (string, error) {
	s := t.Snapshot()
	b, err := json.Marshal(state{
		Type:      s.Type,
		Priority:  s.Priority,
		Status:    s.Status.String(),
		Attempts:  s.Attempts,
		Retries:   s.RetriesUsed,
		LastError: s.LastError,
		Updated:   nanos(s.UpdatedAt),
		Started:   nanos(s.StartedAt),
		Finished:  nanos(s.FinishedAt),
		Next:      nanos(s.NextAttemptAt),
		RunAt:     nanos(s.RunAt),
		Truncated: s.Result.Truncated,
		Key:       s.Key,
		Token:     token,
	})
	return string(b), err
}

// decodeRecord rebuilds the task with the given id from its stored fields
// (result may be empty), and returns its state too (for the lease
// fields).
func decodeRecord(id uuid.UUID, rawData, rawState, result string) (*domain.Task, state, error) {
	var d dataRead
	var s state
	if err := json.Unmarshal([]byte(rawData), &d); err != nil {
		return nil, s, fmt.Errorf("task %s: corrupt record: %w", id, err)
	}
	if err := json.Unmarshal([]byte(rawState), &s); err != nil {
		return nil, s, fmt.Errorf("task %s: corrupt state: %w", id, err)
	}
	status, err := domain.ParseStatus(s.Status)
	if err != nil {
		return nil, s, fmt.Errorf("task %s: %w", id, err)
	}
	var payload []byte
	switch {
	case d.PayloadString != nil:
		payload = []byte(*d.PayloadString)
	case len(d.Payload) > 0:
		payload = d.Payload
	}
	t, err := domain.RehydrateTask(domain.TaskSnapshot{
		ID:            id,
		Type:          d.Type,
		Payload:       payload,
		Priority:      s.Priority,
		MaxRetries:    d.MaxRetries,
		Status:        status,
		Attempts:      s.Attempts,
		RetriesUsed:   s.Retries,
		LastError:     s.LastError,
		CreatedAt:     fromNanos(d.Created),
		UpdatedAt:     fromNanos(s.Updated),
		StartedAt:     fromNanos(s.Started),
		FinishedAt:    fromNanos(s.Finished),
		NextAttemptAt: fromNanos(s.Next),
		RunAt:         fromNanos(s.RunAt),
		Result:        domain.Result{Data: bytesOrNil(result), Truncated: s.Truncated},
		Key:           s.Key,
	})
	if err != nil {
		return nil, s, fmt.Errorf("task %s: %w", id, err)
	}
	return t, s, nil
}

func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
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

func fromMillis(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || s == "" {
		return time.Time{}
	}
	return time.UnixMilli(n)
}
