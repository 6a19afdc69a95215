package application_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu        sync.Mutex
	submitted map[string]int
	started   []time.Duration
	finished  []ports.Outcome
	errors    []string
}

func (r *recorder) TasksSubmitted(typ string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.submitted == nil {
		r.submitted = map[string]int{}
	}
	r.submitted[typ] += n
}

func (r *recorder) AttemptStarted(_ string, waited time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, waited)
}

func (r *recorder) AttemptFinished(_ string, o ports.Outcome, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = append(r.finished, o)
}

func (r *recorder) BrokerError(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, op)
}

func TestAttemptOutcomesAreObserved(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxRetries int
		err        error
		want       ports.Outcome
	}{
		{"success", 1, nil, ports.OutcomeSucceeded},
		{"retried", 3, errors.New("500"), ports.OutcomeRetried},
		{"failed", 0, errors.New("500"), ports.OutcomeFailed},
		{"no retry asked", 3, &domain.NoRetryError{Err: errors.New("gone")}, ports.OutcomeFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctrl := gomock.NewController(t)
			queue := mocks.NewMockTaskQueue(ctrl)
			handler := mocks.NewMockHandler(ctrl)
			obs := &recorder{}
			log, _ := test.NewNullLogger()
			policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
			proc := application.NewProcessor(queue, mocks.NewMockExecutor(ctrl), map[string]ports.Handler{"webhook": handler}, application.ProcessorConfig{
				Policy: policy, TaskTimeout: time.Hour, Observer: obs,
				Now: func() time.Time { return now }, Random: func() float64 { return 0.5 },
			}, log)
			task := runningTask(t, "webhook", tc.maxRetries, 1)
			handler.EXPECT().Handle(gomock.Any(), task).Return(tc.err)
			queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task, Ready: now.Add(-3 * time.Second)}, nil)
			queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).Return(nil)
			if err := proc.ProcessNext(context.Background(), context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(obs.started) != 1 || obs.started[0] != 3*time.Second {
				t.Fatalf("started %v, want one wait of 3s", obs.started)
			}
			if len(obs.finished) != 1 || obs.finished[0] != tc.want {
				t.Fatalf("outcomes %v, want %s", obs.finished, tc.want)
			}
		})
	}
}

func TestTimedOutAttemptIsObserved(t *testing.T) {
	ctrl := gomock.NewController(t)
	queue := mocks.NewMockTaskQueue(ctrl)
	obs := &recorder{}
	log, _ := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	slow := ports.HandlerFunc(func(ctx context.Context, _ *domain.Task) error { <-ctx.Done(); return ctx.Err() })
	proc := application.NewProcessor(queue, mocks.NewMockExecutor(ctrl), map[string]ports.Handler{"webhook": slow}, application.ProcessorConfig{
		Policy: policy, TaskTimeout: 10 * time.Millisecond, Observer: obs,
	}, log)
	task := runningTask(t, "webhook", 3, 1)
	queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).Return(nil)
	if err := proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(obs.finished) != 1 || obs.finished[0] != ports.OutcomeTimedOut {
		t.Fatalf("outcomes %v", obs.finished)
	}
	if len(obs.started) != 0 {
		t.Fatalf("a start without Ready was observed: %v", obs.started)
	}
}

func TestSubmissionsAreObservedByType(t *testing.T) {
	ctrl := gomock.NewController(t)
	broker := mocks.NewMockBroker(ctrl)
	broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).Return(nil).AnyTimes()
	obs := &recorder{}
	log, _ := test.NewNullLogger()
	svc := application.NewService(broker, application.ServiceConfig{Types: []string{"a", "b"}, Observer: obs}, log)
	if _, err := svc.Submit(context.Background(), ports.Submission{Type: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SubmitBatch(context.Background(), []ports.Submission{{Type: "a"}, {Type: "b"}, {Type: "b"}, {Type: "a"}}); err != nil {
		t.Fatal(err)
	}
	if obs.submitted["a"] != 3 || obs.submitted["b"] != 2 {
		t.Fatalf("submitted %v", obs.submitted)
	}
}

// Only the broker's own failures count as broker errors.
func TestObservedBrokerCountsItsOwnFailures(t *testing.T) {
	ctrl := gomock.NewController(t)
	inner := mocks.NewMockBroker(ctrl)
	obs := &recorder{}
	b := application.ObserveBroker(inner, obs)
	ctx := context.Background()
	for _, err := range []error{
		domain.ErrTaskNotFound, domain.ErrQueueFull, domain.ErrStaleAttempt, domain.ErrShuttingDown,
		&domain.TransitionError{Action: "cancel", From: domain.StatusSucceeded},
		&domain.ValidationError{Field: "type", Problem: "bad"}, nil,
	} {
		inner.EXPECT().Enqueue(ctx).Return(err)
		_ = b.Enqueue(ctx)
	}
	inner.EXPECT().Enqueue(ctx).Return(fmt.Errorf("redis: %w", domain.ErrUnavailable))
	inner.EXPECT().Stats(ctx).Return(ports.Stats{}, domain.ErrStorageFull)
	inner.EXPECT().Ping(ctx).Return(errors.New("broken"))
	if err := b.Enqueue(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("error not passed on: %v", err)
	}
	_, _ = b.Stats(ctx)
	_ = b.Ping(ctx)
	if fmt.Sprint(obs.errors) != "[Enqueue Stats Ping]" {
		t.Fatalf("broker errors %v", obs.errors)
	}
}
