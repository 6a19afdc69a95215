//go:generate go run github.com/golang/mock/mockgen -source=$GOFILE -destination=mocks/service.go -package=mocks

package ports

import (
	"context"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// Submission is what a client asks to run.
type Submission struct {
	Type       string
	Payload    []byte // a JSON object, already checked by the caller
	Priority   int
	MaxRetries int
}

// TaskService is the inbound port: the use cases the API offers.
type TaskService interface {
	// Submit validates and enqueues a new task and returns it. It returns a
	// *domain.ValidationError (errors.Is domain.ErrInvalidInput) for a bad
	// field, a *domain.UnknownTypeError when no handler serves the type,
	// domain.ErrQueueFull, domain.ErrStorageFull, domain.ErrShuttingDown
	// and domain.ErrUnavailable. A task is stored, or not, whether or not
	// ctx ends while the broker answers.
	Submit(ctx context.Context, s Submission) (*domain.Task, error)

	// Get returns the task with the given id, domain.ErrTaskNotFound, or
	// domain.ErrUnavailable.
	Get(ctx context.Context, id uuid.UUID) (*domain.Task, error)

	// Ready returns nil when this instance can take and store tasks,
	// domain.ErrShuttingDown once it is draining, and
	// domain.ErrUnavailable (wrapping the cause) when its broker cannot be
	// reached.
	Ready(ctx context.Context) error
}
