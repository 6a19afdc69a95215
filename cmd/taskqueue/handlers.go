package main

import (
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/ports"
)

// builtinHandlers returns the handlers compiled into the binary, keyed by
// task type. To run your own Go code for a task type, implement
// ports.Handler (or use ports.HandlerFunc) and add it here.
func builtinHandlers(log logrus.FieldLogger) map[string]ports.Handler {
	return map[string]ports.Handler{
		handlers.ExampleType: handlers.NewExample(log),
		handlers.NoopType:    handlers.Noop,
	}
}
