package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskqueue/taskqueue/adapters/apikeys"
	"github.com/taskqueue/taskqueue/adapters/httpapi"
	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/adapters/metrics"
	"github.com/taskqueue/taskqueue/adapters/workerpool"
	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// BenchmarkSubmit measures POST /task through the real handler, service
// and memory broker, with five workers running a no-op handler so the
// queue drains as it would in the service. Logs go to io.Discard at info
// level in the service's text format, so formatting them is part of the
// cost. The variants add what the service runs with in production: an
// API key file of 1,000 keys (every request authenticated), metrics (every
// submission, attempt and request counted), and both; run them with
// -count to interleave them on a noisy machine.
func BenchmarkSubmit(b *testing.B) { benchVariants(b, true) }

// BenchmarkSubmitPath is BenchmarkSubmit without workers and from one
// goroutine: only the request's own path (decode, authenticate, store,
// log, count), with far less scheduling noise, to compare the variants.
func BenchmarkSubmitPath(b *testing.B) { benchVariants(b, false) }

func benchVariants(b *testing.B, drain bool) {
	dir := b.TempDir()
	var file strings.Builder
	var key string
	for i := 0; i < 1000; i++ {
		k, line, err := apikeys.Generate(fmt.Sprintf("client-%d", i), domain.Roles(domain.RoleSubmit))
		if err != nil {
			b.Fatal(err)
		}
		key = k
		file.WriteString(line + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "keys"), []byte(file.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	keys, err := apikeys.Open(filepath.Join(dir, "keys"))
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name          string
		auth, metrics bool
	}{{"plain", false, false}, {"auth", true, false}, {"metrics", false, true}, {"auth+metrics", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			var auth httpapi.Authenticator
			if v.auth {
				auth = keys
			}
			benchSubmit(b, auth, key, v.metrics, drain)
		})
	}
}

func benchSubmit(b *testing.B, auth httpapi.Authenticator, key string, withMetrics, drain bool) {
	log, err := logging.New(io.Discard, "info", logging.FormatText)
	if err != nil {
		b.Fatal(err)
	}
	mem, _ := memory.New(memory.Options{QueueSize: 1 << 20, Retention: time.Minute, MaxFinished: 100_000})
	var broker ports.Broker = mem
	pool, _ := workerpool.New(5, log)
	noop := ports.HandlerFunc(func(context.Context, *domain.Task) error { return nil })
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	var obs ports.Observer
	opts := httpapi.Options{Auth: auth}
	var m *metrics.Metrics
	if withMetrics {
		m = metrics.New(metrics.Options{Workers: 5, Types: []string{"noop"}})
		obs = m
		broker = application.ObserveBroker(mem, m)
		m.ReadStats(broker.Stats)
		opts.Metrics, opts.Observe = m.Handler(), m.ObserveHTTP
	}
	svc := application.NewService(broker, application.ServiceConfig{Types: []string{"noop"}, Observer: obs}, log)
	proc := application.NewProcessor(broker, pool, map[string]ports.Handler{"noop": noop},
		application.ProcessorConfig{Policy: policy, TaskTimeout: time.Second, Observer: obs}, log)
	if m != nil {
		m.CountRunning(proc.Running)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if drain {
		go func() { _ = proc.Run(ctx) }()
	}
	defer func() { cancel(); pool.Stop(time.Second, time.Second); mem.Close() }()
	api := httpapi.New(svc, opts, log)
	const body = `{"type":"noop","payload":{"key":"value"},"max_retries":3,"priority":2}`
	header := "Bearer " + key
	one := func() bool {
		req := httptest.NewRequest(http.MethodPost, "/task", strings.NewReader(body))
		if auth != nil {
			req.Header["Authorization"] = []string{header}
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Errorf("status %d: %s", rec.Code, rec.Body)
			return false
		}
		return true
	}

	b.ReportAllocs()
	b.ResetTimer()
	if !drain {
		for i := 0; i < b.N && one(); i++ {
		}
	} else {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() && one() {
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
