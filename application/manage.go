package application

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Cancel ends a task that has not finished; see ports.TaskManager. The
// rule is domain.Task.Cancel; the broker applies it atomically and tells a
// running attempt.
func (s *Service) Cancel(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	var was domain.Status
	task, err := s.broker.Update(ctx, id, func(t *domain.Task) error {
		was = t.Status()
		return t.Cancel(s.cfg.Now())
	})
	if err != nil {
		return nil, fmt.Errorf("cancel task %s: %w", id, err)
	}
	s.logWith(ctx, logrus.Fields{"task_id": id, "type": task.Type(), "was": was.String()}).Info("task cancelled")
	return task, nil
}

// Retry puts a failed or cancelled task back to work; see
// ports.TaskManager.
func (s *Service) Retry(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	task, err := s.broker.Update(ctx, id, func(t *domain.Task) error { return t.Retry(s.cfg.Now()) })
	if err != nil {
		return nil, fmt.Errorf("retry task %s: %w", id, err)
	}
	s.logWith(ctx, logrus.Fields{"task_id": id, "type": task.Type(), "attempts": task.Attempts()}).Info("task retried by hand")
	return task, nil
}

// RetryMany retries failed or cancelled tasks in bulk; see
// ports.TaskManager.
func (s *Service) RetryMany(ctx context.Context, status domain.Status, taskType string) (int, error) {
	if !status.DeadLetter() {
		return 0, &domain.ValidationError{Field: "status", Problem: fmt.Sprintf("must be failed or cancelled, got %q", status)}
	}
	filter := ports.ListFilter{Statuses: []domain.Status{status}}
	if taskType != "" {
		if err := domain.ValidateType(taskType); err != nil {
			return 0, err
		}
		filter.Types = []string{taskType}
	}
	n, err := s.broker.UpdateMany(ctx, filter, ports.MaxBulkRetry, func(t *domain.Task) error { return t.Retry(s.cfg.Now()) })
	if n > 0 {
		s.logWith(ctx, logrus.Fields{"count": n, "status": status.String(), "type": taskType}).Info("tasks retried by hand")
	}
	if err != nil {
		return n, fmt.Errorf("retry %s tasks: %w", status, err)
	}
	return n, nil
}

// Delete removes a finished task; see ports.TaskManager.
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	if err := s.broker.Delete(ctx, id, (*domain.Task).CheckDelete); err != nil {
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	s.logWith(ctx, logrus.Fields{"task_id": id}).Info("task deleted")
	return nil
}
