package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/taskqueue/taskqueue/adapters/handlers"
	"github.com/taskqueue/taskqueue/domain"
)

func runningTask(t *testing.T) *domain.Task {
	p, _ := domain.ParsePriority(1)
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), "resize", []byte(`{"w":10}`), p, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_ = task.Start(time.Now())
	return task
}

func webhook(t *testing.T, url string) *handlers.Webhook {
	w, err := handlers.NewWebhook("resize", url, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWebhookPostsTaskAndSucceedsOn2xx(t *testing.T) {
	task := runningTask(t)
	var got struct {
		ID      string
		Type    string
		Payload map[string]int
		Attempt int
	}
	var headers http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers = r.Header.Clone()
		if r.Method != http.MethodPost {
			t.Errorf("method %s", r.Method)
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	if err := webhook(t, srv.URL+"/hook").Handle(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if got.ID != task.ID().String() || got.Type != "resize" || got.Payload["w"] != 10 || got.Attempt != 1 {
		t.Fatalf("body %+v", got)
	}
	if headers.Get("X-Task-Id") != task.ID().String() || headers.Get("X-Task-Attempt") != "1" || headers.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", headers)
	}
}

func TestWebhookFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   string
	}{
		{"server error", 500, `webhook for type "resize" returned 500`},
		{"client error", 404, `webhook for type "resize" returned 404`},
		{"redirect not followed", 302, `webhook for type "resize" returned 302`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var followed bool
			target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
			defer target.Close()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.status == 302 {
					w.Header().Set("Location", target.URL)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			err := webhook(t, srv.URL).Handle(context.Background(), runningTask(t))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v; want %q", err, tc.want)
			}
			if followed {
				t.Fatal("redirect was followed")
			}
		})
	}
}

func TestWebhookConnectionError(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	err := webhook(t, "http://"+addr+"/hook?token=abc123").Handle(context.Background(), runningTask(t))
	if err == nil || err.Error() != `webhook for type "resize" unreachable: connection refused` {
		t.Fatalf("error %v", err)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := webhook(t, srv.URL).Handle(ctx, runningTask(t))
	if err == nil || err.Error() != `webhook for type "resize" unreachable: timed out` {
		t.Fatalf("error %v", err)
	}
}

func TestNewWebhookValidatesURL(t *testing.T) {
	for _, u := range []string{"", "localhost:80", "ftp://x/y", "/relative", "http://"} {
		if _, err := handlers.NewWebhook("t", u, nil, 0); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// The example handler logs the payload's size and keys, never its values
// (the Quick start's handler must not copy secrets into the log).
func TestExampleLogsPayloadShapeNotValues(t *testing.T) {
	log, hook := test.NewNullLogger()
	p, _ := domain.ParsePriority(0)
	task, _ := domain.NewTask(uuid.Must(uuid.NewV7()), "example_task", []byte(`{"password":"hunter2","user":"ann"}`), p, 0, time.Now())
	_ = task.Start(time.Now())
	if err := handlers.NewExample(log).Handle(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	e := hook.LastEntry()
	if e == nil || e.Data["payload_bytes"] != 35 || fmt.Sprint(e.Data["payload_keys"]) != "[password user]" || e.Data["task_id"] != task.ID() {
		t.Fatalf("log %+v", e)
	}
	if line, _ := e.String(); strings.Contains(line, "hunter2") || strings.Contains(line, "ann") {
		t.Fatalf("a payload value reached the log: %s", line)
	}
}

// A 2xx status line is not enough: the whole body must arrive within the
// deadline, or the attempt fails saying why.
func TestWebhookNeedsTheWholeResponseInTime(t *testing.T) {
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		<-release // the rest never comes
	}))
	defer stalled.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := webhook(t, stalled.URL).Handle(ctx, runningTask(t))
	if err == nil || !strings.Contains(err.Error(), "returned 200 but its response body did not arrive whole: timed out") {
		t.Fatalf("stalled body: %v", err)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n7 bytes"))
		_ = c.Close()
	}()
	err = webhook(t, "http://"+l.Addr().String()).Handle(context.Background(), runningTask(t))
	if err == nil || !strings.Contains(err.Error(), "did not arrive whole") || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("truncated body: %v", err)
	}
}

