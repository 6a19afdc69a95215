// Package application holds the use cases: submitting and reading tasks,
// and running one attempt of a task and deciding what follows it. It
// depends only on the domain and the ports.
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

// Service implements ports.TaskService.
type Service struct {
	broker  ports.Broker
	known   map[string]bool
	types   []string
	newID   func() (uuid.UUID, error)
	now     func() time.Time
	log     logrus.FieldLogger
	closing atomic.Bool
}

var _ ports.TaskService = (*Service)(nil)

// NewService returns a service that accepts tasks of the given handler
// types. newID and now may be nil for UUIDv7 ids and the wall clock.
func NewService(broker ports.Broker, handlerTypes []string, newID func() (uuid.UUID, error), now func() time.Time, log logrus.FieldLogger) *Service {
	if newID == nil {
		newID = uuid.NewV7
	}
	if now == nil {
		now = time.Now
	}
	known := make(map[string]bool, len(handlerTypes))
	for _, t := range handlerTypes {
		known[t] = true
	}
	types := append([]string(nil), handlerTypes...)
	sort.Strings(types)
	return &Service{broker: broker, known: known, types: types, newID: newID, now: now, log: log}
}

// Submit validates s, stores it as a pending task and returns the task.
// Errors are those listed on ports.TaskService.Submit.
func (s *Service) Submit(ctx context.Context, sub ports.Submission) (*domain.Task, error) {
	if s.closing.Load() {
		return nil, domain.ErrShuttingDown
	}
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
	id, err := s.newID()
	if err != nil {
		return nil, fmt.Errorf("generate task id: %w", err)
	}
	task, err := domain.NewTask(id, sub.Type, sub.Payload, priority, sub.MaxRetries, s.now())
	if err != nil {
		return nil, err
	}
	// A client that gives up while the broker answers must not leave the
	// outcome unknown (stored but reported as failed): the enqueue runs to
	// its end, which the broker bounds.
	if err := s.broker.Enqueue(context.WithoutCancel(ctx), task); err != nil {
		return nil, fmt.Errorf("enqueue task %s: %w", id, err)
	}
	s.log.WithFields(logrus.Fields{
		"task_id":     id,
		"type":        task.Type(),
		"priority":    priority.Level(),
		"max_retries": task.MaxRetries(),
	}).Info("task submitted")
	return task, nil
}

// Get returns the task with the given id; see ports.TaskService.Get.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	task, err := s.broker.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
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
