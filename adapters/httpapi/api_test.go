package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang/mock/gomock"
	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/ports/mocks"
)

var (
	id  = uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
)

type sut struct {
	svc     *mocks.MockTaskService
	handler http.Handler
	logs    *test.Hook
}

func newSUT(t *testing.T) *sut {
	ctrl := gomock.NewController(t)
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	s := &sut{svc: mocks.NewMockTaskService(ctrl), logs: hook}
	s.handler = httpapi.New(s.svc, httpapi.Options{MaxBodyBytes: 256}, log)
	return s
}

func (s *sut) do(method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	return rec
}

func pendingTask(t *testing.T) *domain.Task {
	p, _ := domain.ParsePriority(2)
	task, err := domain.NewTask(id, "example_task", []byte(`{"key":"value"}`), p, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// errorOf checks the response is a JSON error with the status and returns
// its message.
func errorOf(t *testing.T, rec *httptest.ResponseRecorder, status int) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d; want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var body struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
		t.Fatalf("not a JSON error: %s", rec.Body)
	}
	return body.Error
}

func TestSubmitAccepted(t *testing.T) {
	s := newSUT(t)
	s.svc.EXPECT().Submit(gomock.Any(), ports.Submission{Type: "example_task", Payload: []byte(`{"key": "value"}`), MaxRetries: 3, Priority: 2}).
		Return(pendingTask(t), nil)
	rec := s.do("POST", "/task", `{"type":"example_task","payload":{"key": "value"},"max_retries":3,"priority":2}`)
	if rec.Code != http.StatusAccepted || rec.Header().Get("Location") != "/task/"+id.String() {
		t.Fatalf("got %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	var body map[string]string
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if body["message"] != "Task enqueued" || body["id"] != id.String() {
		t.Fatalf("body %s", rec.Body)
	}
}

func TestSubmitDefaults(t *testing.T) {
	s := newSUT(t)
	want := ports.Submission{Type: "example_task", Payload: []byte("{}"), MaxRetries: 1, Priority: 0}
	s.svc.EXPECT().Submit(gomock.Any(), want).Return(pendingTask(t), nil).Times(2)
	for _, body := range []string{`{"type":"example_task"}`, `{"type":"example_task","payload":null}`} {
		if rec := s.do("POST", "/task", body); rec.Code != http.StatusAccepted {
			t.Fatalf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
}

func TestSubmitBadRequests(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty body", ``, "empty"},
		{"whitespace body", "  \n", "empty"},
		{"not json", `type=x`, "not a valid JSON object"},
		{"array", `[1]`, "got a JSON array"},
		{"null body", `null`, "not null"},
		{"truncated", `{"type":"x"`, "not a valid JSON object"},
		{"trailing data", `{"type":"x"} {}`, "after the JSON object"},
		{"trailing garbage", `{"type":"x"}x`, "after the JSON object"},
		{"unknown field", `{"type":"x","colour":1}`, `unknown field(s) "colour"`},
		{"case variant is unknown", `{"Type":"x"}`, `unknown field(s) "Type"`},
		{"nested keys are not fields", `{"type":"x","payload":{"colour":{"type":1}},"priority":1,"x\u0079":2}`, `unknown field(s) "xy"`},
		{"escaped known key counts", `{"typ\u0065":"a","type":"b"}`, `field(s) "type" given more than once`},
		{"duplicate field", `{"type":"x","priority":1,"priority":2}`, `field(s) "priority" given more than once`},
		{"missing type", `{"priority":1}`, "type: is required"},
		{"null type", `{"type":null}`, "type: must be a string"},
		{"numeric type", `{"type":5}`, "type: must be a string"},
		{"payload array", `{"type":"x","payload":[1]}`, "payload: must be a JSON object"},
		{"payload string", `{"type":"x","payload":"{}"}`, "payload: must be a JSON object"},
		{"payload number", `{"type":"x","payload":1}`, "payload: must be a JSON object"},
		{"fraction priority", `{"type":"x","priority":2.5}`, "priority: must be an integer"},
		{"string priority", `{"type":"x","priority":"1"}`, "priority: must be an integer"},
		{"null priority", `{"type":"x","priority":null}`, "priority: must be an integer"},
		{"exponent priority", `{"type":"x","priority":1e2}`, "priority: must be an integer"},
		{"bool retries", `{"type":"x","max_retries":true}`, "max_retries: must be an integer"},
		{"null retries", `{"type":"x","max_retries":null}`, "max_retries: must be an integer"},
		{"huge retries", `{"type":"x","max_retries":99999999999999999999}`, "max_retries: must be an integer"},
		{"invalid utf-8 in value", "{\"type\":\"x\",\"payload\":{\"k\":\"\xff\"}}", "UTF-8"},
		{"invalid utf-8 in key", "{\"\xc3\":1}", "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSUT(t) // no EXPECT: the service must not be called
			msg := errorOf(t, s.do("POST", "/task", tc.body), http.StatusBadRequest)
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q; want it to contain %q", msg, tc.want)
			}
			if e := s.logs.LastEntry(); e == nil || e.Data["status"] != http.StatusBadRequest {
				t.Fatal("bad request not logged")
			}
		})
	}
}

func TestSubmitServiceErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		retryAfter string
		want       string
	}{
		{"validation", fmt.Errorf("wrapped: %w", &domain.ValidationError{Field: "priority", Problem: "must be an integer from 0 to 9, got 10"}), 400, "", "priority: must be an integer from 0 to 9"},
		{"unknown type", &domain.UnknownTypeError{Type: "nope", Known: []string{"example_task"}}, 400, "", "known types: example_task"},
		{"queue full", fmt.Errorf("enqueue: %w", domain.ErrQueueFull), 503, "1", "queue is full"},
		{"shutting down", domain.ErrShuttingDown, 503, "1", "shutting down"},
		{"broker down", fmt.Errorf("x: %w", domain.ErrUnavailable), 503, "1", "unavailable"},
		{"internal", errors.New("secret detail /var/lib"), 500, "", "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSUT(t)
			s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(nil, tc.err)
			rec := s.do("POST", "/task", `{"type":"example_task"}`)
			msg := errorOf(t, rec, tc.status)
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "secret") {
				t.Fatalf("error %q; want %q", msg, tc.want)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After %q; want %q", got, tc.retryAfter)
			}
			if tc.status == 500 && s.logs.LastEntry().Level != logrus.ErrorLevel {
				t.Fatal("internal error not logged at error level")
			}
		})
	}
}

