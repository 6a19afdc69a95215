package application_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

type processorSUT struct {
	proc    *application.Processor
	queue   *mocks.MockTaskQueue
	exec    *mocks.MockExecutor
	handler *mocks.MockHandler
	logs    *test.Hook
	policy  domain.RetryPolicy
}

func newProcessorSUT(t *testing.T) processorSUT {
	ctrl := gomock.NewController(t)
	queue := mocks.NewMockTaskQueue(ctrl)
	exec := mocks.NewMockExecutor(ctrl)
	handler := mocks.NewMockHandler(ctrl)
	log, hook := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	proc := application.NewProcessor(queue, exec, map[string]ports.Handler{"webhook": handler}, application.ProcessorConfig{
		Policy:             policy,
		TaskTimeout:        time.Hour,
		UnavailableBackoff: time.Millisecond,
		Now:                func() time.Time { return now },
		Random:             func() float64 { return 0.5 },
	}, log)
	return processorSUT{proc: proc, queue: queue, exec: exec, handler: handler, logs: hook, policy: policy}
}

// runningTask returns a task of the given type after its attempt-th start.
func runningTask(t *testing.T, typ string, maxRetries, attempt int) *domain.Task {
	p, _ := domain.ParsePriority(4)
	task, err := domain.NewTask(taskID, typ, []byte(`{}`), p, maxRetries, now)
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	for i := 1; i <= attempt; i++ {
		_ = task.Start(now)
		if i < attempt {
			_ = task.Fail(now, "earlier", policy, 0)
			_ = task.Requeue(now)
		}
	}
	return task
}

func (s processorSUT) process(t *testing.T, task *domain.Task) *domain.Task {
	t.Helper()
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	var got *domain.Task
	s.queue.EXPECT().Settle(gomock.Any(), task.Attempts(), gomock.Any()).DoAndReturn(
		func(_ context.Context, _ int, stored *domain.Task) error { got = stored; return nil })
	if err := s.proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatal("outcome was not settled")
	}
	return got
}

func lastLevel(h *test.Hook) logrus.Level { return h.LastEntry().Level }

func TestProcessSuccess(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 1, 1)
	s.handler.EXPECT().Handle(gomock.Any(), task).Return(nil)
	got := s.process(t, task)
	if got.Status() != domain.StatusSucceeded || got.FinishedAt() != now {
		t.Fatalf("after success: %+v", got.Snapshot())
	}
	e := s.logs.LastEntry()
	if e.Level != logrus.InfoLevel || e.Data["attempt"] != 1 || e.Data["task_id"] != taskID || e.Data["duration_ms"] != int64(0) {
		t.Fatalf("log: %v %v", e.Level, e.Data)
	}
}

func TestProcessFailureRetriesWithPolicyDelay(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 3, 2)
	s.handler.EXPECT().Handle(gomock.Any(), task).Return(errors.New("webhook returned 500"))
	got := s.process(t, task)
	if got.Status() != domain.StatusRetrying || got.LastError() != "webhook returned 500" ||
		got.NextAttemptAt() != now.Add(s.policy.NextDelay(2, 0.5)) {
		t.Fatalf("after failure: %+v", got.Snapshot())
	}
	if e := s.logs.LastEntry(); e.Level != logrus.WarnLevel || e.Data["error"] != "webhook returned 500" {
		t.Fatalf("log: %v %v", e.Level, e.Data)
	}
}

func TestProcessLastFailureGivesUp(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 1, 2)
	s.handler.EXPECT().Handle(gomock.Any(), task).Return(errors.New("nope"))
	got := s.process(t, task)
	if got.Status() != domain.StatusFailed || got.LastError() != "nope" {
		t.Fatalf("after last failure: %+v", got.Snapshot())
	}
	if lastLevel(s.logs) != logrus.ErrorLevel {
		t.Fatalf("give-up logged at %v", lastLevel(s.logs))
	}
}

