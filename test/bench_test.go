package test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/adapters/workerpool"
	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// BenchmarkSubmit measures POST /task through the real handler, service
// and memory broker, with five workers running a no-op handler so the
// queue drains as it would in the service. Logs go to io.Discard at info
// level in the service's text format, so formatting them is part of the
// cost.
func BenchmarkSubmit(b *testing.B) {
	log, err := logging.New(io.Discard, "info", logging.FormatText)
	if err != nil {
		b.Fatal(err)
	}
	broker, _ := memory.New(memory.Options{QueueSize: 1 << 20, Retention: time.Minute, MaxFinished: 100_000})
	pool, _ := workerpool.New(5, log)
	noop := ports.HandlerFunc(func(context.Context, *domain.Task) error { return nil })
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	svc := application.NewService(broker, application.ServiceConfig{Types: []string{"noop"}}, log)
	proc := application.NewProcessor(broker, pool, map[string]ports.Handler{"noop": noop},
		application.ProcessorConfig{Policy: policy, TaskTimeout: time.Second}, log)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = proc.Run(ctx) }()
	defer func() { cancel(); pool.Stop(time.Second, time.Second); broker.Close() }()
	api := httpapi.New(svc, httpapi.Options{}, log)
	const body = `{"type":"noop","payload":{"key":"value"},"max_retries":3,"priority":2}`

	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/task", strings.NewReader(body))
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
