package application

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// ReleasedMessage is recorded as the last error of a task whose attempt
// was handed back because its instance stopped before it finished.
const ReleasedMessage = "attempt handed back unfinished: the instance stopped before it ended"

// settleTimeout bounds how long recording an outcome may take; it runs on
// a context that shutdown does not cancel, so a hand-back still arrives.
const settleTimeout = 10 * time.Second

// ProcessorConfig holds what the processor needs besides its ports.
type ProcessorConfig struct {
	Policy      domain.RetryPolicy
	TaskTimeout time.Duration
	// UnavailableBackoff is how long a worker waits after the broker could
	// not be reached before it asks again. Defaults to one second.
	UnavailableBackoff time.Duration
	// Now and Random default to the wall clock and math/rand/v2.
	Now    func() time.Time
	Random func() float64
}

// Processor takes tasks from the queue and runs their attempts on the
// executor, then records each outcome and whether the task will retry.
type Processor struct {
	queue    ports.TaskQueue
	exec     ports.Executor
	handlers map[string]ports.Handler
	cfg      ProcessorConfig
	log      logrus.FieldLogger
}

// NewProcessor returns a processor for the given handlers, keyed by type.
func NewProcessor(queue ports.TaskQueue, exec ports.Executor, handlers map[string]ports.Handler, cfg ProcessorConfig, log logrus.FieldLogger) *Processor {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Random == nil {
		cfg.Random = rand.Float64
	}
	if cfg.UnavailableBackoff <= 0 {
		cfg.UnavailableBackoff = time.Second
	}
	return &Processor{queue: queue, exec: exec, handlers: handlers, cfg: cfg, log: log}
}

// Run keeps every executor worker busy taking and running tasks until ctx
// ends (stop taking work) or the queue or executor shuts down. It returns
// nil then; attempts already running carry on under the executor's own
// context. Any other error from the executor is returned.
func (p *Processor) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	for {
		err := p.exec.Go(ctx, func(workCtx context.Context) {
			if err := p.ProcessNext(ctx, workCtx); errors.Is(err, domain.ErrShuttingDown) {
				stop()
			}
		})
		switch {
		case err == nil:
		case ctx.Err() != nil, errors.Is(err, domain.ErrShuttingDown):
			return nil
		default:
			return fmt.Errorf("executor: %w", err)
		}
	}
}

// ProcessNext waits on takeCtx for a task, runs one attempt of it under
// workCtx and the task timeout, and records the outcome. It returns
// takeCtx's error or domain.ErrShuttingDown when there will be no task; a
// failed attempt is recorded, not returned.
func (p *Processor) ProcessNext(takeCtx, workCtx context.Context) error {
	task, err := p.queue.Dequeue(takeCtx)
	if err != nil {
		if takeCtx.Err() != nil || errors.Is(err, domain.ErrShuttingDown) {
			return err
		}
		p.log.WithError(err).Warn("cannot take a task from the broker; waiting before asking again")
		select {
		case <-time.After(p.cfg.UnavailableBackoff):
		case <-takeCtx.Done():
		}
		return err
	}
	p.runAttempt(workCtx, task)
	return nil
}

func (p *Processor) runAttempt(workCtx context.Context, task *domain.Task) {
	attempt := task.Attempts()
	start := p.cfg.Now()
	attemptCtx, cancel := context.WithTimeout(workCtx, p.cfg.TaskTimeout)
	err := p.call(attemptCtx, task)
	timedOut := errors.Is(attemptCtx.Err(), context.DeadlineExceeded)
	cancel()
	end := p.cfg.Now()

	log := p.log.WithFields(logrus.Fields{
		"task_id":     task.ID(),
		"type":        task.Type(),
		"priority":    task.Priority().Level(),
		"attempt":     attempt,
		"duration_ms": end.Sub(start).Milliseconds(),
	})
	var panicErr *domain.PanicError
	switch {
	case err == nil:
		err = task.Succeed(end)
	case workCtx.Err() != nil:
		log = log.WithField("error", err.Error())
		err = task.Release(end, ReleasedMessage)
	case timedOut:
		err = task.Fail(end, (&domain.TimeoutError{After: p.cfg.TaskTimeout}).Error(), p.cfg.Policy, p.cfg.Random())
	default:
		if errors.As(err, &panicErr) {
			log = log.WithField("stack", string(panicErr.Stack))
		}
		err = task.Fail(end, err.Error(), p.cfg.Policy, p.cfg.Random())
	}
	if err != nil { // the task was running: only a broken broker gets here
		log.WithError(err).Error("cannot record attempt outcome")
		return
	}
	if task.LastError() != "" && task.Status() != domain.StatusSucceeded {
		log = log.WithField("error", task.LastError())
	}

	settleCtx, cancelSettle := context.WithTimeout(context.WithoutCancel(workCtx), settleTimeout)
	defer cancelSettle()
	if err := p.queue.Settle(settleCtx, attempt, task); err != nil {
		if errors.Is(err, domain.ErrStaleAttempt) {
			log.WithError(err).Warn("attempt outcome discarded: another instance already took over the task")
			return
		}
		log.WithError(err).Error("cannot record attempt outcome")
		return
	}
	switch task.Status() {
	case domain.StatusSucceeded:
		log.Info("task attempt succeeded")
	case domain.StatusRetrying:
		log.WithField("next_attempt_at", task.NextAttemptAt().Format(time.RFC3339Nano)).Warn("task attempt failed; will retry")
	case domain.StatusPending:
		log.Warn("task attempt handed back unfinished")
	default:
		log.Error("task failed; no retries left")
	}
}

// call runs the task's handler, turning a panic into a *domain.PanicError
// and a missing handler into an error.
func (p *Processor) call(ctx context.Context, task *domain.Task) (err error) {
	h, ok := p.handlers[task.Type()]
	if !ok {
		return fmt.Errorf("no handler for type %q on this instance", task.Type())
	}
	defer func() {
		if v := recover(); v != nil {
			err = &domain.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return h.Handle(ctx, task)
}
