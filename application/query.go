package application

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Get returns the task with the given id; see ports.TaskQuerier.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	task, err := s.broker.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get task %s: %w", id, err)
	}
	return task, nil
}

// List returns a page of tasks; see ports.TaskQuerier.
func (s *Service) List(ctx context.Context, filter ports.ListFilter, after uuid.UUID, limit int) (ports.ListPage, error) {
	if limit == 0 {
		limit = ports.DefaultListLimit
	}
	if limit < 1 || limit > ports.MaxListLimit {
		return ports.ListPage{}, &domain.ValidationError{Field: "limit", Problem: fmt.Sprintf("must be from 1 to %d, got %d", ports.MaxListLimit, limit)}
	}
	for _, t := range filter.Types {
		if err := domain.ValidateType(t); err != nil {
			return ports.ListPage{}, err
		}
	}
	page, err := s.broker.List(ctx, filter, after, limit)
	if err != nil {
		return ports.ListPage{}, fmt.Errorf("list tasks: %w", err)
	}
	return page, nil
}

// Stats returns the queue's counters; see ports.TaskQuerier.
func (s *Service) Stats(ctx context.Context) (ports.Stats, error) {
	st, err := s.broker.Stats(ctx)
	if err != nil {
		return ports.Stats{}, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}
