//go:generate go run github.com/golang/mock/mockgen -source=$GOFILE -destination=mocks/broker.go -package=mocks

// Package ports holds the interfaces between the application and the
// world: what the application offers (TaskService) and what it needs
// (a broker, an executor, handlers). Adapters implement them.
package ports

import (
	"context"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// TaskQueue is the ordered, bounded queue of tasks waiting to run, together
// with the records of tasks that are running or waiting to retry. Higher
// priority first; equal priorities in the order they became pending.
type TaskQueue interface {
	// Enqueue stores a new pending task. It returns domain.ErrQueueFull when
	// the queue already holds its limit of tasks waiting to run (pending
	// and retrying), domain.ErrStorageFull when the broker has no room for
	// the task's bytes (in both cases the task is not stored),
	// domain.ErrShuttingDown once the queue is closed, and
	// domain.ErrUnavailable when the broker cannot be reached.
	Enqueue(ctx context.Context, task *domain.Task) error

	// Dequeue waits for the highest-priority pending task, starts its next
	// attempt (the task is running, its attempt count one higher) and
	// returns a copy the caller owns. It returns ctx's error when ctx ends
	// first, domain.ErrShuttingDown once the queue is closed, and
	// domain.ErrUnavailable when the broker cannot be reached.
	Dequeue(ctx context.Context) (*domain.Task, error)

	// Settle stores how attempt number attempt of task ended: task is
	// succeeded, failed, retrying (pending again once its next attempt is
	// due, behind the pending tasks of its priority) or pending (handed
	// back unfinished, at its old place). It is never refused for lack of
	// room: the task was counted all along. While the broker cannot be
	// reached it keeps trying for as long as the attempt is still this
	// instance's (its lease has not run out), so a short outage costs no
	// attempt; then, or when ctx ends first, it gives the attempt up to
	// the broker's recovery and returns domain.ErrUnavailable or ctx's
	// error. It returns domain.ErrStaleAttempt if that attempt is no
	// longer the task's running attempt (nothing is changed).
	Settle(ctx context.Context, attempt int, task *domain.Task) error
}

// TaskReader looks up tasks by id.
type TaskReader interface {
	// Get returns a copy of the task with the given id. It returns
	// domain.ErrTaskNotFound if no such task is known (or it outlived its
	// retention), and domain.ErrUnavailable when the broker cannot be
	// reached.
	Get(ctx context.Context, id uuid.UUID) (*domain.Task, error)
}

// Pinger reports whether a broker can take and store tasks now.
type Pinger interface {
	// Ping returns nil when the broker can be reached and is open,
	// domain.ErrUnavailable (wrapping the cause) when it cannot be
	// reached, and domain.ErrShuttingDown once it is closed.
	Ping(ctx context.Context) error
}

// Broker is what a broker adapter provides: the queue, the task records,
// and a readiness check.
type Broker interface {
	TaskQueue
	TaskReader
	Pinger
}