func TestProcessPanicIsAFailureWithStack(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	s.handler.EXPECT().Handle(gomock.Any(), task).DoAndReturn(func(context.Context, *domain.Task) error { panic("kaboom") })
	got := s.process(t, task)
	if got.Status() != domain.StatusFailed || !strings.Contains(got.LastError(), "panicked: kaboom") {
		t.Fatalf("after panic: %+v", got.Snapshot())
	}
	if stack, _ := s.logs.LastEntry().Data["stack"].(string); !strings.Contains(stack, "goroutine") {
		t.Fatalf("panic logged without a stack: %v", s.logs.LastEntry().Data)
	}
}

func TestProcessTimeout(t *testing.T) {
	ctrl := gomock.NewController(t)
	queue := mocks.NewMockTaskQueue(ctrl)
	log, _ := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	handler := ports.HandlerFunc(func(ctx context.Context, _ *domain.Task) error {
		<-ctx.Done() // a well-behaved handler stops at the deadline
		return ctx.Err()
	})
	proc := application.NewProcessor(queue, nil, map[string]ports.Handler{"webhook": handler},
		application.ProcessorConfig{Policy: policy, TaskTimeout: 20 * time.Millisecond}, log)
	task := runningTask(t, "webhook", 0, 1)
	queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	var got *domain.Task
	queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).DoAndReturn(func(_ context.Context, _ int, st *domain.Task) error { got = st; return nil })
	if err := proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if got.Status() != domain.StatusFailed || got.LastError() != "attempt timed out after 20ms" {
		t.Fatalf("after timeout: %+v", got.Snapshot())
	}
}

func TestProcessHandsBackWhenStopped(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	workCtx, stop := context.WithCancel(context.Background())
	s.handler.EXPECT().Handle(gomock.Any(), task).DoAndReturn(func(ctx context.Context, _ *domain.Task) error {
		stop() // the instance gives up on running attempts
		<-ctx.Done()
		return ctx.Err()
	})
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	var got *domain.Task
	s.queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).DoAndReturn(func(ctx context.Context, _ int, st *domain.Task) error {
		if ctx.Err() != nil {
			t.Error("hand-back settled on a cancelled context")
		}
		got = st
		return nil
	})
	if err := s.proc.ProcessNext(context.Background(), workCtx); err != nil {
		t.Fatal(err)
	}
	if got.Status() != domain.StatusPending || got.Attempts() != 1 || got.RetriesLeft() != 0 || got.LastError() != application.ReleasedMessage {
		t.Fatalf("after hand-back: %+v", got.Snapshot())
	}
}

func TestProcessUnknownTypeFails(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "other", 0, 1)
	got := s.process(t, task)
	if got.Status() != domain.StatusFailed || !strings.Contains(got.LastError(), `no handler for type "other"`) {
		t.Fatalf("%+v", got.Snapshot())
	}
}

func TestProcessStaleSettleIsLoggedNotFatal(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	s.handler.EXPECT().Handle(gomock.Any(), task).Return(nil)
	s.queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).Return(domain.ErrStaleAttempt)
	if err := s.proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.logs.LastEntry(); e.Level != logrus.WarnLevel || !strings.Contains(e.Message, "discarded") {
		t.Fatalf("log: %v %q", e.Level, e.Message)
	}
}

func TestProcessDequeueErrors(t *testing.T) {
	s := newProcessorSUT(t)
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{}, domain.ErrUnavailable)
	if err := s.proc.ProcessNext(context.Background(), context.Background()); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	if lastLevel(s.logs) != logrus.WarnLevel {
		t.Fatal("unavailable broker not logged")
	}
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{}, domain.ErrShuttingDown)
	if err := s.proc.ProcessNext(context.Background(), context.Background()); !errors.Is(err, domain.ErrShuttingDown) {
		t.Fatalf("got %v", err)
	}
}

