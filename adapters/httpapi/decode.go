package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// requestError is a problem with the request itself, reported with status.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

var submitFields = map[string]bool{"type": true, "payload": true, "max_retries": true, "priority": true}

// readBody reads at most limit bytes of the request body, reporting an
// oversized body as 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &requestError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body is larger than the limit of %d bytes", tooBig.Limit)}
	case err != nil:
		return nil, badRequest("cannot read request body: %v", err)
	}
	return body, nil
}

// decodeSubmission parses a POST /task body strictly: one JSON object with
// only the known fields, each of the right JSON type. Range checks are the
// domain's; this only makes sure the values are what they claim to be.
func decodeSubmission(body []byte) (ports.Submission, error) {
	sub := ports.Submission{Payload: []byte("{}"), MaxRetries: domain.DefaultMaxRetries}
	if len(bytes.TrimSpace(body)) == 0 {
		return sub, badRequest("request body is empty: expected a JSON object with at least \"type\"")
	}
	if !utf8.Valid(body) {
		return sub, badRequest("request body is not valid UTF-8")
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&fields); err != nil {
		return sub, badRequest("request body is not a valid JSON object: %s", jsonProblem(err))
	}
	if fields == nil {
		return sub, badRequest("request body must be a JSON object, not null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return sub, badRequest("request body has data after the JSON object")
	}
	if unknown := unknownFields(fields); len(unknown) > 0 {
		return sub, badRequest("unknown field(s) %s: allowed fields are type, payload, max_retries, priority", strings.Join(unknown, ", "))
	}

	raw, ok := fields["type"]
	if !ok {
		return sub, badRequest("type: is required")
	}
	if isNull(raw) || json.Unmarshal(raw, &sub.Type) != nil {
		return sub, badRequest("type: must be a string")
	}
	if raw, ok := fields["payload"]; ok && !isNull(raw) {
		if raw[0] != '{' {
			return sub, badRequest("payload: must be a JSON object")
		}
		sub.Payload = raw
	}
	if err := decodeInt(fields, "max_retries", domain.MaxMaxRetries, &sub.MaxRetries); err != nil {
		return sub, err
	}
	if err := decodeInt(fields, "priority", domain.MaxPriority, &sub.Priority); err != nil {
		return sub, err
	}
	return sub, nil
}

// decodeInt sets *dst from an optional integer field, leaving the default
// when the field is absent. null, strings and fractions are refused.
func decodeInt(fields map[string]json.RawMessage, name string, max int, dst *int) error {
	raw, ok := fields[name]
	if !ok {
		return nil
	}
	if isNull(raw) || raw[0] == '"' || json.Unmarshal(raw, dst) != nil {
		return badRequest("%s: must be an integer from 0 to %d, got %s", name, max, truncate(string(raw), 40))
	}
	return nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func unknownFields(fields map[string]json.RawMessage) []string {
	var unknown []string
	for k := range fields {
		if !submitFields[k] {
			unknown = append(unknown, fmt.Sprintf("%q", truncate(k, 40)))
		}
	}
	sort.Strings(unknown)
	return unknown
}

// jsonProblem turns a decoder error into words a client can act on.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("%s (at byte %d)", syntax.Error(), syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("expected an object, got a JSON %s", typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return err.Error()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
