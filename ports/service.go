//go:generate go run github.com/golang/mock/mockgen -source=$GOFILE -destination=mocks/service.go -package=mocks

package ports

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// Submission is what a client asks to run.
type Submission struct {
	Type       string
	Payload    []byte // a JSON object, already checked by the caller
	Priority   int
	MaxRetries int
	// RunAt, when set, schedules the task; Delay, when set, schedules it
	// that long after it is accepted. At most one of them is set.
	RunAt time.Time
	Delay time.Duration
	// Key is the fairness key (a tenant, say); "" for none.
	Key string
}

// TaskSubmitter is the inbound port for new work.
type TaskSubmitter interface {
	// Submit validates and enqueues a new task and returns it. It returns a
	// *domain.ValidationError (errors.Is domain.ErrInvalidInput) for a bad
	// field, a *domain.UnknownTypeError when no handler serves the type,
	// domain.ErrQueueFull, domain.ErrStorageFull, domain.ErrShuttingDown
	// and domain.ErrUnavailable. A task is stored, or not, whether or not
	// ctx ends while the broker answers.
	Submit(ctx context.Context, s Submission) (*domain.Task, error)

	// SubmitBatch validates and enqueues every submission, all or none,
	// in one broker step, and returns the tasks in order. A bad element is
	// a *domain.ItemError wrapping what Submit would return for it; the
	// other errors are Submit's.
	SubmitBatch(ctx context.Context, subs []Submission) ([]*domain.Task, error)

	// Idempotent runs request at most once per key within ttl, across
	// every instance sharing the broker: the first call with a key runs
	// it and, if it succeeds, stores its response; a later call with the
	// same key and fingerprint gets that response back (replayed=true)
	// without running anything. It returns domain.ErrIdempotencyKeyReused
	// for the same key with another fingerprint, and
	// domain.ErrIdempotencyInFlight while the first call still runs. A
	// request that fails leaves the key free for the next try.
	Idempotent(ctx context.Context, key, fingerprint string, request func() ([]byte, error)) (response []byte, replayed bool, err error)
}

// TaskQuerier is the inbound port for reading tasks.
type TaskQuerier interface {
	// Get returns the task with the given id, domain.ErrTaskNotFound, or
	// domain.ErrUnavailable.
	Get(ctx context.Context, id uuid.UUID) (*domain.Task, error)

	// List returns a page of tasks matching filter, newest first, after
	// the cursor (uuid.Nil: the first page). It returns a
	// *domain.ValidationError for a limit out of 1..MaxListLimit, and
	// domain.ErrUnavailable.
	List(ctx context.Context, filter ListFilter, after uuid.UUID, limit int) (ListPage, error)

	// Stats returns the queue's counters; see StatsReader.
	Stats(ctx context.Context) (Stats, error)
}

// TaskManager is the inbound port for changing tasks by hand.
type TaskManager interface {
	// Cancel ends a task that has not finished; see domain.Task.Cancel. It
	// returns the cancelled task, a *domain.TransitionError for a finished
	// one, domain.ErrTaskNotFound, or domain.ErrUnavailable.
	Cancel(ctx context.Context, id uuid.UUID) (*domain.Task, error)

	// Retry puts a failed or cancelled task back to work; see
	// domain.Task.Retry. It returns the task, a *domain.TransitionError
	// from any other status, domain.ErrTaskNotFound, domain.ErrQueueFull
	// or domain.ErrUnavailable.
	Retry(ctx context.Context, id uuid.UUID) (*domain.Task, error)

	// RetryMany retries up to MaxBulkRetry failed or cancelled tasks (of
	// the given status, and type if not empty), newest first, and returns
	// how many. A *domain.ValidationError names a bad status.
	RetryMany(ctx context.Context, status domain.Status, taskType string) (int, error)

	// Delete removes a finished task. It returns a *domain.TransitionError
	// for one that has not finished, domain.ErrTaskNotFound, or
	// domain.ErrUnavailable.
	Delete(ctx context.Context, id uuid.UUID) error
}

// TypeInfo is what GET /types says of one task type.
type TypeInfo struct {
	Name   string
	Runs   bool // this instance has its handler
	Limits domain.TypeLimits
	Paused bool
	Counts map[domain.Status]int64
}

// TypeManager is the inbound port for task types.
type TypeManager interface {
	// Types returns every known type (run or accepted here, or with tasks
	// stored) with its limits, paused flag and counts.
	Types(ctx context.Context) ([]TypeInfo, error)
	// Pause and Resume stop and restart the attempts of a type on every
	// instance. They return a *domain.ValidationError for a bad type name.
	Pause(ctx context.Context, typ string) error
	Resume(ctx context.Context, typ string) error
}

// Limits of the inbound port.
const (
	MaxListLimit     = 1000
	DefaultListLimit = 50
	MaxBulkRetry     = 10000
)

// TaskService is the inbound port: the use cases the API offers.
type TaskService interface {
	TaskSubmitter
	TaskQuerier
	TaskManager
	TypeManager

	// Ready returns nil when this instance can take and store tasks,
	// domain.ErrShuttingDown once it is draining, and
	// domain.ErrUnavailable (wrapping the cause) when its broker cannot be
	// reached.
	Ready(ctx context.Context) error
}

// Client is the authenticated client a request comes from: its API key's
// name and roles.
type Client struct {
	Name  string
	Roles domain.Roles
}

// clientKey carries the Client in a context.
type clientKey struct{}

// WithClient returns ctx carrying the client a request comes from, so
// what it causes is logged with its name.
func WithClient(ctx context.Context, c *Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientOf returns the client WithClient put in ctx, or nil when there is
// none (the API is open).
func ClientOf(ctx context.Context) *Client {
	c, _ := ctx.Value(clientKey{}).(*Client)
	return c
}