func TestSubmitBodyTooLarge(t *testing.T) {
	s := newSUT(t)
	body := `{"type":"example_task","payload":{"k":"` + strings.Repeat("a", 300) + `"}}`
	msg := errorOf(t, s.do("POST", "/task", body), http.StatusRequestEntityTooLarge)
	if !strings.Contains(msg, "256 bytes") {
		t.Fatalf("error %q", msg)
	}
}

func TestGetTask(t *testing.T) {
	s := newSUT(t)
	task := pendingTask(t)
	policy, _ := domain.NewRetryPolicy(time.Second, time.Second)
	_ = task.Start(now.Add(time.Second))
	_ = task.Fail(now.Add(2*time.Second), "webhook returned 500", policy, 0.5)
	s.svc.EXPECT().Get(gomock.Any(), id).Return(task, nil)
	rec := s.do("GET", "/task/"+id.String(), "")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"id": id.String(), "type": "example_task", "payload": map[string]any{"key": "value"},
		"priority": 2.0, "max_retries": 3.0, "status": "retrying", "attempts": 1.0, "retries_left": 2.0,
		"last_error": "webhook returned 500", "created_at": "2026-03-04T05:06:07Z",
		"updated_at": "2026-03-04T05:06:09Z", "started_at": "2026-03-04T05:06:08Z",
		"next_attempt_at": "2026-03-04T05:06:10Z",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestGetTaskErrors(t *testing.T) {
	s := newSUT(t)
	if msg := errorOf(t, s.do("GET", "/task/not-a-uuid", ""), 400); !strings.Contains(msg, "not a valid task id") {
		t.Fatal(msg)
	}
	s.svc.EXPECT().Get(gomock.Any(), id).Return(nil, fmt.Errorf("get: %w", domain.ErrTaskNotFound))
	errorOf(t, s.do("GET", "/task/"+id.String(), ""), 404)
	s.svc.EXPECT().Get(gomock.Any(), id).Return(nil, domain.ErrUnavailable)
	rec := s.do("GET", "/task/"+id.String(), "")
	errorOf(t, rec, 503)
	if rec.Header().Get("Retry-After") != "" {
		t.Fatal("GET should not carry Retry-After")
	}
}

func TestRouting(t *testing.T) {
	s := newSUT(t)
	rec := s.do("GET", "/healthz", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ok"`) {
		t.Fatalf("healthz: %d %s", rec.Code, rec.Body)
	}
	rec = s.do("DELETE", "/task", "")
	errorOf(t, rec, 405)
	if rec.Header().Get("Allow") != "POST" {
		t.Fatalf("Allow %q", rec.Header().Get("Allow"))
	}
	rec = s.do("POST", "/task/"+id.String(), "")
	errorOf(t, rec, 405)
	if rec.Header().Get("Allow") != "GET, HEAD, DELETE" {
		t.Fatalf("Allow %q", rec.Header().Get("Allow"))
	}
	errorOf(t, s.do("POST", "/healthz", ""), 405)
	errorOf(t, s.do("GET", "/nope", ""), 404)
	errorOf(t, s.do("GET", "/task", ""), 405)
}

// HEAD is served wherever GET is (probes and load balancers use it), with
// the same status and headers and no body.
func TestHeadWhereverGet(t *testing.T) {
	s := newSUT(t)
	for _, path := range []string{"/healthz", "/readyz", "/task/" + id.String()} {
		switch path {
		case "/readyz":
			s.svc.EXPECT().Ready(gomock.Any()).Return(nil)
		case "/task/" + id.String():
			s.svc.EXPECT().Get(gomock.Any(), id).Return(pendingTask(t), nil)
		}
		rec := s.do("HEAD", path, "")
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("HEAD %s: %d %v", path, rec.Code, rec.Header())
		}
	}
}

