// Package application holds the use cases: submitting, reading and
// managing tasks, and running one attempt of a task and deciding what
// follows it. It depends only on the domain and the ports.
package application

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Defaults of ServiceConfig.
const (
	DefaultMaxBatch       = 1000
	DefaultIdempotencyTTL = 24 * time.Hour
)

// ServiceConfig holds what the service needs besides its broker.
type ServiceConfig struct {
	// Types are the task types this instance accepts: those it runs and
	// those it only takes submissions for (--accept-type).
	Types []string
	// Runs are the types this instance has handlers for (a subset of
	// Types), and Limits the configured limits of each type; both are
	// shown by Types.
	Runs   []string
	Limits map[string]domain.TypeLimits
	// MaxBatch bounds the tasks of one SubmitBatch; DefaultMaxBatch when 0.
	MaxBatch int
	// IdempotencyTTL is how long an idempotency key is kept after its
	// first use; DefaultIdempotencyTTL when 0.
	IdempotencyTTL time.Duration
	// Observer is told of stored submissions; none when nil.
	Observer ports.Observer
	// NewID and Now default to UUIDv7 ids and the wall clock.
	NewID func() (uuid.UUID, error)
	Now   func() time.Time
}

// Service implements ports.TaskService.
type Service struct {
	broker  ports.Broker
	cfg     ServiceConfig
	known   map[string]bool
	runs    map[string]bool
	types   []string
	log     logrus.FieldLogger
	closing atomic.Bool
}

var _ ports.TaskService = (*Service)(nil)

// NewService returns a service on broker with the given configuration.
func NewService(broker ports.Broker, cfg ServiceConfig, log logrus.FieldLogger) *Service {
	if cfg.NewID == nil {
		cfg.NewID = uuid.NewV7
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Observer == nil {
		cfg.Observer = ports.NopObserver{}
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = DefaultIdempotencyTTL
	}
	known := make(map[string]bool, len(cfg.Types))
	for _, t := range cfg.Types {
		known[t] = true
	}
	runs := make(map[string]bool, len(cfg.Runs))
	for _, t := range cfg.Runs {
		runs[t] = true
	}
	types := append([]string(nil), cfg.Types...)
	sort.Strings(types)
	return &Service{broker: broker, cfg: cfg, known: known, runs: runs, types: types, log: log}
}

// Submit validates s, stores it as a pending (or scheduled) task and
// returns the task. Errors are those listed on ports.TaskSubmitter.
func (s *Service) Submit(ctx context.Context, sub ports.Submission) (*domain.Task, error) {
	if s.closing.Load() {
		return nil, domain.ErrShuttingDown
	}
	task, err := s.newTask(sub, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	// A client that gives up while the broker answers must not leave the
	// outcome unknown (stored but reported as failed): the enqueue runs to
	// its end, which the broker bounds.
	if err := s.broker.Enqueue(context.WithoutCancel(ctx), task); err != nil {
		return nil, fmt.Errorf("enqueue task %s: %w", task.ID(), err)
	}
	fields := logrus.Fields{
		"task_id":     task.ID(),
		"type":        task.Type(),
		"priority":    task.Priority().Level(),
		"max_retries": task.MaxRetries(),
	}
	if task.Status() == domain.StatusScheduled {
		fields["run_at"] = task.RunAt().Format(time.RFC3339Nano)
	}
	if task.Key() != "" {
		fields["key"] = task.Key()
	}
	s.cfg.Observer.TasksSubmitted(task.Type(), 1)
	s.logWith(ctx, fields).Info("task submitted")
	return task, nil
}

// SubmitBatch validates every submission and stores them all in one
// broker step; see ports.TaskSubmitter.
func (s *Service) SubmitBatch(ctx context.Context, subs []ports.Submission) ([]*domain.Task, error) {
	if s.closing.Load() {
		return nil, domain.ErrShuttingDown
	}
	if len(subs) == 0 || len(subs) > s.cfg.MaxBatch {
		return nil, &domain.ValidationError{Field: "tasks", Problem: fmt.Sprintf("must hold 1 to %d tasks, got %d", s.cfg.MaxBatch, len(subs))}
	}
	now := s.cfg.Now()
	tasks := make([]*domain.Task, len(subs))
	for i, sub := range subs {
		task, err := s.newTask(sub, now)
		if err != nil {
			return nil, &domain.ItemError{Index: i, Err: err}
		}
		tasks[i] = task
	}
	if err := s.broker.Enqueue(context.WithoutCancel(ctx), tasks...); err != nil {
		return nil, fmt.Errorf("enqueue %d tasks: %w", len(tasks), err)
	}
	observeBatch(s.cfg.Observer, tasks)
	s.logWith(ctx, logrus.Fields{"count": len(tasks), "first_task_id": tasks[0].ID(), "last_task_id": tasks[len(tasks)-1].ID()}).Info("tasks submitted")
	return tasks, nil
}

// newTask validates sub and makes its task, scheduled if it asks to be.
func (s *Service) newTask(sub ports.Submission, now time.Time) (*domain.Task, error) {
	if err := domain.ValidateType(sub.Type); err != nil {
		return nil, err
	}
	if !s.known[sub.Type] {
		return nil, &domain.UnknownTypeError{Type: sub.Type, Known: s.types}
	}
	priority, err := domain.ParsePriority(sub.Priority)
	if err != nil {
		return nil, err
	}
	id, err := s.cfg.NewID()
	if err != nil {
		return nil, fmt.Errorf("generate task id: %w", err)
	}
	task, err := domain.NewTask(id, sub.Type, sub.Payload, priority, sub.MaxRetries, now)
	if err != nil {
		return nil, err
	}
	if sub.Key != "" {
		if err := task.SetKey(sub.Key); err != nil {
			return nil, err
		}
	}
	switch {
	case !sub.RunAt.IsZero():
		err = task.Schedule(sub.RunAt, now)
	case sub.Delay > 0:
		err = task.Schedule(now.Add(sub.Delay), now)
	}
	if err != nil {
		return nil, err
	}
	return task, nil
}

// Ready reports whether this instance can take and store tasks; see
// ports.TaskService.Ready.
func (s *Service) Ready(ctx context.Context) error {
	if s.closing.Load() {
		return domain.ErrShuttingDown
	}
	return s.broker.Ping(ctx)
}

// BeginShutdown makes every later Submit fail with domain.ErrShuttingDown
// and Ready report it.
func (s *Service) BeginShutdown() { s.closing.Store(true) }

// logFor is the service's logger with the client a request comes from
// (see ports.WithClient), when it is known.
func (s *Service) logFor(ctx context.Context) logrus.FieldLogger {
	return s.logWith(ctx, logrus.Fields{})
}

// logWith is the service's logger with fields and the client a request
// comes from, when it is known (one copy of the fields, not two).
func (s *Service) logWith(ctx context.Context, fields logrus.Fields) logrus.FieldLogger {
	if c := ports.ClientOf(ctx); c != nil {
		fields["client"] = c.Name
	}
	return s.log.WithFields(fields)
}

// observeBatch tells obs of a stored batch, one call per type in it.
func observeBatch(obs ports.Observer, tasks []*domain.Task) {
	start := 0
	for i := 1; i <= len(tasks); i++ {
		if i == len(tasks) || tasks[i].Type() != tasks[start].Type() {
			obs.TasksSubmitted(tasks[start].Type(), i-start)
			start = i
		}
	}
}
