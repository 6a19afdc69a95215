//go:generate go run github.com/golang/mock/mockgen -source=$GOFILE -destination=mocks/broker.go -package=mocks

// Package ports holds the interfaces between the application and the
// world: what the application offers (TaskService) and what it needs
// (a broker, an executor, handlers). Adapters implement them.
package ports

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// Attempt is an attempt Dequeue started.
type Attempt struct {
	Task *domain.Task
	// Cancelled is closed when the attempt stops counting while it runs
	// (the task was cancelled): its handler should stop, and its outcome
	// will be discarded.
	Cancelled <-chan struct{}
	// Ready is when the task became pending before this attempt: when it
	// was submitted, or when the broker promoted it once due (a scheduled
	// task's run_at, a retry's backoff). Start minus Ready is the time it
	// waited for a worker.
	Ready time.Time
}

// TaskQueue is the ordered, bounded queue of tasks waiting to run, together
// with the records of tasks that are running or waiting to retry. Higher
// priority first; equal priorities in the order they became pending.
type TaskQueue interface {
	// Enqueue stores new tasks, pending or scheduled, all or none. It
	// returns domain.ErrQueueFull when the queue cannot take them all
	// under its limit of tasks waiting to run (scheduled, pending and
	// retrying), domain.ErrStorageFull when the broker has no room for
	// their bytes (in both cases nothing is stored),
	// domain.ErrShuttingDown once the queue is closed, and
	// domain.ErrUnavailable when the broker cannot be reached.
	Enqueue(ctx context.Context, tasks ...*domain.Task) error

	// Dequeue waits for the pending task that goes next among the types
	// this instance may start now (it runs them, they are not paused,
	// they are under their concurrency and rate limits, and the task's
	// key is under its limit), starts its next attempt (the task is
	// running, its attempt count one higher) and returns a copy the
	// caller owns. The order is domain.Candidate.Outranks; within a type
	// and priority, keys take turns, and each key's tasks go in order. It returns ctx's error when ctx ends
	// first, domain.ErrShuttingDown once the queue is closed, and
	// domain.ErrUnavailable when the broker cannot be reached.
	Dequeue(ctx context.Context) (Attempt, error)

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

// ListFilter selects tasks to list; an empty field matches everything.
type ListFilter struct {
	Statuses []domain.Status
	Types    []string
}

// ListPage is one page of tasks, newest first.
type ListPage struct {
	Tasks []*domain.Task
	// Next is the id to continue after, or uuid.Nil on the last page.
	Next uuid.UUID
}

// TaskReader looks up and lists tasks.
type TaskReader interface {
	// Get returns a copy of the task with the given id. It returns
	// domain.ErrTaskNotFound if no such task is known (or it outlived its
	// retention), and domain.ErrUnavailable when the broker cannot be
	// reached.
	Get(ctx context.Context, id uuid.UUID) (*domain.Task, error)

	// List returns up to limit tasks matching filter, newest first (by
	// id, which is time-ordered), with ids below after (uuid.Nil: from
	// the newest). Its cost is O(limit) plus a log factor, whatever the
	// number of tasks. It returns domain.ErrUnavailable when the broker
	// cannot be reached.
	List(ctx context.Context, filter ListFilter, after uuid.UUID, limit int) (ListPage, error)
}

// TaskAdmin changes stored tasks. The change itself is the domain's (a
// transition method); the broker applies it atomically and moves the task
// where its new status belongs.
type TaskAdmin interface {
	// Update applies change to the task with the given id and stores the
	// result, as one atomic step against every other change: change gets
	// a copy of the current task and returns an error to refuse (nothing
	// is stored). A running attempt whose task leaves running this way is
	// told through its Attempt.Cancelled and its outcome is discarded. It
	// returns the stored task, change's error, domain.ErrTaskNotFound,
	// domain.ErrQueueFull when the task would wait to run and the queue
	// is full, and domain.ErrUnavailable.
	Update(ctx context.Context, id uuid.UUID, change func(*domain.Task) error) (*domain.Task, error)

	// UpdateMany applies change to up to limit tasks matching filter,
	// newest first, each as Update would, skipping those change refuses.
	// It returns how many it changed; it stops early, with what it did so
	// far, on domain.ErrQueueFull or domain.ErrUnavailable.
	UpdateMany(ctx context.Context, filter ListFilter, limit int, change func(*domain.Task) error) (int, error)

	// Delete removes the task with the given id if check accepts it, as
	// one atomic step. It returns check's error, domain.ErrTaskNotFound,
	// or domain.ErrUnavailable.
	Delete(ctx context.Context, id uuid.UUID, check func(*domain.Task) error) error
}

// Stats counts tasks without looking at each: counters kept as tasks move.
type Stats struct {
	// ByType counts the tasks of each type by status; statuses with no
	// task are left out.
	ByType map[string]map[domain.Status]int64
	// OldestPending is when the task that has waited longest in pending
	// became pending, or the zero time when none is.
	OldestPending time.Time
	// OldestPendingByType is the same per type, for the types with a
	// pending task.
	OldestPendingByType map[string]time.Time
}

// NotePending records that a task of typ has been pending since since, in
// OldestPending and OldestPendingByType.
func (st *Stats) NotePending(typ string, since time.Time) {
	if since.IsZero() {
		return
	}
	if st.OldestPending.IsZero() || since.Before(st.OldestPending) {
		st.OldestPending = since
	}
	if st.OldestPendingByType == nil {
		st.OldestPendingByType = map[string]time.Time{}
	}
	if old, ok := st.OldestPendingByType[typ]; !ok || since.Before(old) {
		st.OldestPendingByType[typ] = since
	}
}

// StatsReader reads the counters.
type StatsReader interface {
	// Stats returns the counts of the whole queue, the same on every
	// instance sharing the broker; they match what List finds. It costs
	// O(types), not O(tasks). It returns domain.ErrUnavailable when the
	// broker cannot be reached.
	Stats(ctx context.Context) (Stats, error)
}

// IdempotencyRecord is what is stored under an idempotency key.
type IdempotencyRecord struct {
	// Fingerprint identifies the request the key was first used for.
	Fingerprint string
	// Done says the first request finished; Response is what it answered.
	Done     bool
	Response []byte
}

// IdempotencyStore keeps idempotency keys, shared by every instance on the
// broker, so one request per key runs.
type IdempotencyStore interface {
	// Reserve claims key for a request with the given fingerprint for
	// hold (the request should finish by then), atomically: of two
	// instances reserving the same key at once, one gets claimed=true.
	// When the key is already taken it returns what is stored under it
	// and claimed=false. It returns domain.ErrUnavailable when the broker
	// cannot be reached.
	Reserve(ctx context.Context, key, fingerprint string, hold time.Duration) (rec IdempotencyRecord, claimed bool, err error)

	// Complete stores the response of the request that holds key, kept
	// until ttl after the key was first reserved.
	Complete(ctx context.Context, key string, rec IdempotencyRecord, ttl time.Duration) error

	// Release gives up a reservation (the request failed): the key can be
	// used again at once.
	Release(ctx context.Context, key string) error
}

// TypeAdmin pauses and resumes task types for every instance sharing the
// broker: a paused type keeps taking submissions but starts no attempts.
type TypeAdmin interface {
	// Pause stops new attempts of typ (running ones finish). It returns
	// domain.ErrUnavailable when the broker cannot be reached.
	Pause(ctx context.Context, typ string) error
	// Resume lets attempts of typ start again.
	Resume(ctx context.Context, typ string) error
	// Paused returns the paused types.
	Paused(ctx context.Context) ([]string, error)
}

// Pinger reports whether a broker can take and store tasks now.
type Pinger interface {
	// Ping returns nil when the broker can be reached and is open,
	// domain.ErrUnavailable (wrapping the cause) when it cannot be
	// reached, and domain.ErrShuttingDown once it is closed.
	Ping(ctx context.Context) error
}

// Broker is what a broker adapter provides: the queue, the task records
// and what changes them, counters, idempotency keys, and a readiness
// check.
type Broker interface {
	TaskQueue
	TaskReader
	TaskAdmin
	StatsReader
	IdempotencyStore
	TypeAdmin
	Pinger
}