// /healthz is liveness (200 while the process answers, draining or not);
// /readyz says whether this instance can take and store tasks.
func TestReadiness(t *testing.T) {
	s := newSUT(t)
	s.svc.EXPECT().Ready(gomock.Any()).Return(nil)
	if rec := s.do("GET", "/readyz", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ready"`) {
		t.Fatalf("ready: %d %s", rec.Code, rec.Body)
	}
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{domain.ErrShuttingDown, "shutting down"},
		{fmt.Errorf("%w: dial tcp: connection refused", domain.ErrUnavailable), "broker is unavailable"},
	} {
		s.svc.EXPECT().Ready(gomock.Any()).Return(tc.err)
		rec := s.do("GET", "/readyz", "")
		var body map[string]string
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != 503 || body["status"] != "not ready" || body["reason"] != tc.reason {
			t.Fatalf("%v: %d %s", tc.err, rec.Code, rec.Body)
		}
		if rec := s.do("GET", "/healthz", ""); rec.Code != 200 {
			t.Fatalf("healthz while not ready: %d", rec.Code)
		}
	}
}

// The router's own answers are JSON too: no empty 301 for a path with
// "..", none for CONNECT.
func TestOddRequestsGetJSON(t *testing.T) {
	s := newSUT(t)
	errorOf(t, s.do("GET", "/task/../healthz", ""), 404)
	errorOf(t, s.do("GET", "//healthz", ""), 404)
	req := httptest.NewRequest("CONNECT", "/", nil)
	req.URL.Path, req.Host = "", "example.com:443"
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	if msg := errorOf(t, rec, 400); !strings.Contains(msg, "CONNECT") {
		t.Fatal(msg)
	}
}

// Echoed input is cut short, in the body and in the log: a huge method,
// path or list of unknown keys costs a short line.
func TestEchoedInputIsTruncated(t *testing.T) {
	s := newSUT(t)
	var body strings.Builder
	body.WriteString(`{"type":"x"`)
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&body, `,"k%d":1`, i)
	}
	body.WriteString("}")
	quiet, _ := test.NewNullLogger()
	s.handler = httpapi.New(s.svc, httpapi.Options{MaxBodyBytes: 1 << 20}, quiet)
	msg := errorOf(t, s.do("POST", "/task", body.String()), 400)
	if len(msg) > 300 || !strings.Contains(msg, "and 19995 more") {
		t.Fatalf("error of %d bytes: %.300s", len(msg), msg)
	}
	s = newSUT(t)
	long := "/" + strings.Repeat("é", 100000)
	rec := s.do("GET", long, "")
	if msg := errorOf(t, rec, 404); len(msg) > 200 || !strings.Contains(msg, "…") {
		t.Fatalf("404 for a long path: %d bytes: %.200s", len(msg), msg)
	}
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.Method = strings.Repeat("M", 100000)
	rec = httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	if msg := errorOf(t, rec, 405); len(msg) > 200 {
		t.Fatalf("405 for a long method: %d bytes", len(msg))
	}
	for _, e := range s.logs.AllEntries() {
		if line, _ := e.String(); len(line) > 1000 {
			t.Fatalf("log line of %d bytes", len(line))
		}
	}
}

