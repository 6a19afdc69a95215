package application_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

var (
	now    = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	taskID = uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
)

type serviceSUT struct {
	svc    *application.Service
	broker *mocks.MockBroker
	logs   *test.Hook
}

func newServiceSUT(t *testing.T) serviceSUT {
	ctrl := gomock.NewController(t)
	broker := mocks.NewMockBroker(ctrl)
	log, hook := test.NewNullLogger()
	svc := application.NewService(broker, application.ServiceConfig{
		Types: []string{"webhook", "example_task"},
		NewID: func() (uuid.UUID, error) { return taskID, nil },
		Now:   func() time.Time { return now },
	}, log)
	return serviceSUT{svc: svc, broker: broker, logs: hook}
}

func TestSubmitEnqueuesAndLogs(t *testing.T) {
	sut := newServiceSUT(t)
	p, _ := domain.ParsePriority(2)
	want, _ := domain.NewTask(taskID, "example_task", []byte(`{"k":"v"}`), p, 3, now)
	sut.broker.EXPECT().Enqueue(gomock.Any(), want).Return(nil)

	got, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "example_task", Payload: []byte(`{"k":"v"}`), Priority: 2, MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != taskID || got.Status() != domain.StatusPending {
		t.Fatalf("Submit returned %+v", got.Snapshot())
	}
	entry := sut.logs.LastEntry()
	if entry == nil || entry.Level != logrus.InfoLevel || entry.Data["task_id"] != taskID || entry.Data["priority"] != 2 || entry.Data["type"] != "example_task" {
		t.Fatalf("submission log line: %+v", entry)
	}
}

func TestSubmitRejectsBadInputWithoutEnqueueing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sub    ports.Submission
		target error
		field  string
	}{
		{"bad type", ports.Submission{Type: "a b"}, domain.ErrInvalidInput, "type"},
		{"unknown type", ports.Submission{Type: "nope"}, domain.ErrUnknownTaskType, ""},
		{"priority", ports.Submission{Type: "webhook", Priority: 10}, domain.ErrInvalidInput, "priority"},
		{"max retries", ports.Submission{Type: "webhook", MaxRetries: 101}, domain.ErrInvalidInput, "max_retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sut := newServiceSUT(t) // no EXPECT: any broker call fails the test
			_, err := sut.svc.Submit(context.Background(), tc.sub)
			if !errors.Is(err, tc.target) {
				t.Fatalf("error %v; want %v", err, tc.target)
			}
			var ve *domain.ValidationError
			if tc.field != "" && (!errors.As(err, &ve) || ve.Field != tc.field) {
				t.Fatalf("error %v; want field %s", err, tc.field)
			}
			var ue *domain.UnknownTypeError
			if errors.As(err, &ue) && (ue.Type != "nope" || len(ue.Known) != 2 || ue.Known[0] != "example_task") {
				t.Fatalf("unknown type error lists %v", ue.Known)
			}
		})
	}
}

func TestSubmitPassesBrokerErrorsWrapped(t *testing.T) {
	for _, brokerErr := range []error{domain.ErrQueueFull, domain.ErrStorageFull, domain.ErrUnavailable} {
		sut := newServiceSUT(t)
		sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).Return(brokerErr)
		_, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "webhook"})
		if !errors.Is(err, brokerErr) {
			t.Fatalf("error %v; want wrapped %v", err, brokerErr)
		}
	}
}

func TestSubmitAfterBeginShutdown(t *testing.T) {
	sut := newServiceSUT(t)
	sut.svc.BeginShutdown()
	if _, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "webhook"}); !errors.Is(err, domain.ErrShuttingDown) {
		t.Fatalf("error %v; want ErrShuttingDown", err)
	}
}

func TestSubmitIDFailure(t *testing.T) {
	ctrl := gomock.NewController(t)
	log, _ := test.NewNullLogger()
	boom := errors.New("entropy")
	svc := application.NewService(mocks.NewMockBroker(ctrl), application.ServiceConfig{Types: []string{"x"}, NewID: func() (uuid.UUID, error) { return uuid.Nil, boom }}, log)
	if _, err := svc.Submit(context.Background(), ports.Submission{Type: "x"}); !errors.Is(err, boom) {
		t.Fatalf("error %v", err)
	}
}

func TestGet(t *testing.T) {
	sut := newServiceSUT(t)
	p, _ := domain.ParsePriority(0)
	task, _ := domain.NewTask(taskID, "webhook", nil, p, 1, now)
	sut.broker.EXPECT().Get(gomock.Any(), taskID).Return(task, nil)
	got, err := sut.svc.Get(context.Background(), taskID)
	if err != nil || got != task {
		t.Fatalf("Get = %v, %v", got, err)
	}
	missing := uuid.New()
	sut.broker.EXPECT().Get(gomock.Any(), missing).Return(nil, domain.ErrTaskNotFound)
	if _, err := sut.svc.Get(context.Background(), missing); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

// A client that gives up while the broker answers does not cut the
// enqueue short: the task is stored (and logged) or not, never unknown.
func TestSubmitOutlivesTheClient(t *testing.T) {
	sut := newServiceSUT(t)
	ctx, cancel := context.WithCancel(context.Background())
	sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, _ ...*domain.Task) error {
		cancel() // the client goes away while the broker works
		return ctx.Err()
	})
	if _, err := sut.svc.Submit(ctx, ports.Submission{Type: "webhook"}); err != nil {
		t.Fatalf("Submit = %v; want the task stored", err)
	}
	if e := sut.logs.LastEntry(); e == nil || e.Message != "task submitted" {
		t.Fatalf("stored task not logged: %v", e)
	}
}

func TestReady(t *testing.T) {
	sut := newServiceSUT(t)
	sut.broker.EXPECT().Ping(gomock.Any()).Return(nil)
	if err := sut.svc.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	sut.broker.EXPECT().Ping(gomock.Any()).Return(domain.ErrUnavailable)
	if err := sut.svc.Ready(context.Background()); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Ready with the broker away = %v", err)
	}
	sut.svc.BeginShutdown()
	if err := sut.svc.Ready(context.Background()); !errors.Is(err, domain.ErrShuttingDown) {
		t.Fatalf("Ready while draining = %v", err)
	}
}