// A failing webhook explains itself in last_error: the first 512 bytes of
// its body; the URL (hosts, ports, query secrets) never appears.
func TestWebhookErrorCarriesBodyNotURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(500)
		_, _ = w.Write([]byte("disk full: cannot write /var/img" + strings.Repeat("x", 2000)))
	}))
	defer srv.Close()
	err := webhook(t, srv.URL+"/resize?token=abc123").Handle(context.Background(), runningTask(t))
	want := `webhook for type "resize" returned 500: disk full: cannot write /var/img`
	if err == nil || !strings.HasPrefix(err.Error(), want) || len(err.Error()) != len(`webhook for type "resize" returned 500: `)+handlers.ErrorBodyBytes {
		t.Fatalf("error %.120q (%d bytes)", err, len(err.Error()))
	}
	if strings.Contains(err.Error(), "abc123") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("error shows the URL: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	got := handlers.RedactURL("https://user:pw@imgsvc:9000/resize?token=abc123&x=1")
	if strings.Contains(got, "pw") || strings.Contains(got, "abc123") || !strings.Contains(got, "imgsvc:9000/resize") || !strings.Contains(got, "token=xxxxx") {
		t.Fatalf("RedactURL = %s", got)
	}
}

// A 2xx JSON reply is the attempt's result; past the limit it comes back
// one byte longer than the limit, so the processor cuts and flags it; a
// body that is not JSON is no result.
func TestWebhookResult(t *testing.T) {
	for _, tc := range []struct {
		name, body, contentType string
		want                    string
	}{
		{"json", `{"width":64}`, "application/json", `{"width":64}`},
		{"json without a content type", `[1,2]`, "", `[1,2]`},
		{"too long", `"` + strings.Repeat("x", 40) + `"`, "application/json", `"` + strings.Repeat("x", 16)},
		{"not json", "ok", "text/plain", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			h, _ := handlers.NewWebhook("resize", srv.URL, nil, 16)
			got, err := h.HandleResult(context.Background(), runningTask(t))
			if err != nil || string(got) != tc.want {
				t.Fatalf("result %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// A receiver pushes back: 429/503 with Retry-After asks for a later next
// attempt, X-Task-No-Retry: true for none.
func TestWebhookBackpressure(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		retryAfter time.Duration // 0: no RetryAfterError
		noRetry    bool
	}{
		{"429 with seconds", 429, map[string]string{"Retry-After": "30"}, 30 * time.Second, false},
		{"503 with a date", 503, map[string]string{"Retry-After": date}, 90 * time.Second, false},
		{"429 with a date in the past", 429, map[string]string{"Retry-After": "Mon, 02 Jan 2006 15:04:05 GMT"}, -1, false},
		{"500 with Retry-After is an ordinary failure", 500, map[string]string{"Retry-After": "30"}, 0, false},
		{"429 with garbage", 429, map[string]string{"Retry-After": "soon"}, 0, false},
		{"no retry on 422", 422, map[string]string{"X-Task-No-Retry": "true"}, 0, true},
		{"no retry wins over Retry-After", 503, map[string]string{"X-Task-No-Retry": "TRUE", "Retry-After": "5"}, 0, true},
		{"no retry only when true", 400, map[string]string{"X-Task-No-Retry": "yes"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte("slow down"))
			}))
			defer srv.Close()
			err := webhook(t, srv.URL).Handle(context.Background(), runningTask(t))
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("returned %d: slow down", tc.status)) {
				t.Fatalf("error %v", err)
			}
			var ra *domain.RetryAfterError
			switch {
			case tc.retryAfter == 0 && errors.As(err, &ra):
				t.Fatalf("a RetryAfterError (%v) for %s", ra.After, tc.name)
			case tc.retryAfter < 0:
				if !errors.As(err, &ra) || ra.After != 0 {
					t.Fatalf("want a RetryAfterError of 0, got %v", err)
				}
			case tc.retryAfter > 0:
				if !errors.As(err, &ra) || ra.After > tc.retryAfter || ra.After < tc.retryAfter-2*time.Second {
					t.Fatalf("want a RetryAfterError of about %v, got %v", tc.retryAfter, err)
				}
			}
			var nr *domain.NoRetryError
			if errors.As(err, &nr) != tc.noRetry {
				t.Fatalf("NoRetryError: %v; want %v (%v)", !tc.noRetry, tc.noRetry, err)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{" 120 ", 2 * time.Minute, true},
		{"99999999999999999999", 366 * 24 * time.Hour, true}, // past uint64
		{"9999999999", 366 * 24 * time.Hour, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"Fri, 27 Nov 2026 12:01:00 GMT", time.Minute, true},
		{"Friday, 27-Nov-26 12:01:00 GMT", time.Minute, true}, // RFC 850
		{"Fri Nov 27 12:01:00 2026", time.Minute, true},       // asctime
		{"Thu, 26 Nov 2026 12:00:00 GMT", 0, true},
		{"", 0, false},
		{strings.Repeat("x", 1000), 0, false},
	} {
		got, ok := handlers.ParseRetryAfter(tc.in, now)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ParseRetryAfter(%.20q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
