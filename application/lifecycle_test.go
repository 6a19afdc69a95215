package application_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

func TestSubmitScheduled(t *testing.T) {
	sut := newServiceSUT(t)
	var got []*domain.Task
	sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, tasks ...*domain.Task) error {
		got = append(got, tasks...)
		return nil
	}).Times(3)
	for _, sub := range []ports.Submission{
		{Type: "webhook", Delay: 90 * time.Second},
		{Type: "webhook", RunAt: now.Add(time.Hour)},
		{Type: "webhook", RunAt: now.Add(-time.Hour)}, // in the past: now
	} {
		if _, err := sut.svc.Submit(context.Background(), sub); err != nil {
			t.Fatal(err)
		}
	}
	if got[0].Status() != domain.StatusScheduled || !got[0].RunAt().Equal(now.Add(90*time.Second)) {
		t.Fatalf("delay 90s: %+v", got[0].Snapshot())
	}
	if got[1].Status() != domain.StatusScheduled || got[2].Status() != domain.StatusPending {
		t.Fatalf("run_at: %v, %v", got[1].Status(), got[2].Status())
	}
	_, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "webhook", RunAt: now.Add(400 * 24 * time.Hour)})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Field != "run_at" {
		t.Fatalf("400 days ahead: %v", err)
	}
}

func TestSubmitBatchIsAllOrNothing(t *testing.T) {
	sut := newServiceSUT(t) // a bad element: no broker call at all
	_, err := sut.svc.SubmitBatch(context.Background(), []ports.Submission{{Type: "webhook"}, {Type: "webhook", Priority: 12}})
	var ie *domain.ItemError
	if !errors.As(err, &ie) || ie.Index != 1 || !strings.HasPrefix(err.Error(), "tasks[1].priority:") {
		t.Fatalf("bad element: %v", err)
	}
	if _, err := sut.svc.SubmitBatch(context.Background(), nil); !errors.Is(err, domain.ErrInvalidInput) {
		t.Fatalf("empty batch: %v", err)
	}
	sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(nil)
	tasks, err := sut.svc.SubmitBatch(context.Background(), []ports.Submission{{Type: "webhook"}, {Type: "example_task"}, {Type: "webhook", Delay: time.Minute}})
	if err != nil || len(tasks) != 3 || tasks[2].Status() != domain.StatusScheduled {
		t.Fatalf("batch: %v %v", tasks, err)
	}
	sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).Return(domain.ErrQueueFull)
	if _, err := sut.svc.SubmitBatch(context.Background(), []ports.Submission{{Type: "webhook"}}); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("full: %v", err)
	}
}

func TestBatchLimit(t *testing.T) {
	ctrl := gomock.NewController(t)
	log, _ := test.NewNullLogger()
	svc := application.NewService(mocks.NewMockBroker(ctrl), application.ServiceConfig{Types: []string{"x"}, MaxBatch: 2}, log)
	_, err := svc.SubmitBatch(context.Background(), make([]ports.Submission, 3))
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Field != "tasks" || !strings.Contains(ve.Problem, "1 to 2") {
		t.Fatalf("3 tasks with a limit of 2: %v", err)
	}
}

func TestIdempotent(t *testing.T) {
	sut := newServiceSUT(t)
	ctx := context.Background()
	runs := 0
	request := func() ([]byte, error) { runs++; return []byte("created"), nil }

	sut.broker.EXPECT().Reserve(gomock.Any(), "k", "fp", gomock.Any()).Return(ports.IdempotencyRecord{Fingerprint: "fp"}, true, nil)
	sut.broker.EXPECT().Complete(gomock.Any(), "k", ports.IdempotencyRecord{Fingerprint: "fp", Done: true, Response: []byte("created")}, application.DefaultIdempotencyTTL).Return(nil)
	resp, replayed, err := sut.svc.Idempotent(ctx, "k", "fp", request)
	if err != nil || replayed || string(resp) != "created" || runs != 1 {
		t.Fatalf("first call: %q %v %v (%d runs)", resp, replayed, err, runs)
	}

	sut.broker.EXPECT().Reserve(gomock.Any(), "k", "fp", gomock.Any()).Return(ports.IdempotencyRecord{Fingerprint: "fp", Done: true, Response: []byte("created")}, false, nil)
	resp, replayed, err = sut.svc.Idempotent(ctx, "k", "fp", request)
	if err != nil || !replayed || string(resp) != "created" || runs != 1 {
		t.Fatalf("repeat: %q %v %v (%d runs)", resp, replayed, err, runs)
	}

	sut.broker.EXPECT().Reserve(gomock.Any(), "k", "other", gomock.Any()).Return(ports.IdempotencyRecord{Fingerprint: "fp", Done: true}, false, nil)
	if _, _, err := sut.svc.Idempotent(ctx, "k", "other", request); !errors.Is(err, domain.ErrIdempotencyKeyReused) {
		t.Fatalf("another request: %v", err)
	}
	sut.broker.EXPECT().Reserve(gomock.Any(), "k2", "fp", gomock.Any()).Return(ports.IdempotencyRecord{Fingerprint: "fp"}, false, nil)
	if _, _, err := sut.svc.Idempotent(ctx, "k2", "fp", request); !errors.Is(err, domain.ErrIdempotencyInFlight) {
		t.Fatalf("in flight: %v", err)
	}
	// A failed request frees its key.
	sut.broker.EXPECT().Reserve(gomock.Any(), "k3", "fp", gomock.Any()).Return(ports.IdempotencyRecord{Fingerprint: "fp"}, true, nil)
	sut.broker.EXPECT().Release(gomock.Any(), "k3").Return(nil)
	if _, _, err := sut.svc.Idempotent(ctx, "k3", "fp", func() ([]byte, error) { return nil, domain.ErrQueueFull }); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("failed request: %v", err)
	}
}

