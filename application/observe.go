package application

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// ObserveBroker returns b telling obs of every call that fails for a
// reason of the broker's own (see brokerFault): metrics count them.
func ObserveBroker(b ports.Broker, obs ports.Observer) ports.Broker {
	return &observedBroker{b: b, obs: obs}
}

// brokerFault reports whether err is the broker's failure, as opposed to
// an answer about what was asked (not found, a transition the domain
// refused, a full queue, a stale attempt) or the caller giving up.
func brokerFault(ctx context.Context, err error) bool {
	var validation *domain.ValidationError
	var unknownType *domain.UnknownTypeError
	switch {
	case err == nil,
		ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)),
		errors.Is(err, domain.ErrTaskNotFound),
		errors.Is(err, domain.ErrInvalidTransition),
		errors.Is(err, domain.ErrQueueFull),
		errors.Is(err, domain.ErrStaleAttempt),
		errors.Is(err, domain.ErrShuttingDown),
		errors.As(err, &validation),
		errors.As(err, &unknownType):
		return false
	}
	return true
}

type observedBroker struct {
	b   ports.Broker
	obs ports.Observer
}

func (o *observedBroker) note(ctx context.Context, op string, err error) error {
	if brokerFault(ctx, err) {
		o.obs.BrokerError(op)
	}
	return err
}

func (o *observedBroker) Enqueue(ctx context.Context, tasks ...*domain.Task) error {
	return o.note(ctx, "Enqueue", o.b.Enqueue(ctx, tasks...))
}

func (o *observedBroker) Dequeue(ctx context.Context) (ports.Attempt, error) {
	att, err := o.b.Dequeue(ctx)
	return att, o.note(ctx, "Dequeue", err)
}

func (o *observedBroker) Settle(ctx context.Context, attempt int, task *domain.Task) error {
	return o.note(ctx, "Settle", o.b.Settle(ctx, attempt, task))
}

func (o *observedBroker) Get(ctx context.Context, id uuid.UUID) (*domain.Task, error) {
	t, err := o.b.Get(ctx, id)
	return t, o.note(ctx, "Get", err)
}

func (o *observedBroker) List(ctx context.Context, filter ports.ListFilter, after uuid.UUID, limit int) (ports.ListPage, error) {
	page, err := o.b.List(ctx, filter, after, limit)
	return page, o.note(ctx, "List", err)
}

func (o *observedBroker) Update(ctx context.Context, id uuid.UUID, change func(*domain.Task) error) (*domain.Task, error) {
	t, err := o.b.Update(ctx, id, change)
	return t, o.note(ctx, "Update", err)
}

func (o *observedBroker) UpdateMany(ctx context.Context, filter ports.ListFilter, limit int, change func(*domain.Task) error) (int, error) {
	n, err := o.b.UpdateMany(ctx, filter, limit, change)
	return n, o.note(ctx, "UpdateMany", err)
}

func (o *observedBroker) Delete(ctx context.Context, id uuid.UUID, check func(*domain.Task) error) error {
	return o.note(ctx, "Delete", o.b.Delete(ctx, id, check))
}

func (o *observedBroker) Stats(ctx context.Context) (ports.Stats, error) {
	st, err := o.b.Stats(ctx)
	return st, o.note(ctx, "Stats", err)
}

func (o *observedBroker) Reserve(ctx context.Context, key, fingerprint string, hold time.Duration) (ports.IdempotencyRecord, bool, error) {
	rec, claimed, err := o.b.Reserve(ctx, key, fingerprint, hold)
	return rec, claimed, o.note(ctx, "Reserve", err)
}

func (o *observedBroker) Complete(ctx context.Context, key string, rec ports.IdempotencyRecord, ttl time.Duration) error {
	return o.note(ctx, "Complete", o.b.Complete(ctx, key, rec, ttl))
}

func (o *observedBroker) Release(ctx context.Context, key string) error {
	return o.note(ctx, "Release", o.b.Release(ctx, key))
}

func (o *observedBroker) Pause(ctx context.Context, typ string) error {
	return o.note(ctx, "Pause", o.b.Pause(ctx, typ))
}

func (o *observedBroker) Resume(ctx context.Context, typ string) error {
	return o.note(ctx, "Resume", o.b.Resume(ctx, typ))
}

func (o *observedBroker) Paused(ctx context.Context) ([]string, error) {
	types, err := o.b.Paused(ctx)
	return types, o.note(ctx, "Paused", err)
}

func (o *observedBroker) Ping(ctx context.Context) error {
	return o.note(ctx, "Ping", o.b.Ping(ctx))
}
