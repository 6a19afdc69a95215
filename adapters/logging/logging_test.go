package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/taskqueue/taskqueue/adapters/logging"
)

func TestJSONLinesAreObjects(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.WithField("task_id", "x").Info("one")
	log.Debug("hidden")
	log.WithField("error", "boom").Warn("two")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
	}
}

func TestTextAndBadSettings(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New(&buf, "debug", "text")
	if err != nil {
		t.Fatal(err)
	}
	log.WithField("task_id", "x").Debug("hello")
	if !strings.Contains(buf.String(), "task_id=x") {
		t.Fatalf("text line %q", buf.String())
	}
	if _, err := logging.New(&buf, "loud", "text"); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("bad level: %v", err)
	}
	if _, err := logging.New(&buf, "info", "xml"); err == nil || !strings.Contains(err.Error(), "log-format") {
		t.Fatalf("bad format: %v", err)
	}
}

// Only the documented levels are taken: logrus would also accept trace,
// panic (which silences every line, start-up included), fatal and
// warning.
func TestOnlyDocumentedLevels(t *testing.T) {
	for _, ok := range []string{"debug", "info", "warn", "error"} {
		if _, err := logging.New(&bytes.Buffer{}, ok, "text"); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"trace", "panic", "fatal", "warning", "INFO", ""} {
		if _, err := logging.New(&bytes.Buffer{}, bad, "text"); err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
			t.Errorf("%q: %v; want it refused naming the levels", bad, err)
		}
	}
}