// Cancel, retry and delete hand the broker the domain's own transition:
// the rule lives in domain.Task, the broker applies it atomically.
func TestManageUsesTheDomainRules(t *testing.T) {
	sut := newServiceSUT(t)
	ctx := context.Background()
	task := runningTask(t, "webhook", 1, 1)
	apply := func(_ context.Context, _ uuid.UUID, change func(*domain.Task) error) (*domain.Task, error) {
		cp := *task
		if err := change(&cp); err != nil {
			return nil, err
		}
		return &cp, nil
	}
	sut.broker.EXPECT().Update(gomock.Any(), taskID, gomock.Any()).DoAndReturn(apply).Times(2)
	got, err := sut.svc.Cancel(ctx, taskID)
	if err != nil || got.Status() != domain.StatusCancelled {
		t.Fatalf("cancel: %v %v", got, err)
	}
	var te *domain.TransitionError
	if _, err := sut.svc.Retry(ctx, taskID); !errors.As(err, &te) || te.Action != "retry" {
		t.Fatalf("retry a running task: %v", err)
	}
	sut.broker.EXPECT().Delete(gomock.Any(), taskID, gomock.Any()).DoAndReturn(func(_ context.Context, _ uuid.UUID, check func(*domain.Task) error) error {
		return check(task)
	})
	if err := sut.svc.Delete(ctx, taskID); !errors.As(err, &te) || te.Action != "delete" {
		t.Fatalf("delete a running task: %v", err)
	}
	if _, err := sut.svc.RetryMany(ctx, domain.StatusSucceeded, ""); !errors.Is(err, domain.ErrInvalidInput) {
		t.Fatalf("retry succeeded tasks: %v", err)
	}
	sut.broker.EXPECT().UpdateMany(gomock.Any(), ports.ListFilter{Statuses: []domain.Status{domain.StatusFailed}, Types: []string{"webhook"}}, ports.MaxBulkRetry, gomock.Any()).Return(7, nil)
	if n, err := sut.svc.RetryMany(ctx, domain.StatusFailed, "webhook"); err != nil || n != 7 {
		t.Fatalf("retry many: %d %v", n, err)
	}
}

func TestListLimits(t *testing.T) {
	sut := newServiceSUT(t)
	if _, err := sut.svc.List(context.Background(), ports.ListFilter{}, uuid.Nil, 1001); !errors.Is(err, domain.ErrInvalidInput) {
		t.Fatalf("limit 1001: %v", err)
	}
	sut.broker.EXPECT().List(gomock.Any(), ports.ListFilter{}, uuid.Nil, ports.DefaultListLimit).Return(ports.ListPage{}, nil)
	if _, err := sut.svc.List(context.Background(), ports.ListFilter{}, uuid.Nil, 0); err != nil {
		t.Fatal(err)
	}
}

// An attempt whose task is cancelled while it runs: the handler's context
// ends at once, and the outcome is not recorded.
func TestCancelledAttemptStopsAndIsNotSettled(t *testing.T) {
	s := newProcessorSUT(t)
	task := runningTask(t, "webhook", 0, 1)
	cancelled := make(chan struct{})
	s.queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task, Cancelled: cancelled}, nil)
	s.handler.EXPECT().Handle(gomock.Any(), task).DoAndReturn(func(ctx context.Context, _ *domain.Task) error {
		close(cancelled)
		<-ctx.Done()
		return ctx.Err()
	})
	// No Settle is expected.
	if err := s.proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if e := s.logs.LastEntry(); e == nil || !strings.Contains(e.Message, "cancelled") {
		t.Fatalf("log: %v", e)
	}
}

func TestResultIsKeptAndCut(t *testing.T) {
	ctrl := gomock.NewController(t)
	queue := mocks.NewMockTaskQueue(ctrl)
	log, _ := test.NewNullLogger()
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	h := ports.ResultFunc(func(context.Context, *domain.Task) ([]byte, error) { return []byte(`{"url":"https://x/y.png"}`), nil })
	proc := application.NewProcessor(queue, nil, map[string]ports.Handler{"webhook": h},
		application.ProcessorConfig{Policy: policy, TaskTimeout: time.Second, MaxResultBytes: 10}, log)
	task := runningTask(t, "webhook", 0, 1)
	queue.EXPECT().Dequeue(gomock.Any()).Return(ports.Attempt{Task: task}, nil)
	var got *domain.Task
	queue.EXPECT().Settle(gomock.Any(), 1, gomock.Any()).DoAndReturn(func(_ context.Context, _ int, st *domain.Task) error { got = st; return nil })
	if err := proc.ProcessNext(context.Background(), context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := got.Result(); got.Status() != domain.StatusSucceeded || !r.Truncated || string(r.Data) != `{"url":"ht` {
		t.Fatalf("result %+v %q", r, r.Data)
	}
}
