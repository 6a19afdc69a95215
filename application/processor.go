package application

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// ReleasedMessage is recorded as the last error of a task whose attempt
// was handed back because its instance stopped before it finished.
const ReleasedMessage = "attempt handed back unfinished: the instance stopped before it ended"

// DefaultHandlerGrace is how long a handler may run on after its context
// ended before the processor stops waiting for it.
const DefaultHandlerGrace = time.Second

// ProcessorConfig holds what the processor needs besides its ports.
type ProcessorConfig struct {
	Policy      domain.RetryPolicy
	TaskTimeout time.Duration
	// HandlerGrace is how long a handler may run past the end of its
	// attempt's context (timeout or shutdown) before the attempt is
	// recorded without it (timed out, or handed back at shutdown) and its
	// goroutine is abandoned. Defaults to DefaultHandlerGrace.
	HandlerGrace time.Duration
	// MaxAbandoned bounds the abandoned handler goroutines that may be
	// left running at once. Past it, a worker whose handler does not
	// return still records the attempt but then waits for the handler,
	// so the goroutine count stays bounded. Defaults to 1.
	MaxAbandoned int
	// UnavailableBackoff is how long a worker waits after the broker could
	// not be reached before it asks again. Defaults to one second.
	UnavailableBackoff time.Duration
	// MaxResultBytes bounds a stored result; longer ones are cut and
	// flagged. Defaults to domain.DefaultMaxResultBytes.
	MaxResultBytes int
	// Observer is told of every attempt's start and outcome; none when
	// nil.
	Observer ports.Observer
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

	// settleCtx is what outcomes are recorded under: shutdown does not
	// cancel it (a hand-back must still arrive) until Abort.
	settleCtx context.Context
	abort     context.CancelFunc
	abandoned atomic.Int64
	running   atomic.Int64
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
	if cfg.HandlerGrace <= 0 {
		cfg.HandlerGrace = DefaultHandlerGrace
	}
	if cfg.MaxAbandoned <= 0 {
		cfg.MaxAbandoned = 1
	}
	if cfg.MaxResultBytes <= 0 {
		cfg.MaxResultBytes = domain.DefaultMaxResultBytes
	}
	if cfg.Observer == nil {
		cfg.Observer = ports.NopObserver{}
	}
	settleCtx, abort := context.WithCancel(context.Background())
	return &Processor{queue: queue, exec: exec, handlers: handlers, cfg: cfg, log: log, settleCtx: settleCtx, abort: abort}
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

// Abort gives up on recording the outcomes still being recorded (the
// broker may be retrying an unreachable store): the last step of a
// shutdown whose time is up. Those attempts are left to the broker's
// recovery. Calling it again does nothing.
func (p *Processor) Abort() { p.abort() }

// Abandoned returns how many abandoned handler goroutines are still
// running: handlers that did not return when their context ended.
func (p *Processor) Abandoned() int { return int(p.abandoned.Load()) }

// Running returns how many attempts are running now: taken from the
// broker and not yet recorded (workers waiting for a task do not count).
func (p *Processor) Running() int { return int(p.running.Load()) }

// ProcessNext waits on takeCtx for a task, runs one attempt of it under
// workCtx and the task timeout, and records the outcome. It returns
// takeCtx's error or domain.ErrShuttingDown when there will be no task; a
// failed attempt is recorded, not returned.
func (p *Processor) ProcessNext(takeCtx, workCtx context.Context) error {
	att, err := p.queue.Dequeue(takeCtx)
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
	p.runAttempt(workCtx, att)
	return nil
}

// outcome is what a handler's call gave.
type outcome struct {
	result []byte
	err    error
}

func (p *Processor) runAttempt(workCtx context.Context, att ports.Attempt) {
	p.running.Add(1)
	defer p.running.Add(-1)
	task := att.Task
	attempt := task.Attempts()
	fields := logrus.Fields{
		"task_id":  task.ID(),
		"type":     task.Type(),
		"priority": task.Priority().Level(),
		"attempt":  attempt,
	}
	if debugEnabled(p.log) {
		p.log.WithFields(fields).Debug("attempt started")
	}
	start := p.cfg.Now()
	if !att.Ready.IsZero() {
		p.cfg.Observer.AttemptStarted(task.Type(), max(0, task.StartedAt().Sub(att.Ready)))
	}
	attemptCtx, cancel := context.WithTimeout(workCtx, p.cfg.TaskTimeout)
	done := make(chan outcome, 1)
	go func(t *domain.Task) { done <- p.call(attemptCtx, t) }(task)
	out, returned, cancelled := p.wait(attemptCtx, cancel, att.Cancelled, done)
	err := out.err
	if !returned {
		// The handler may still read task: record the outcome on a copy.
		cp := *task
		task = &cp
	}
	timedOut := errors.Is(attemptCtx.Err(), context.DeadlineExceeded)
	cancel()
	end := p.cfg.Now()
	fields["duration_ms"] = end.Sub(start).Milliseconds()
	log := p.log.WithFields(fields)

	if cancelled {
		// The task was cancelled while this attempt ran: its outcome does
		// not count, and the broker has already let the attempt go.
		p.cfg.Observer.AttemptFinished(task.Type(), ports.OutcomeCancelled, end.Sub(start))
		log.Info("attempt stopped: the task was cancelled; its outcome was discarded")
		if !returned {
			p.abandon(log, done)
		}
		return
	}
	var panicErr *domain.PanicError
	switch {
	case returned && err == nil:
		err = task.SucceedWith(end, domain.NewResult(out.result, p.cfg.MaxResultBytes))
	case workCtx.Err() != nil:
		if err != nil {
			log = log.WithField("error", err.Error())
		}
		err = task.Release(end, ReleasedMessage)
	case timedOut || !returned:
		err = task.Fail(end, (&domain.TimeoutError{After: p.cfg.TaskTimeout, Abandoned: !returned}).Error(), p.cfg.Policy, p.cfg.Random())
	default:
		var noRetry *domain.NoRetryError
		var retryAfter *domain.RetryAfterError
		switch {
		case errors.As(err, &noRetry):
			err = task.FailNoRetry(end, err.Error())
		case errors.As(err, &retryAfter):
			log = log.WithField("retry_after_ms", retryAfter.After.Milliseconds())
			err = task.FailRetryAfter(end, err.Error(), p.cfg.Policy, p.cfg.Random(), retryAfter.After)
		default:
			if errors.As(err, &panicErr) {
				log = log.WithField("stack", string(panicErr.Stack))
			}
			err = task.Fail(end, err.Error(), p.cfg.Policy, p.cfg.Random())
		}
	}
	if err != nil { // the task was running: only a broken broker gets here
		log.WithError(err).Error("cannot record attempt outcome")
		return
	}
	var handlerReturned <-chan struct{}
	var tooMany bool
	if !returned {
		handlerReturned, tooMany = p.abandon(log, done)
	}
	if p.settle(log, attempt, task) {
		p.cfg.Observer.AttemptFinished(task.Type(), outcomeOf(task, timedOut || !returned), end.Sub(start))
	}
	if tooMany {
		// Too many handlers left behind: this worker waits for its own, so
		// the number of stray goroutines stays bounded.
		log.WithField("abandoned_handlers", p.abandoned.Load()).Error("too many handlers did not return; this worker waits for its handler before taking more work")
		select {
		case <-handlerReturned:
		case <-p.settleCtx.Done():
		}
	}
}

// wait returns the handler's outcome, or returned=false when it has not
// returned HandlerGrace after its context ended. When cancelled closes
// first it ends the handler's context (stop) and reports cancelled.
func (p *Processor) wait(attemptCtx context.Context, stop context.CancelFunc, cancelled <-chan struct{}, done <-chan outcome) (out outcome, returned, wasCancelled bool) {
	select {
	case out = <-done:
		return out, true, false
	case <-attemptCtx.Done():
	case <-cancelled:
		wasCancelled = true
		stop()
	}
	grace := time.NewTimer(p.cfg.HandlerGrace)
	defer grace.Stop()
	select {
	case out = <-done:
		return out, true, wasCancelled
	case <-grace.C:
		return outcome{}, false, wasCancelled
	}
}

// abandon leaves a handler that did not return running on its own, counts
// it, and logs when it finally returns. It returns a channel closed then,
// and whether more handlers are abandoned than MaxAbandoned allows.
func (p *Processor) abandon(log logrus.FieldLogger, done <-chan outcome) (returned <-chan struct{}, tooMany bool) {
	n := p.abandoned.Add(1)
	log.WithField("abandoned_handlers", n).Warn("handler did not return after its context ended; recorded the attempt without it and left its goroutine running (it cannot be killed)")
	ch := make(chan struct{})
	go func() {
		<-done
		left := p.abandoned.Add(-1)
		close(ch)
		log.WithField("abandoned_handlers", left).Info("an abandoned handler returned at last; its result was discarded")
	}()
	return ch, n > int64(p.cfg.MaxAbandoned)
}

// outcomeOf names how an attempt that left task as it is ended.
func outcomeOf(task *domain.Task, timedOut bool) ports.Outcome {
	switch {
	case task.Status() == domain.StatusSucceeded:
		return ports.OutcomeSucceeded
	case task.Status() == domain.StatusPending:
		return ports.OutcomeHandedBack
	case timedOut:
		return ports.OutcomeTimedOut
	case task.Status() == domain.StatusRetrying:
		return ports.OutcomeRetried
	}
	return ports.OutcomeFailed
}

// settle records the attempt's outcome and logs it. It reports whether
// the outcome was recorded.
func (p *Processor) settle(log logrus.FieldLogger, attempt int, task *domain.Task) bool {
	if task.LastError() != "" && task.Status() != domain.StatusSucceeded {
		log = log.WithField("error", task.LastError())
	}
	if err := p.queue.Settle(p.settleCtx, attempt, task); err != nil {
		if errors.Is(err, domain.ErrStaleAttempt) {
			log.WithError(err).Warn("attempt outcome discarded: the task was cancelled, or another instance took it over, meanwhile")
			return false
		}
		log.WithError(err).Error("cannot record attempt outcome; the broker recovers the task when its lease runs out")
		return false
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
	return true
}

// debugEnabled reports whether log writes debug lines, so the hot path
// does not build one that is thrown away.
func debugEnabled(log logrus.FieldLogger) bool {
	switch l := log.(type) {
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(logrus.DebugLevel)
	case *logrus.Logger:
		return l.IsLevelEnabled(logrus.DebugLevel)
	}
	return true
}

// call runs the task's handler, turning a panic into a *domain.PanicError
// and a missing handler into an error. A ResultHandler's result comes
// back with it.
func (p *Processor) call(ctx context.Context, task *domain.Task) (out outcome) {
	h, ok := p.handlers[task.Type()]
	if !ok {
		return outcome{err: fmt.Errorf("no handler for type %q on this instance", task.Type())}
	}
	defer func() {
		if v := recover(); v != nil {
			out = outcome{err: &domain.PanicError{Value: v, Stack: debug.Stack()}}
		}
	}()
	if rh, ok := h.(ports.ResultHandler); ok {
		result, err := rh.HandleResult(ctx, task)
		return outcome{result: result, err: err}
	}
	return outcome{err: h.Handle(ctx, task)}
}