func TestRunFeedsExecutorUntilQueueCloses(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	gomock.InOrder(
		s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil),
		s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{}, domain.ErrShuttingDown),
	)
	s.handler.EXPECT().Handle(gomock.Any(), task).Return(nil)
	s.queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).Return(nil)
	s.exec.EXPECT().Go(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, work func(context.Context)) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		work(context.Background()) // run inline: the mock is a one-worker pool
		return nil
	}).Times(3) // success, shutdown seen, refused
	if err := s.proc.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRunReturnsExecutorShutdown(t *testing.T) {
	s := newProcessorSUT(t)
	s.exec.EXPECT().Go(gomock.Any(), gomock.Any()).Return(domain.ErrShuttingDown)
	if err := s.proc.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.exec.EXPECT().Go(gomock.Any(), gomock.Any()).Return(errors.New("odd"))
	if err := s.proc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "odd") {
		t.Fatalf("got %v", err)
	}
}

// hungSUT is a processor whose handler ignores its context until released.
type hungSUT struct {
	proc    *application.Processor
	queue   *mocks.MockTaskQueue
	logs    *test.Hook
	release chan struct{}
}

func newHungSUT(t *testing.T, maxAbandoned int) hungSUT {
	ctrl := gomock.NewController(t)
	queue := mocks.NewMockTaskQueue(ctrl)
	log, hook := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	handler := ports.HandlerFunc(func(context.Context, *domain.Task) error {
		<-release // ignores ctx
		return nil
	})
	proc := application.NewProcessor(queue, nil, map[string]ports.Handler{"webhook": handler}, application.ProcessorConfig{
		Policy: policy, TaskTimeout: 20 * time.Millisecond, HandlerGrace: 20 * time.Millisecond, MaxAbandoned: maxAbandoned,
	}, log)
	return hungSUT{proc: proc, queue: queue, logs: hook, release: release}
}

func (s hungSUT) expectTask(t *testing.T, maxRetries int) (*domain.Task, chan *domain.Task) {
	task := runningTask(t, "webhook", maxRetries, 1)
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	settled := make(chan *domain.Task, 1)
	s.queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).DoAndReturn(func(_ context.Context, _ int, st *domain.Task) error {
		settled <- st
		return nil
	})
	return task, settled
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A handler that ignores ctx no longer holds its worker and its task: at
// the timeout plus the grace the attempt is recorded as timed out (and
// retried under its policy), the worker is free, and a warning names the
// task; the stray goroutine is counted until it returns.
func TestHandlerIgnoringContextIsAbandonedAfterGrace(t *testing.T) {
	s := newHungSUT(t, 4)
	task, settled := s.expectTask(t, 1)
	done := make(chan error, 1)
	go func() { done <- s.proc.ProcessNext(context.Background(), context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the worker is still held by a handler that ignores its context")
	}
	got := <-settled
	if got.Status() != domain.StatusRetrying || got.LastError() != "attempt timed out after 20ms; its handler did not return and was abandoned" {
		t.Fatalf("recorded %+v; want a timed-out attempt that will retry", got.Snapshot())
	}
	var warned bool
	for _, e := range s.logs.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "did not return") && e.Data["task_id"] == task.ID() && e.Data["abandoned_handlers"] == int64(1) {
			warned = true
		}
	}
	if !warned || s.proc.Abandoned() != 1 {
		t.Fatalf("abandoned handler not reported (count %d): %v", s.proc.Abandoned(), s.logs.AllEntries())
	}
	s.release <- struct{}{}
	waitUntil(t, "the abandoned handler to be counted out", func() bool { return s.proc.Abandoned() == 0 })
}

func TestHandlerIgnoringShutdownIsHandedBack(t *testing.T) {
	s := newHungSUT(t, 4)
	_, settled := s.expectTask(t, 0)
	workCtx, stop := context.WithCancel(context.Background())
	stop() // the instance is stopping
	if err := s.proc.ProcessNext(context.Background(), workCtx); err != nil {
		t.Fatal(err)
	}
	if got := <-settled; got.Status() != domain.StatusPending || got.LastError() != application.ReleasedMessage {
		t.Fatalf("recorded %+v; want handed back", got.Snapshot())
	}
	s.release <- struct{}{}
}

