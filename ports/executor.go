//go:generate go run github.com/golang/mock/mockgen -source=$GOFILE -destination=mocks/executor.go -package=mocks

package ports

import (
	"context"

	"github.com/taskqueue/taskqueue/domain"
)

// Executor runs work concurrently on a bounded pool of workers.
type Executor interface {
	// Go waits for a free worker, starts work on it and returns without
	// waiting for work to end. work gets a context that stays alive while
	// the executor runs and is cancelled when it is stopped for good. Go
	// returns ctx's error if ctx ends before a worker is free, and
	// domain.ErrShuttingDown once the executor is stopping.
	Go(ctx context.Context, work func(ctx context.Context)) error
}

// Handler does the work of one task type.
type Handler interface {
	// Handle runs one attempt of task and returns nil on success. Any error
	// fails the attempt; its message is recorded as the task's last error.
	// ctx is cancelled when the attempt times out, the task is cancelled,
	// or the service stops.
	Handle(ctx context.Context, task *domain.Task) error
}

// ResultHandler is a Handler whose attempts return a result: JSON that
// GET /task/{id} shows once the task succeeded (cut to --max-result-bytes).
// The processor calls HandleResult instead of Handle when a handler has it.
type ResultHandler interface {
	Handler
	// HandleResult runs one attempt of task like Handle and returns its
	// result (nil for none) with nil on success.
	HandleResult(ctx context.Context, task *domain.Task) ([]byte, error)
}

// HandlerFunc lets an ordinary function be a Handler.
type HandlerFunc func(ctx context.Context, task *domain.Task) error

// Handle calls f(ctx, task).
func (f HandlerFunc) Handle(ctx context.Context, task *domain.Task) error { return f(ctx, task) }

// ResultFunc lets an ordinary function that returns a result be a
// ResultHandler.
type ResultFunc func(ctx context.Context, task *domain.Task) ([]byte, error)

// Handle calls f and drops its result.
func (f ResultFunc) Handle(ctx context.Context, task *domain.Task) error {
	_, err := f(ctx, task)
	return err
}

// HandleResult calls f(ctx, task).
func (f ResultFunc) HandleResult(ctx context.Context, task *domain.Task) ([]byte, error) {
	return f(ctx, task)
}
