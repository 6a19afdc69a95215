package httpapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

func (s *sut) doWith(method, path, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	return rec
}

func TestSubmitSchedules(t *testing.T) {
	s := newSUT(t)
	runAt := time.Date(2026, 12, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, sub ports.Submission) (*domain.Task, error) {
		if !sub.RunAt.Equal(runAt) || sub.Delay != 0 {
			t.Errorf("submission %+v", sub)
		}
		return pendingTask(t), nil
	})
	if rec := s.do("POST", "/task", `{"type":"x","run_at":"2026-12-01T10:00:00+01:00"}`); rec.Code != 202 {
		t.Fatalf("run_at: %d %s", rec.Code, rec.Body)
	}
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, sub ports.Submission) (*domain.Task, error) {
		if sub.Delay != 90*time.Second {
			t.Errorf("delay %v", sub.Delay)
		}
		return pendingTask(t), nil
	})
	if rec := s.do("POST", "/task", `{"type":"x","delay":"90s"}`); rec.Code != 202 {
		t.Fatalf("delay: %d %s", rec.Code, rec.Body)
	}
	for body, want := range map[string]string{
		`{"type":"x","run_at":"2026-12-01T10:00:00Z","delay":"1s"}`: "not both",
		`{"type":"x","run_at":"2026-12-01 10:00"}`:                  "run_at: must be an RFC 3339 time",
		`{"type":"x","run_at":"2026-12-01T10:00:00"}`:               "with a zone",
		`{"type":"x","run_at":12}`:                                  "run_at: must be a string",
		`{"type":"x","delay":"soon"}`:                               "delay: must be a duration",
		`{"type":"x","delay":"-5s"}`:                                "delay: must not be negative",
		`{"type":"x","delay":"9000h"}`:                              "delay: must be at most 366 days",
	} {
		if msg := errorOf(t, s.do("POST", "/task", body), 400); !strings.Contains(msg, want) {
			t.Errorf("%s: %q; want %q", body, msg, want)
		}
	}
}

func TestSubmitBatch(t *testing.T) {
	s := newSUT(t)
	a, b := pendingTask(t), pendingTask(t)
	s.svc.EXPECT().SubmitBatch(gomock.Any(), gomock.Len(2)).Return([]*domain.Task{a, b}, nil)
	rec := s.do("POST", "/tasks", `{"tasks":[{"type":"x"},{"type":"y","priority":3,"delay":"1m"}]}`)
	var got struct {
		Message string
		IDs     []string
	}
	if rec.Code != 202 || json.Unmarshal(rec.Body.Bytes(), &got) != nil || got.Message != "Tasks enqueued" || len(got.IDs) != 2 {
		t.Fatalf("batch: %d %s", rec.Code, rec.Body)
	}
	for body, want := range map[string]string{
		`{"tasks":[{"type":"x"},{"type":"x","priority":10.5}]}`: "tasks[1].priority: must be an integer",
		`{"tasks":[{"type":"x"},{"typo":"x"}]}`:                 `tasks[1].unknown field(s) "typo"`,
		`{"tasks":[{"type":"x"},7]}`:                            "tasks[1] is not a valid JSON object",
		`{"tasks":{}}`:                                          "tasks: is required and must be an array",
		`{"task":[]}`:                                           `unknown field(s) "task"`,
		`[]`:                                                    "not a valid JSON object",
	} {
		if msg := errorOf(t, s.do("POST", "/tasks", body), 400); !strings.Contains(msg, want) {
			t.Errorf("%s: %q; want %q", body, msg, want)
		}
	}
	s.svc.EXPECT().SubmitBatch(gomock.Any(), gomock.Any()).Return(nil, &domain.ItemError{Index: 4, Err: &domain.UnknownTypeError{Type: "z", Known: []string{"x"}}})
	if msg := errorOf(t, s.do("POST", "/tasks", `{"tasks":[{"type":"z"}]}`), 400); !strings.HasPrefix(msg, "tasks[4].type: \"z\" is not a type") {
		t.Fatalf("unknown type in a batch: %q", msg)
	}
	s.svc.EXPECT().SubmitBatch(gomock.Any(), gomock.Any()).Return(nil, domain.ErrQueueFull)
	if rec := s.do("POST", "/tasks", `{"tasks":[{"type":"x"}]}`); rec.Code != 503 || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("batch into a full queue: %d %v", rec.Code, rec.Header())
	}
}