// Past MaxAbandoned a worker still records the attempt, then waits for its
// handler, so stray goroutines stay bounded.
func TestAbandonedHandlersAreBounded(t *testing.T) {
	s := newHungSUT(t, 1)
	_, first := s.expectTask(t, 0)
	if err := s.proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	<-first
	_, second := s.expectTask(t, 0)
	done := make(chan error, 1)
	go func() { done <- s.proc.ProcessNext(context.Background(), context.Background()) }()
	if got := <-second; got.Status() != domain.StatusFailed {
		t.Fatalf("second hung attempt recorded as %v; want failed (timed out, no retries)", got.Status())
	}
	select {
	case <-done:
		t.Fatal("a worker was freed past the bound on abandoned handlers")
	case <-time.After(50 * time.Millisecond):
	}
	s.release <- struct{}{}
	s.release <- struct{}{}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not go on once its handler returned")
	}
}

// Abort ends a settle that is still retrying (an unreachable broker), so a
// shutdown whose time is up is not held by it.
func TestAbortEndsPendingSettle(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	s.handler.EXPECT().Handle(gomock.Any(), gomock.Any()).Return(nil)
	s.queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).DoAndReturn(func(ctx context.Context, _ int, _ *domain.Task) error {
		<-ctx.Done()
		return domain.ErrUnavailable
	})
	done := make(chan error, 1)
	go func() { done <- s.proc.ProcessNext(context.Background(), context.Background()) }()
	s.proc.Abort()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Abort did not end the settle")
	}
}

// A handler that asks for a later retry gets it, up to the policy's
// maximum; one that asks for none fails the task for good.
func TestProcessHandlerBackpressure(t *testing.T) {
	t.Run("RetryAfterLongerThanBackoff", func(t *testing.T) {
		s := newProcessorSUT(t)
		task := runningTask(t, "webhook", 3, 1)
		s.handler.EXPECT().Handle(gomock.Any(), task).Return(fmt.Errorf("wrapped: %w", &domain.RetryAfterError{After: 30 * time.Second, Err: errors.New("429")}))
		got := s.process(t, task)
		if got.Status() != domain.StatusRetrying || got.NextAttemptAt() != now.Add(30*time.Second) || got.RetriesLeft() != 2 {
			t.Fatalf("after Retry-After 30s: %+v", got.Snapshot())
		}
	})
	t.Run("RetryAfterCappedAtMaxBackoff", func(t *testing.T) {
		s := newProcessorSUT(t)
		task := runningTask(t, "webhook", 3, 1)
		s.handler.EXPECT().Handle(gomock.Any(), task).Return(&domain.RetryAfterError{After: 24 * time.Hour, Err: errors.New("503")})
		got := s.process(t, task)
		if got.NextAttemptAt() != now.Add(s.policy.Max()) {
			t.Fatalf("Retry-After of a day: next attempt at %v; want the policy's max %v later", got.NextAttemptAt(), s.policy.Max())
		}
	})
	t.Run("RetryAfterShorterThanBackoff", func(t *testing.T) {
		s := newProcessorSUT(t)
		task := runningTask(t, "webhook", 3, 3)
		s.handler.EXPECT().Handle(gomock.Any(), task).Return(&domain.RetryAfterError{After: time.Millisecond, Err: errors.New("429")})
		got := s.process(t, task)
		if got.NextAttemptAt() != now.Add(s.policy.NextDelay(3, 0.5)) {
			t.Fatalf("a short Retry-After shortened the backoff: %v", got.NextAttemptAt())
		}
	})
	t.Run("NoRetry", func(t *testing.T) {
		s := newProcessorSUT(t)
		task := runningTask(t, "webhook", 5, 1)
		s.handler.EXPECT().Handle(gomock.Any(), task).Return(&domain.NoRetryError{Err: errors.New("webhook returned 422: bad input")})
		got := s.process(t, task)
		if got.Status() != domain.StatusFailed || got.RetriesLeft() != 0 || !strings.Contains(got.LastError(), "asked not to retry") {
			t.Fatalf("after no-retry: %+v", got.Snapshot())
		}
		if lastLevel(s.logs) != logrus.ErrorLevel {
			t.Fatalf("logged at %v", lastLevel(s.logs))
		}
	})
}
