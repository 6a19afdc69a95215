package httpapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang/mock/gomock"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

func TestSubmitKey(t *testing.T) {
	s := newSUT(t)
	keyed := pendingTask(t)
	_ = keyed.SetKey("acme")
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, sub ports.Submission) (*domain.Task, error) {
		if sub.Key != "acme" {
			t.Errorf("key %q", sub.Key)
		}
		return keyed, nil
	})
	if rec := s.do("POST", "/task", `{"type":"x","key":"acme"}`); rec.Code != 202 {
		t.Fatalf("key: %d %s", rec.Code, rec.Body)
	}
	for body, want := range map[string]string{
		`{"type":"x","key":""}`:                                 "key: must not be empty",
		`{"type":"x","key":7}`:                                  "key: must be a string",
		`{"type":"x","key":null}`:                               "key: must be a string",
		`{"type":"x","key":"` + strings.Repeat("k", 129) + `"}`: "key: must be at most 128 characters",
		`{"type":"x","key":"a\u0000b"}`:                         "key: must not contain control characters",
		`{"tasks":[{"type":"x"},{"type":"x","key":""}]}`:        "tasks[1].key: must not be empty",
	} {
		path := "/task"
		if strings.HasPrefix(body, `{"tasks"`) {
			path = "/tasks"
		}
		if msg := errorOf(t, s.do("POST", path, body), 400); !strings.Contains(msg, want) {
			t.Errorf("%s: %q; want %q", body, msg, want)
		}
	}
	// 128 characters of two bytes each are 128 characters.
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(keyed, nil)
	if rec := s.doWith("POST", "/task", `{"type":"x","key":"`+strings.Repeat("é", 100)+`"}`, nil); rec.Code != 202 {
		t.Fatalf("a key of 100 two-byte characters: %d %s", rec.Code, rec.Body)
	}
	// GET shows the key.
	s.svc.EXPECT().Get(gomock.Any(), keyed.ID()).Return(keyed, nil)
	var got struct{ Key string }
	if rec := s.do("GET", "/task/"+keyed.ID().String(), ""); json.Unmarshal(rec.Body.Bytes(), &got) != nil || got.Key != "acme" {
		t.Fatalf("GET: %s", rec.Body)
	}
}

func TestTypesAndPause(t *testing.T) {
	s := newSUT(t)
	limits, _ := domain.NewTypeLimits(10, 100, time.Second)
	s.svc.EXPECT().Types(gomock.Any()).Return([]ports.TypeInfo{
		{Name: "report", Counts: map[domain.Status]int64{domain.StatusPending: 2}, Paused: true},
		{Name: "resize", Runs: true, Limits: limits, Counts: map[domain.Status]int64{}},
	}, nil)
	rec := s.do("GET", "/types", "")
	want := `{"types":[` +
		`{"name":"report","runs_here":false,"paused":true,"counts":{"cancelled":0,"failed":0,"pending":2,"retrying":0,"running":0,"scheduled":0,"succeeded":0}},` +
		`{"name":"resize","runs_here":true,"limits":{"concurrency":10,"rate":100,"period":"1s"},"paused":false,"counts":{"cancelled":0,"failed":0,"pending":0,"retrying":0,"running":0,"scheduled":0,"succeeded":0}}]}`
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != want {
		t.Fatalf("GET /types: %d\n%s\nwant\n%s", rec.Code, rec.Body, want)
	}

	s.svc.EXPECT().Pause(gomock.Any(), "resize").Return(nil)
	if rec := s.do("POST", "/types/resize/pause", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"paused":true`) {
		t.Fatalf("pause: %d %s", rec.Code, rec.Body)
	}
	s.svc.EXPECT().Resume(gomock.Any(), "resize").Return(nil)
	if rec := s.do("POST", "/types/resize/resume", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"paused":false`) {
		t.Fatalf("resume: %d %s", rec.Code, rec.Body)
	}
	s.svc.EXPECT().Pause(gomock.Any(), "nope").Return(&domain.UnknownTypeError{Type: "nope", Known: []string{"resize"}})
	if msg := errorOf(t, s.do("POST", "/types/nope/pause", ""), 400); !strings.Contains(msg, "known types: resize") {
		t.Fatalf("pause of an unknown type: %q", msg)
	}
	s.svc.EXPECT().Pause(gomock.Any(), "resize").Return(domain.ErrUnavailable)
	if rec := s.do("POST", "/types/resize/pause", ""); rec.Code != 503 {
		t.Fatalf("pause with the broker down: %d", rec.Code)
	}
	if rec := s.do("GET", "/types/resize/pause", ""); rec.Code != 405 {
		t.Fatalf("GET on pause: %d", rec.Code)
	}
}