// Client errors log at debug, so a polling client cannot flood the log; a
// broker that is away logs its cause as a warning, once per interval.
func TestLogLevels(t *testing.T) {
	s := newSUT(t)
	errorOf(t, s.do("GET", "/nope", ""), 404)
	errorOf(t, s.do("POST", "/task", "{"), 400)
	for _, e := range s.logs.AllEntries() {
		if e.Level != logrus.DebugLevel {
			t.Fatalf("client error logged at %v: %s", e.Level, e.Message)
		}
	}
	s.logs.Reset()
	cause := fmt.Errorf("enqueue: %w: dial tcp 10.0.0.1:6379: connect: connection refused", domain.ErrUnavailable)
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(nil, cause).Times(3)
	for i := 0; i < 3; i++ {
		errorOf(t, s.do("POST", "/task", `{"type":"x"}`), 503)
	}
	warnings := 0
	for _, e := range s.logs.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warnings++
			if !strings.Contains(fmt.Sprint(e.Data["error"]), "connection refused") {
				t.Fatalf("warning without the cause: %v", e.Data)
			}
		}
	}
	if warnings != 1 {
		t.Fatalf("%d warnings for 3 refusals in a row; want 1", warnings)
	}
}

// A client that gives up is not an internal error: no 500 line at error.
func TestClientGoneIsNotAnError(t *testing.T) {
	s := newSUT(t)
	ctx, cancel := context.WithCancel(context.Background())
	s.svc.EXPECT().Get(gomock.Any(), id).DoAndReturn(func(context.Context, uuid.UUID) (*domain.Task, error) {
		cancel()
		return nil, fmt.Errorf("get: %w", context.Canceled)
	})
	req := httptest.NewRequest("GET", "/task/"+id.String(), nil).WithContext(ctx)
	s.handler.ServeHTTP(httptest.NewRecorder(), req)
	for _, e := range s.logs.AllEntries() {
		if e.Level < logrus.DebugLevel {
			t.Fatalf("client going away logged at %v: %s %v", e.Level, e.Message, e.Data)
		}
	}
}

func TestResponsesAreJSON(t *testing.T) {
	s := newSUT(t)
	s.svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(pendingTask(t), nil)
	rec := s.do("POST", "/task", `{"type":"example_task"}`)
	b, _ := io.ReadAll(rec.Body)
	if !json.Valid(b) || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%s", b)
	}
}

// Request bodies being read at once are bounded: past the budget a
// submission gets 503 with Retry-After instead of more memory.
func TestInflightBodiesAreBounded(t *testing.T) {
	ctrl := gomock.NewController(t)
	svc := mocks.NewMockTaskService(ctrl)
	log, _ := test.NewNullLogger()
	h := httpapi.New(svc, httpapi.Options{MaxBodyBytes: 256, MaxInflightBodyBytes: 300}, log)
	body := `{"type":"example_task","payload":{"k":"` + strings.Repeat("a", 150) + `"}}`
	entered, release := make(chan struct{}), make(chan struct{})
	svc.EXPECT().Submit(gomock.Any(), gomock.Any()).DoAndReturn(func(context.Context, ports.Submission) (*domain.Task, error) {
		close(entered)
		<-release
		return pendingTask(t), nil
	})
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/task", strings.NewReader(body)))
		done <- rec.Code
	}()
	<-entered
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/task", strings.NewReader(body)))
	if msg := errorOf(t, rec, 503); !strings.Contains(msg, "in flight") || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("second body over the budget: %q %v", msg, rec.Header())
	}
	close(release)
	if code := <-done; code != 202 {
		t.Fatalf("first submission: %d", code)
	}
	svc.EXPECT().Submit(gomock.Any(), gomock.Any()).Return(pendingTask(t), nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/task", strings.NewReader(body)))
	if rec.Code != 202 {
		t.Fatalf("after the first finished: %d; the budget was not given back", rec.Code)
	}
}