// The same Idempotency-Key and request: the original response again,
// marked replayed; another request: 422; the first still running: 409.
func TestIdempotencyKey(t *testing.T) {
	s := newSUT(t)
	key := map[string]string{"Idempotency-Key": "order-42"}
	var stored []byte
	var fps []string
	s.svc.EXPECT().Idempotent(gomock.Any(), "order-42", gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, _, fp string, run func() ([]byte, error)) ([]byte, bool, error) {
			fps = append(fps, fp)
			if stored != nil {
				return stored, true, nil
			}
			var err error
			stored, err = run()
			return stored, false, err
		}).Times(2)
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(pendingTask(t), nil).Times(1)
	first := s.doWith("POST", "/task", `{"type":"x","payload":{"a":1,"b":2}}`, key)
	again := s.doWith("POST", "/task", "{ \"payload\": {\"a\": 1, \"b\": 2},\n \"type\": \"x\" }", key)
	if first.Code != 202 || again.Code != 202 || first.Body.String() != again.Body.String() ||
		again.Header().Get("Location") != first.Header().Get("Location") || again.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s %v / %d %s %v", first.Code, first.Body, first.Header(), again.Code, again.Body, again.Header())
	}
	if fps[0] != fps[1] {
		t.Fatal("the same request with other whitespace and key order has another fingerprint")
	}
	s.svc.EXPECT().Idempotent(gomock.Any(), "order-42", gomock.Any(), gomock.Any()).Return(nil, false, domain.ErrIdempotencyKeyReused)
	if msg := errorOf(t, s.doWith("POST", "/task", `{"type":"y"}`, key), 422); !strings.Contains(msg, `"order-42"`) {
		t.Fatalf("422: %q", msg)
	}
	s.svc.EXPECT().Idempotent(gomock.Any(), "order-42", gomock.Any(), gomock.Any()).Return(nil, false, domain.ErrIdempotencyInFlight)
	errorOf(t, s.doWith("POST", "/task", `{"type":"x"}`, key), 409)
	for _, bad := range []string{strings.Repeat("k", 256), "ключ", "a\tb"} {
		if msg := errorOf(t, s.doWith("POST", "/task", `{"type":"x"}`, map[string]string{"Idempotency-Key": bad}), 400); !strings.Contains(msg, "Idempotency-Key") {
			t.Errorf("key %q: %q", bad, msg)
		}
	}
}

func TestListQuery(t *testing.T) {
	s := newSUT(t)
	next := uuid.Must(uuid.NewV7())
	cursor := base64.RawURLEncoding.EncodeToString(next[:])
	task := pendingTask(t)
	s.svc.EXPECT().List(gomock.Any(), ports.ListFilter{
		Statuses: []domain.Status{domain.StatusFailed, domain.StatusRunning, domain.StatusPending},
		Types:    []string{"a", "b"},
	}, next, 20).Return(ports.ListPage{Tasks: []*domain.Task{task}, Next: task.ID()}, nil)
	rec := s.do("GET", "/tasks?status=failed,running&status=pending&type=a,b&limit=20&cursor="+cursor, "")
	var got map[string]any
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	tasks := got["tasks"].([]any)
	first := tasks[0].(map[string]any)
	if len(tasks) != 1 || first["id"] != task.ID().String() || first["payload"] != nil || first["result"] != nil {
		t.Fatalf("listed tasks come without payload or result: %s", rec.Body)
	}
	tid := task.ID()
	if got["next_cursor"] != base64.RawURLEncoding.EncodeToString(tid[:]) {
		t.Fatalf("next_cursor %v", got["next_cursor"])
	}
	for query, want := range map[string]string{
		"status=done":   "status:",
		"limit=0":       "limit:",
		"limit=1001":    "limit:",
		"cursor=%%%":    "query:",
		"cursor=abc":    "cursor:",
		"type=a%20b":    "type:",
		"sort=asc":      "unknown query parameter",
		"status=ok,bad": "status:",
	} {
		if msg := errorOf(t, s.do("GET", "/tasks?"+query, ""), 400); !strings.Contains(msg, want) {
			t.Errorf("%s: %q; want %q", query, msg, want)
		}
	}
}

