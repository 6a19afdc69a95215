package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeSubmission checks that no body crashes the decoder and that
// whatever it accepts is well-formed: valid UTF-8 JSON with an object
// payload and integers that came from integer literals.
func FuzzDecodeSubmission(f *testing.F) {
	for _, seed := range []string{
		`{"type":"example_task","payload":{"key":"value"},"max_retries":3,"priority":2}`,
		`{"type":"x"}`, `{"type":"x","payload":null}`, `{"type":"x","priority":2.5}`,
		`{"type":"x","max_retries":"1"}`, `{"type":null}`, `{"type":"x"} {}`, `[]`, `null`, ``,
		`{"type":"x","payload":[]}`, "{\"type\":\"\xff\"}", `{"type":"x","extra":1}`,
		`{"type":"x","priority":-1}`, `{"type":"x","priority":1e1}`, `{"payload":{"a":{"b":[1,2,{"c":null}]}},"type":"t"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sub, err := decodeSubmission(body)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.status != http.StatusBadRequest || re.msg == "" {
				t.Fatalf("error %v is not a 400 request error", err)
			}
			return
		}
		if !utf8.Valid(body) || !json.Valid(body) {
			t.Fatalf("accepted invalid body %q", body)
		}
		var payload map[string]any
		if err := json.Unmarshal(sub.Payload, &payload); err != nil || payload == nil {
			t.Fatalf("accepted payload %q that is not an object", sub.Payload)
		}
	})
}

func TestDecodeSubmissionValues(t *testing.T) {
	for _, tc := range []struct {
		body, typ, payload string
		maxRetries, prio   int
	}{
		{`{"type":"a\u0020b"}`, "a b", "{}", 1, 0},
		{` {"priority":-0,"type":"x","max_retries":0,"payload":{"a":[1,{"b":null}]}} `, "x", `{"a":[1,{"b":null}]}`, 0, 0},
		{`{"type":"x","priority":-3,"max_retries":100}`, "x", "{}", 100, -3},
	} {
		sub, err := decodeSubmission([]byte(tc.body))
		if err != nil || sub.Type != tc.typ || string(sub.Payload) != tc.payload || sub.MaxRetries != tc.maxRetries || sub.Priority != tc.prio {
			t.Errorf("%s: got %+v, %v", tc.body, sub, err)
		}
	}
}
