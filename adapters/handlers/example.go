// Package handlers holds the built-in task handlers: example_task, which
// logs its payload, and webhooks, which hand each attempt to an HTTP
// endpoint so tasks can be served in any language.
package handlers

import (
	"context"

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

// Example logs the task's payload and succeeds.
type Example struct {
	log logrus.FieldLogger
}

var _ ports.Handler = (*Example)(nil)

// NewExample returns the example handler.
func NewExample(log logrus.FieldLogger) *Example { return &Example{log: log} }

// Handle logs the payload at info and returns nil.
func (e *Example) Handle(_ context.Context, task *domain.Task) error {
	e.log.WithFields(logrus.Fields{
		"task_id": task.ID(),
		"type":    task.Type(),
		"attempt": task.Attempts(),
		"payload": string(task.Payload()),
	}).Info("example_task ran")
	return nil
}
