package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
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

// fieldSet is the keys a JSON object may have, each with its bit for
// spotting duplicates.
type fieldSet struct {
	bits map[string]uint16
	list string // for messages
}

func newFieldSet(names ...string) fieldSet {
	f := fieldSet{bits: map[string]uint16{}, list: strings.Join(names, ", ")}
	for i, n := range names {
		f.bits[n] = 1 << i
	}
	return f
}

// The fields each request body accepts.
var (
	submitFields = newFieldSet("type", "payload", "max_retries", "priority", "run_at", "delay", "key")
	batchFields  = newFieldSet("tasks")
	retryFields  = newFieldSet("status", "type")
)

// submitRequest receives the fields raw, so absent, null and wrongly typed
// values can each get their own message.
type submitRequest struct {
	Type       json.RawMessage `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	MaxRetries json.RawMessage `json:"max_retries"`
	Priority   json.RawMessage `json:"priority"`
	RunAt      json.RawMessage `json:"run_at"`
	Delay      json.RawMessage `json:"delay"`
	Key        json.RawMessage `json:"key"`
}

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
	var req submitRequest
	if err := decodeObject(body, &req, submitFields); err != nil {
		return sub, err
	}
	var err error
	if sub.Type, err = decodeString(req.Type, "type", true); err != nil {
		return sub, err
	}
	if req.Payload != nil && string(req.Payload) != "null" {
		if req.Payload[0] != '{' {
			return sub, badRequest("payload: must be a JSON object")
		}
		sub.Payload = req.Payload
	}
	if err := decodeInt(req.MaxRetries, "max_retries", domain.MaxMaxRetries, &sub.MaxRetries); err != nil {
		return sub, err
	}
	if err := decodeInt(req.Priority, "priority", domain.MaxPriority, &sub.Priority); err != nil {
		return sub, err
	}
	if req.RunAt != nil && req.Delay != nil {
		return sub, badRequest("run_at, delay: give one of them, not both")
	}
	if req.RunAt != nil {
		raw, err := decodeString(req.RunAt, "run_at", false)
		if err != nil {
			return sub, err
		}
		if sub.RunAt, err = time.Parse(time.RFC3339Nano, raw); err != nil {
			return sub, badRequest("run_at: must be an RFC 3339 time with a zone, such as 2026-11-27T15:04:05Z, got %s", quoted(raw))
		}
	}
	if req.Delay != nil {
		raw, err := decodeString(req.Delay, "delay", false)
		if err != nil {
			return sub, err
		}
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			return sub, badRequest("delay: must be a duration such as \"90s\" or \"2h\", got %s", quoted(raw))
		case d < 0:
			return sub, badRequest("delay: must not be negative, got %s", quoted(raw))
		case d > domain.MaxScheduleAhead:
			return sub, badRequest("delay: must be at most %d days, got %s", domain.MaxScheduleAhead/(24*time.Hour), quoted(raw))
		}
		sub.Delay = d
	}
	if req.Key != nil {
		if sub.Key, err = decodeString(req.Key, "key", false); err != nil {
			return sub, err
		}
		if err := domain.ValidateKey(sub.Key); err != nil {
			return sub, err
		}
	}
	return sub, nil
}

// decodeObject parses body as exactly one JSON object into dst, refusing
// keys not in fields and repeated keys.
func decodeObject(body []byte, dst any, fields fieldSet) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return badRequest("request body is empty: expected a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequest("request body is not valid UTF-8")
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) && strings.HasSuffix(syntax.Error(), "after top-level value") {
			return badRequest("request body has data after the JSON object")
		}
		return badRequest("request body is not a valid JSON object: %s", jsonProblem(err))
	}
	if trimmed[0] == 'n' { // a bare null decodes into the struct without error
		return badRequest("request body must be a JSON object, not null")
	}
	// encoding/json matches keys case-insensitively and keeps the last of
	// duplicates; checking the keys themselves keeps the contract exact.
	return checkKeys(body, fields)
}

// decodeString returns a JSON string field; an absent one is "" unless
// required.
func decodeString(raw json.RawMessage, name string, required bool) (string, error) {
	switch {
	case raw == nil && required:
		return "", badRequest("%s: is required", name)
	case raw == nil:
		return "", nil
	case raw[0] != '"':
		return "", badRequest("%s: must be a string", name)
	case bytes.IndexByte(raw, '\\') < 0:
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	_ = json.Unmarshal(raw, &s) // valid JSON string: cannot fail
	return s, nil
}

// decodeBatch parses a POST /tasks body: {"tasks": [<submission>, ...]}.
// A bad element's error names it: tasks[3].priority: ...
func decodeBatch(body []byte) ([]ports.Submission, error) {
	var req struct {
		Tasks json.RawMessage `json:"tasks"`
	}
	if err := decodeObject(body, &req, batchFields); err != nil {
		return nil, err
	}
	if req.Tasks == nil || req.Tasks[0] != '[' {
		return nil, badRequest("tasks: is required and must be an array of tasks")
	}
	var elems []json.RawMessage
	_ = json.Unmarshal(req.Tasks, &elems) // a valid JSON array: cannot fail
	subs := make([]ports.Submission, len(elems))
	for i, raw := range elems {
		sub, err := decodeSubmission(raw)
		if err != nil {
			var re *requestError
			msg := err.Error()
			if errors.As(err, &re) {
				msg = re.msg
			}
			if rest, ok := strings.CutPrefix(msg, "request body"); ok {
				return nil, badRequest("tasks[%d]%s", i, rest)
			}
			return nil, badRequest("tasks[%d].%s", i, msg)
		}
		subs[i] = sub
	}
	return subs, nil
}

// decodeRetry parses a POST /tasks/retry body: {"status": ..., "type": ...}.
func decodeRetry(body []byte) (domain.Status, string, error) {
	var req struct {
		Status json.RawMessage `json:"status"`
		Type   json.RawMessage `json:"type"`
	}
	if err := decodeObject(body, &req, retryFields); err != nil {
		return 0, "", err
	}
	raw, err := decodeString(req.Status, "status", true)
	if err != nil {
		return 0, "", err
	}
	status, err := domain.ParseStatus(raw)
	if err != nil {
		return 0, "", badRequest("status: must be failed or cancelled, got %s", quoted(raw))
	}
	typ, err := decodeString(req.Type, "type", false)
	return status, typ, err
}

// decodeInt sets *dst from an optional integer field, leaving the default
// when the field is absent. Only integer literals are taken: null, strings,
// fractions and exponents are refused.
func decodeInt(raw json.RawMessage, name string, max int, dst *int) error {
	if raw == nil {
		return nil
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return badRequest("%s: must be an integer from 0 to %d, got %s", name, max, truncate(string(raw), 64))
	}
	*dst = n
	return nil
}

// checkKeys returns a 400 naming the unknown or repeated top-level keys of
// body, which must already be known to be one valid JSON object.
func checkKeys(body []byte, fields fieldSet) error {
	var seen uint16
	var unknown, repeated []string
	moreUnknown := 0
	depth := 0
	expectKey := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		case '"':
			end := stringEnd(body, i)
			if depth == 1 && expectKey {
				key := string(body[i+1 : end])
				if bytes.IndexByte(body[i:end], '\\') >= 0 {
					_ = json.Unmarshal(body[i:end+1], &key)
				}
				bit, ok := fields.bits[key]
				switch {
				case !ok && len(unknown) == maxListed:
					moreUnknown++
				case !ok:
					unknown = append(unknown, quoted(key))
				case seen&bit != 0:
					repeated = append(repeated, strconv.Quote(key))
				}
				seen |= bit
				expectKey = false
			}
			i = end
		}
	}
	if len(unknown) > 0 {
		list := strings.Join(unknown, ", ")
		if moreUnknown > 0 {
			list += fmt.Sprintf(" and %d more", moreUnknown)
		}
		return badRequest("unknown field(s) %s: allowed fields are %s", list, fields.list)
	}
	if len(repeated) > 0 {
		return badRequest("field(s) %s given more than once", strings.Join(repeated, ", "))
	}
	return nil
}

// stringEnd returns the index of the quote closing the JSON string that
// opens at body[start].
func stringEnd(body []byte, start int) int {
	for i := start + 1; i < len(body); i++ {
		switch body[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(body) - 1
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

// maxListed is how many offending keys an error names.
const maxListed = 5

// truncate cuts s to its first n characters (not bytes, so a character is
// never split), marking the cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	chars := 0
	for i := range s {
		if chars == n {
			return s[:i] + "…"
		}
		chars++
	}
	return s
}
