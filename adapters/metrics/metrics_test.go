package metrics_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/taskqueue/taskqueue/adapters/metrics"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func newMetrics(t *testing.T, stats func(context.Context) (ports.Stats, error)) *metrics.Metrics {
	t.Helper()
	m := metrics.New(metrics.Options{Workers: 4, Types: []string{"resize", "email"}, Now: func() time.Time { return now }})
	m.ReadStats(stats)
	running := 1
	m.CountRunning(func() int { return running })
	return m
}

func TestMetricsFollowPrometheusConventions(t *testing.T) {
	m := newMetrics(t, func(context.Context) (ports.Stats, error) { return ports.Stats{}, nil })
	m.TasksSubmitted("resize", 2)
	m.AttemptStarted("resize", time.Second)
	m.AttemptFinished("resize", ports.OutcomeRetried, time.Second)
	m.BrokerError("Enqueue")
	m.ObserveHTTP("/task/{id}", "GET", 200, time.Millisecond)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsCountWhatTheyAreTold(t *testing.T) {
	m := newMetrics(t, func(context.Context) (ports.Stats, error) {
		return ports.Stats{
			ByType:              map[string]map[domain.Status]int64{"resize": {domain.StatusPending: 7, domain.StatusSucceeded: 3}},
			OldestPendingByType: map[string]time.Time{"resize": now.Add(-90 * time.Second)},
		}, nil
	})
	m.TasksSubmitted("resize", 2)
	m.TasksSubmitted("resize", 1)
	m.AttemptFinished("resize", ports.OutcomeSucceeded, 20*time.Millisecond)
	m.AttemptFinished("resize", ports.OutcomeTimedOut, time.Second)
	m.ObserveHTTP("/task", "POST", 202, time.Millisecond)
	m.ObserveHTTP("/task", "BREW", 405, time.Millisecond)
	want := `
# HELP taskqueue_tasks Tasks stored in the broker by type and status (the counters GET /stats shows; the whole queue, not this instance).
# TYPE taskqueue_tasks gauge
taskqueue_tasks{status="cancelled",type="resize"} 0
taskqueue_tasks{status="failed",type="resize"} 0
taskqueue_tasks{status="pending",type="resize"} 7
taskqueue_tasks{status="retrying",type="resize"} 0
taskqueue_tasks{status="running",type="resize"} 0
taskqueue_tasks{status="scheduled",type="resize"} 0
taskqueue_tasks{status="succeeded",type="resize"} 3
# HELP taskqueue_oldest_pending_age_seconds Queue latency: how long the task that has waited longest in pending has waited, by type (0 when none is pending).
# TYPE taskqueue_oldest_pending_age_seconds gauge
taskqueue_oldest_pending_age_seconds{type="resize"} 90
# HELP taskqueue_free_workers Workers of this instance free to start an attempt now.
# TYPE taskqueue_free_workers gauge
taskqueue_free_workers 3
# HELP taskqueue_running_attempts Attempts running on this instance now.
# TYPE taskqueue_running_attempts gauge
taskqueue_running_attempts 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"taskqueue_tasks", "taskqueue_oldest_pending_age_seconds", "taskqueue_free_workers", "taskqueue_running_attempts"); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, m)
	for _, line := range []string{
		`taskqueue_tasks_submitted_total{type="resize"} 3`,
		`taskqueue_tasks_submitted_total{type="email"} 0`,
		`taskqueue_attempts_finished_total{outcome="succeeded",type="resize"} 1`,
		`taskqueue_attempts_finished_total{outcome="timed_out",type="resize"} 1`,
		`taskqueue_attempts_finished_total{outcome="handed_back",type="email"} 0`,
		`taskqueue_attempt_duration_seconds_count{type="resize"} 2`,
		`taskqueue_http_requests_total{code="202",method="POST",route="/task"} 1`,
		`taskqueue_http_requests_total{code="405",method="other",route="/task"} 1`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	return rec.Body.String()
}

// A broker that cannot be read fails its own metrics only: the scrape
// still serves the rest.
func TestScrapeSurvivesABrokerError(t *testing.T) {
	m := newMetrics(t, func(context.Context) (ports.Stats, error) { return ports.Stats{}, errors.New("unreachable") })
	m.TasksSubmitted("resize", 1)
	body := scrape(t, m)
	if !strings.Contains(body, `taskqueue_tasks_submitted_total{type="resize"} 1`) || strings.Contains(body, "taskqueue_tasks{") {
		t.Fatalf("scrape:\n%s", body)
	}
}
