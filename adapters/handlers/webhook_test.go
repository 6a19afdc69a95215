package handlers_test

import (
	"context"
	"encoding/json"
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
	w, err := handlers.NewWebhook(url, nil)
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
		{"server error", 500, "webhook returned 500"},
		{"client error", 404, "webhook returned 404"},
		{"redirect not followed", 302, "webhook returned 302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var followed bool
			target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed = true }))
			defer target.Close()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.status == 302 {
					http.Redirect(w, r, target.URL, http.StatusFound)
					return
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
	err := webhook(t, "http://"+addr).Handle(context.Background(), runningTask(t))
	if err == nil || !strings.Contains(err.Error(), "webhook request failed") {
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
	if err == nil || !strings.Contains(err.Error(), "webhook timed out") {
		t.Fatalf("error %v", err)
	}
}

func TestNewWebhookValidatesURL(t *testing.T) {
	for _, u := range []string{"", "localhost:80", "ftp://x/y", "/relative", "http://"} {
		if _, err := handlers.NewWebhook(u, nil); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func TestExampleLogsPayload(t *testing.T) {
	log, hook := test.NewNullLogger()
	task := runningTask(t)
	if err := handlers.NewExample(log).Handle(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if e := hook.LastEntry(); e == nil || e.Data["payload"] != `{"w":10}` || e.Data["task_id"] != task.ID() {
		t.Fatalf("log %+v", e)
	}
}
