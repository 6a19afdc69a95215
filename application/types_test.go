package application_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

func TestSubmitWithKey(t *testing.T) {
	sut := newServiceSUT(t)
	var stored *domain.Task
	sut.broker.EXPECT().Enqueue(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, ts ...*domain.Task) error { stored = ts[0]; return nil })
	if _, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "webhook", Key: "acme"}); err != nil {
		t.Fatal(err)
	}
	if stored.Key() != "acme" || sut.logs.LastEntry().Data["key"] != "acme" {
		t.Fatalf("key %q, log %v", stored.Key(), sut.logs.LastEntry().Data)
	}
	var verr *domain.ValidationError
	if _, err := sut.svc.Submit(context.Background(), ports.Submission{Type: "webhook", Key: "a\x00b"}); !errors.As(err, &verr) || verr.Field != "key" {
		t.Fatalf("bad key: %v", err)
	}
}

func TestTypesListsRunAcceptedStoredAndPaused(t *testing.T) {
	ctrl := gomock.NewController(t)
	broker := mocks.NewMockBroker(ctrl)
	log, _ := test.NewNullLogger()
	limits, _ := domain.NewTypeLimits(10, 100, time.Second)
	svc := application.NewService(broker, application.ServiceConfig{
		Types: []string{"resize", "report"}, Runs: []string{"resize"},
		Limits: map[string]domain.TypeLimits{"resize": limits},
	}, log)
	broker.EXPECT().Stats(gomock.Any()).Return(ports.Stats{ByType: map[string]map[domain.Status]int64{
		"resize": {domain.StatusPending: 3}, "legacy": {domain.StatusFailed: 1},
	}}, nil)
	broker.EXPECT().Paused(gomock.Any()).Return([]string{"report"}, nil)
	got, err := svc.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != "legacy" || got[1].Name != "report" || got[2].Name != "resize" {
		t.Fatalf("types: %+v", got)
	}
	if r := got[2]; !r.Runs || r.Limits != limits || r.Paused || r.Counts[domain.StatusPending] != 3 {
		t.Fatalf("resize: %+v", r)
	}
	if r := got[1]; r.Runs || !r.Paused {
		t.Fatalf("report: %+v", r)
	}
}

func TestPauseNeedsAKnownType(t *testing.T) {
	sut := newServiceSUT(t)
	sut.broker.EXPECT().Pause(gomock.Any(), "webhook").Return(nil)
	if err := sut.svc.Pause(context.Background(), "webhook"); err != nil {
		t.Fatal(err)
	}
	sut.broker.EXPECT().Stats(gomock.Any()).Return(ports.Stats{}, nil)
	var unknown *domain.UnknownTypeError
	if err := sut.svc.Pause(context.Background(), "nope"); !errors.As(err, &unknown) {
		t.Fatalf("pause of an unknown type: %v", err)
	}
	sut.broker.EXPECT().Stats(gomock.Any()).Return(ports.Stats{ByType: map[string]map[domain.Status]int64{"old": {domain.StatusPending: 1}}}, nil)
	sut.broker.EXPECT().Pause(gomock.Any(), "old").Return(nil)
	if err := sut.svc.Pause(context.Background(), "old"); err != nil {
		t.Fatalf("pause of a type with tasks stored: %v", err)
	}
	sut.broker.EXPECT().Resume(gomock.Any(), "nope").Return(nil)
	if err := sut.svc.Resume(context.Background(), "nope"); err != nil {
		t.Fatal(err)
	}
	var verr *domain.ValidationError
	if err := sut.svc.Resume(context.Background(), "bad type"); !errors.As(err, &verr) {
		t.Fatalf("resume of a bad name: %v", err)
	}
}
