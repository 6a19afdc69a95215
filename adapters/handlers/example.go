// Package handlers holds the built-in task handlers: example_task, which
// logs what its payload holds, and webhooks, which hand each attempt to
// an HTTP endpoint so tasks can be served in any language.
package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Type names of the built-in handlers.
const (
	ExampleType = "example_task"
	NoopType    = "noop"
)

// Noop does nothing and succeeds: a cheap task type for smoke tests and
// load tests of a deployment.
var Noop = ports.HandlerFunc(func(context.Context, *domain.Task) error { return nil })

// Example logs the size and top-level keys of the task's payload (never
// its values, which may hold secrets) and succeeds.
type Example struct {
	log logrus.FieldLogger
}

var _ ports.Handler = (*Example)(nil)

// NewExample returns the example handler.
func NewExample(log logrus.FieldLogger) *Example { return &Example{log: log} }

// maxLoggedKeys bounds the keys the example handler logs, each cut to
// maxKeyChars characters.
const (
	maxLoggedKeys = 10
	maxKeyChars   = 64
)

// Handle logs the payload's size and keys at info and returns nil.
func (e *Example) Handle(_ context.Context, task *domain.Task) error {
	keys, more := payloadKeys(task.Payload())
	fields := logrus.Fields{
		"task_id":       task.ID(),
		"type":          task.Type(),
		"attempt":       task.Attempts(),
		"payload_bytes": len(task.Payload()),
		"payload_keys":  keys,
	}
	if more > 0 {
		fields["payload_keys_more"] = more
	}
	e.log.WithFields(fields).Info("example_task ran")
	return nil
}

// payloadKeys returns the sorted top-level keys of a JSON object payload,
// at most maxLoggedKeys of them each cut short, and how many more there
// are.
func payloadKeys(payload []byte) (keys []string, more int) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return []string{}, 0
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			break
		}
		k, _ := t.(string)
		if len(keys) == maxLoggedKeys {
			more++
			continue
		}
		if utf8.RuneCountInString(k) > maxKeyChars {
			k = string([]rune(k)[:maxKeyChars]) + "…"
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if keys == nil {
		keys = []string{}
	}
	return keys, more
}
