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

// submitFields are the fields POST /task accepts, each with its bit for
// spotting duplicates.
var submitFields = map[string]uint8{"type": 1, "payload": 2, "max_retries": 4, "priority": 8}

// submitRequest receives the fields raw, so absent, null and wrongly typed
// values can each get their own message.
type submitRequest struct {
	Type       json.RawMessage `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	MaxRetries json.RawMessage `json:"max_retries"`
	Priority   json.RawMessage `json:"priority"`
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
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return sub, badRequest("request body is empty: expected a JSON object with at least \"type\"")
	}
	if !utf8.Valid(body) {
		return sub, badRequest("request body is not valid UTF-8")
	}
	var req submitRequest
	if err := json.Unmarshal(body, &req); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) && strings.HasSuffix(syntax.Error(), "after top-level value") {
			return sub, badRequest("request body has data after the JSON object")
		}
		return sub, badRequest("request body is not a valid JSON object: %s", jsonProblem(err))
	}
	if trimmed[0] == 'n' { // a bare null decodes into the struct without error
		return sub, badRequest("request body must be a JSON object, not null")
	}
	// encoding/json matches keys case-insensitively and keeps the last of
	// duplicates; checking the keys themselves keeps the contract exact.
	if err := checkKeys(body); err != nil {
		return sub, err
	}

	switch {
	case req.Type == nil:
		return sub, badRequest("type: is required")
	case req.Type[0] != '"':
		return sub, badRequest("type: must be a string")
	case bytes.IndexByte(req.Type, '\\') < 0:
		sub.Type = string(req.Type[1 : len(req.Type)-1])
	default:
		_ = json.Unmarshal(req.Type, &sub.Type) // valid JSON string: cannot fail
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
	return sub, nil
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
func checkKeys(body []byte) error {
	var seen uint8
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
				bit, ok := submitFields[key]
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
		return badRequest("unknown field(s) %s: allowed fields are type, payload, max_retries, priority", list)
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
