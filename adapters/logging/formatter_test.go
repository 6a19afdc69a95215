package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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