func TestCancelRetryDelete(t *testing.T) {
	s := newSUT(t)
	task := pendingTask(t)
	_ = task.Cancel(now)
	s.svc.EXPECT().Cancel(gomock.Any(), id).Return(task, nil)
	rec := s.do("POST", "/task/"+id.String()+"/cancel", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"status":"cancelled"`) {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	s.svc.EXPECT().Cancel(gomock.Any(), id).Return(nil, fmt.Errorf("cancel: %w", &domain.TransitionError{Action: "cancel", From: domain.StatusSucceeded}))
	if msg := errorOf(t, s.do("POST", "/task/"+id.String()+"/cancel", ""), 409); !strings.Contains(msg, "succeeded") {
		t.Fatalf("cancel a finished task: %q", msg)
	}
	s.svc.EXPECT().Retry(gomock.Any(), id).Return(nil, domain.ErrTaskNotFound)
	errorOf(t, s.do("POST", "/task/"+id.String()+"/retry", ""), 404)
	s.svc.EXPECT().Retry(gomock.Any(), id).Return(nil, domain.ErrQueueFull)
	errorOf(t, s.do("POST", "/task/"+id.String()+"/retry", ""), 503)
	s.svc.EXPECT().Delete(gomock.Any(), id).Return(nil)
	if rec := s.do("DELETE", "/task/"+id.String(), ""); rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	s.svc.EXPECT().Delete(gomock.Any(), id).Return(&domain.TransitionError{Action: "delete", From: domain.StatusRunning})
	errorOf(t, s.do("DELETE", "/task/"+id.String(), ""), 409)
	s.svc.EXPECT().RetryMany(gomock.Any(), domain.StatusFailed, "resize").Return(12, nil)
	if rec := s.do("POST", "/tasks/retry", `{"status":"failed","type":"resize"}`); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"retried":12`) {
		t.Fatalf("bulk retry: %d %s", rec.Code, rec.Body)
	}
	if msg := errorOf(t, s.do("POST", "/tasks/retry", `{"status":"sideways"}`), 400); !strings.Contains(msg, "status") {
		t.Fatalf("bulk retry of a bad status: %q", msg)
	}
}

func TestStats(t *testing.T) {
	s := newSUT(t)
	s.svc.EXPECT().Stats(gomock.Any()).Return(ports.Stats{
		ByType:        map[string]map[domain.Status]int64{"a": {domain.StatusPending: 3, domain.StatusFailed: 1}, "b": {domain.StatusPending: 2}},
		OldestPending: time.Now().Add(-10 * time.Second),
	}, nil)
	rec := s.do("GET", "/stats", "")
	var got struct {
		Counts                  map[string]int64
		Types                   map[string]map[string]int64
		OldestPendingAgeSeconds float64 `json:"oldest_pending_age_seconds"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if got.Counts["pending"] != 5 || got.Counts["failed"] != 1 || got.Counts["scheduled"] != 0 || got.Types["a"]["pending"] != 3 || got.OldestPendingAgeSeconds < 9 {
		t.Fatalf("stats %+v", got)
	}
}

func TestResultShown(t *testing.T) {
	s := newSUT(t)
	task := pendingTask(t)
	_ = task.Start(now)
	_ = task.SucceedWith(now, domain.NewResult([]byte(`{"url":"https://x/y.png"}`), 64))
	s.svc.EXPECT().Get(gomock.Any(), id).Return(task, nil)
	if rec := s.do("GET", "/task/"+id.String(), ""); !strings.Contains(rec.Body.String(), `"result":{"url":"https://x/y.png"}`) || strings.Contains(rec.Body.String(), "result_truncated") {
		t.Fatalf("result: %s", rec.Body)
	}
	cut := pendingTask(t)
	_ = cut.Start(now)
	_ = cut.SucceedWith(now, domain.NewResult([]byte(`{"url":"https://x/y.png"}`), 8))
	s.svc.EXPECT().Get(gomock.Any(), id).Return(cut, nil)
	if rec := s.do("GET", "/task/"+id.String(), ""); !strings.Contains(rec.Body.String(), `"result":"{\"url\":\"","result_truncated":true`) {
		t.Fatalf("cut result: %s", rec.Body)
	}
}
