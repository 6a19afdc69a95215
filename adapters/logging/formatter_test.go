package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
)

func entry() *logrus.Entry {
	l := logrus.New()
	e := logrus.NewEntry(l).WithFields(logrus.Fields{
		"task_id":     uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057"),
		"type":        "example_task",
		"priority":    2,
		"duration_ms": int64(15),
		"error":       "webhook returned 500",
		"payload":     "{\"k\":\"v\\n\xff\"}\t",
		"types":       []string{"a", "b"},
		"ok":          true,
		"cause":       errors.New(`bad "x"`),
	})
	e.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	e.Level = logrus.WarnLevel
	e.Message = "task attempt failed; will retry"
	return e
}

func TestJSONFormatterMatchesEncodingJSON(t *testing.T) {
	out, err := (&Formatter{JSON: true}).Format(entry())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(out, []byte("}\n")) || bytes.Count(out, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", out)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("invalid JSON %q: %v", out, err)
	}
	want := map[string]any{
		"time": "2026-01-02T02:04:05.000000006Z", "level": "warning", "msg": "task attempt failed; will retry",
		"task_id": "01890a5d-ac96-774b-bcce-b302099a8057", "type": "example_task", "priority": 2.0,
		"duration_ms": 15.0, "error": "webhook returned 500", "payload": "{\"k\":\"v\\n\ufffd\"}\t",
		"types": []any{"a", "b"}, "ok": true, "cause": `bad "x"`,
	}
	for k, v := range want {
		if g, _ := json.Marshal(got[k]); string(g) != mustJSON(v) {
			t.Errorf("%s = %s; want %s", k, g, mustJSON(v))
		}
	}
	if len(got) != len(want) {
		t.Errorf("fields %v", got)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestTextFormatter(t *testing.T) {
	out, _ := (&Formatter{}).Format(entry())
	line := string(out)
	for _, part := range []string{
		`time="2026-01-02T02:04:05.000000006Z" level=warning msg="task attempt failed; will retry" `,
		`cause="bad \"x\""`, `duration_ms=15`, `error="webhook returned 500"`, `ok=true`, `priority=2`,
		`task_id=01890a5d-ac96-774b-bcce-b302099a8057`, `type=example_task`, `types="[a b]"`,
	} {
		if !strings.Contains(line, part) {
			t.Errorf("%q lacks %q", line, part)
		}
	}
	if strings.Index(line, "cause=") > strings.Index(line, "type=") {
		t.Error("fields are not sorted by name")
	}
}

func BenchmarkFormatters(b *testing.B) {
	for name, f := range map[string]logrus.Formatter{
		"ours-text":   &Formatter{},
		"ours-json":   &Formatter{JSON: true},
		"logrus-text": &logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano, DisableColors: true},
		"logrus-json": &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano},
	} {
		b.Run(name, func(b *testing.B) {
			l := logrus.New()
			l.SetOutput(io.Discard)
			l.SetFormatter(f)
			id := uuid.New()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				l.WithFields(logrus.Fields{"task_id": id, "type": "noop", "priority": 2, "attempt": 1, "duration_ms": int64(0)}).Info("task attempt succeeded")
			}
		})
	}
}

type panicky struct{}

func (*panicky) String() string               { panic("boom") }
func (*panicky) MarshalJSON() ([]byte, error) { panic("boom") }

type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

// clashEntry has fields that clash with the entry's own keys, values whose
// methods panic on a typed nil, and the kinds logrus renders specially.
func clashEntry() *logrus.Entry {
	l := logrus.New()
	fields := logrus.Fields{
		"msg":          "a field called msg",
		"level":        7,
		"time":         "a field called time",
		"logrus_error": "x",
		"fields.level": "loses to the renamed level, as in logrus",
		"nil_stringer": (*url.URL)(nil),
		"nil_error":    error((*nilErr)(nil)),
		"at":           time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC),
		"took":         1500 * time.Millisecond,
		"ratio":        0.25,
		"addr":         "127.0.0.1:8080",
		"list":         []int{1, 2},
		"struct":       struct{ A int }{A: 3},
		"task_id":      uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057"),
	}
	e := logrus.NewEntry(l).WithFields(fields)
	e.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	e.Level = logrus.InfoLevel
	e.Message = "the real message"
	return e
}

func TestJSONFormatterKeepsLogrusContract(t *testing.T) {
	ours, err := (&Formatter{JSON: true}).Format(clashEntry())
	if err != nil {
		t.Fatal(err)
	}
	// logrus's own JSONFormatter panics on a typed nil error; compare the
	// rest with it.
	forLogrus := clashEntry()
	delete(forLogrus.Data, "nil_error")
	theirs, err := (&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}).Format(forLogrus)
	if err != nil {
		t.Fatal(err)
	}
	// No duplicate keys: a decoder that keeps the last one would otherwise
	// lose the message.
	dec := json.NewDecoder(bytes.NewReader(ours))
	seen := map[string]bool{}
	_, _ = dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		if seen[k.(string)] {
			t.Fatalf("duplicate key %q in %s", k, ours)
		}
		seen[k.(string)] = true
		var skip json.RawMessage
		_ = dec.Decode(&skip)
	}
	var got, want map[string]any
	if err := json.Unmarshal(ours, &got); err != nil {
		t.Fatalf("%s: %v", ours, err)
	}
	_ = json.Unmarshal(theirs, &want)
	for k, v := range want {
		if g, w := mustJSON(got[k]), mustJSON(v); g != w {
			t.Errorf("%s = %s; logrus writes %s", k, g, w)
		}
	}
	if got["msg"] != "the real message" || got["fields.msg"] != "a field called msg" || got["level"] != "info" || got["fields.level"] != 7.0 {
		t.Fatalf("clashing fields: %s", ours)
	}
	if got["took"] != 1.5e9 || got["at"] != "2026-05-06T07:08:09.00000001Z" {
		t.Fatalf("time.Duration and time.Time must render as encoding/json does: %s", ours)
	}
	if got["nil_error"] != "<nil>" || got["nil_stringer"] != nil {
		t.Fatalf("typed nils: %s", ours)
	}
}

func TestTextFormatterMatchesLogrus(t *testing.T) {
	ours, err := (&Formatter{}).Format(clashEntry())
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := (&logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: time.RFC3339Nano}).Format(clashEntry())
	if err != nil {
		t.Fatal(err)
	}
	if string(ours) != string(theirs) {
		t.Fatalf("ours:   %s\nlogrus: %s", ours, theirs)
	}
}

func TestFormatterNeverPanics(t *testing.T) {
	e := clashEntry().WithField("marshal_panics", &panicky{}).WithField("typed_nil_panicky", (*panicky)(nil))
	for _, f := range []*Formatter{{}, {JSON: true}} {
		out, err := f.Format(e)
		if err != nil || !bytes.Contains(out, []byte("PANIC=")) {
			t.Fatalf("json=%v: %v %s", f.JSON, err, out)
		}
	}
}
