// Package metrics exposes the service's metrics in the Prometheus text
// format, with github.com/prometheus/client_golang. It implements
// ports.Observer for what the application tells, reads the broker's
// counters on each scrape (never by scanning tasks), and times HTTP
// requests. Label values are bounded: task types (the configured ones),
// outcomes, route patterns, methods and status codes; never a task id or
// a fairness key.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

const namespace = "taskqueue"

// scrapeTimeout bounds reading the broker's counters for one scrape.
const scrapeTimeout = 2 * time.Second

// Options configure Metrics.
type Options struct {
	// Workers is this instance's --workers.
	Workers int
	// Types are the task types known at start: their counters start at 0
	// so rates work from the first scrape.
	Types []string
	// Now defaults to the wall clock (for the age of the oldest pending
	// task).
	Now func() time.Time
	Log logrus.FieldLogger
}

// Metrics holds every metric of the service.
type Metrics struct {
	reg          *prometheus.Registry
	submitted    *prometheus.CounterVec
	finished     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	wait         *prometheus.HistogramVec
	brokerErrors *prometheus.CounterVec
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	handler      http.Handler
	broker       *brokerCollector
	workers      int

	// Series looked up once and kept: the submit path and every request
	// count without hashing label values each time. Bounded like the
	// labels: types × (routes × methods × codes).
	submittedByType sync.Map // type → prometheus.Counter
	attemptsByType  sync.Map // type → *attemptSeries
	httpByKey       sync.Map // httpKey → *httpSeries
}

// attemptSeries are one type's attempt metrics.
type attemptSeries struct {
	wait, duration prometheus.Observer
	finished       map[ports.Outcome]prometheus.Counter // every outcome, made once
}

func (m *Metrics) attempts(typ string) *attemptSeries {
	if s, ok := m.attemptsByType.Load(typ); ok {
		return s.(*attemptSeries)
	}
	s := &attemptSeries{wait: m.wait.WithLabelValues(typ), duration: m.duration.WithLabelValues(typ),
		finished: map[ports.Outcome]prometheus.Counter{}}
	for _, o := range ports.Outcomes() {
		s.finished[o] = m.finished.WithLabelValues(typ, string(o))
	}
	actual, _ := m.attemptsByType.LoadOrStore(typ, s)
	return actual.(*attemptSeries)
}

type httpKey struct {
	route, method string
	code          int
}

type httpSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

var _ ports.Observer = (*Metrics)(nil)

// New registers every metric, the Go runtime's and the process's.
func New(opts Options) *Metrics {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tasks_submitted_total",
			Help: "Tasks stored by submissions to this instance, by type.",
		}, []string{"type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "attempts_finished_total",
			Help: "Attempts this instance ran to an end whose outcome was recorded, by type and outcome (succeeded, retried, failed, timed_out, cancelled, handed_back).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "attempt_duration_seconds",
			Help:    "How long attempts ran on this instance, by type.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}, []string{"type"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "attempt_wait_seconds",
			Help:    "How long tasks waited for a worker: from becoming pending (submitted, or due) to their attempt's start on this instance, by type.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"type"}),
		brokerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "broker_errors_total",
			Help: "Broker calls that failed for a reason of the broker's own (unreachable, out of memory, broken), by operation.",
		}, []string{"operation"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "How long HTTP requests took to answer, by route pattern and method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	m.broker = &brokerCollector{now: opts.Now}
	m.reg.MustRegister(m.submitted, m.finished, m.duration, m.wait, m.brokerErrors, m.httpRequests, m.httpDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.broker)
	m.workers = opts.Workers
	for _, typ := range opts.Types {
		m.submitted.WithLabelValues(typ)
		m.attempts(typ) // makes every outcome's counter
	}
	var errLog promhttp.Logger
	if opts.Log != nil {
		errLog = logAdapter{opts.Log}
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: errLog, ErrorHandling: promhttp.ContinueOnError})
	return m
}

// ReadStats sets how the broker's counters are read on each scrape
// (taskqueue_tasks, taskqueue_oldest_pending_age_seconds); call it before
// serving.
func (m *Metrics) ReadStats(stats func(context.Context) (ports.Stats, error)) { m.broker.stats = stats }

// CountRunning registers taskqueue_running_attempts and
// taskqueue_free_workers, read from running (the attempts this instance
// runs now) on each scrape. An instance without workers has neither.
func (m *Metrics) CountRunning(running func() int) {
	workers := m.workers
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "running_attempts",
			Help: "Attempts running on this instance now."}, func() float64 { return float64(running()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "free_workers",
			Help: "Workers of this instance free to start an attempt now."}, func() float64 { return float64(max(0, workers-running())) }),
	)
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics when asked).
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry is where the metrics are registered (for tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// TasksSubmitted implements ports.Observer.
func (m *Metrics) TasksSubmitted(typ string, n int) {
	c, ok := m.submittedByType.Load(typ)
	if !ok {
		c, _ = m.submittedByType.LoadOrStore(typ, m.submitted.WithLabelValues(typ))
	}
	c.(prometheus.Counter).Add(float64(n))
}

// AttemptStarted implements ports.Observer.
func (m *Metrics) AttemptStarted(typ string, waited time.Duration) {
	m.attempts(typ).wait.Observe(waited.Seconds())
}

// AttemptFinished implements ports.Observer.
func (m *Metrics) AttemptFinished(typ string, o ports.Outcome, took time.Duration) {
	s := m.attempts(typ)
	if c, ok := s.finished[o]; ok {
		c.Inc()
	} else {
		m.finished.WithLabelValues(typ, string(o)).Inc() // not one of ports.Outcomes: still counted
	}
	s.duration.Observe(took.Seconds())
}

// BrokerError implements ports.Observer.
func (m *Metrics) BrokerError(op string) { m.brokerErrors.WithLabelValues(op).Inc() }

// methods are the method label's values; any other method counts as
// "other", so a client cannot add series.
var methods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}

// ObserveHTTP counts and times an answered request (see
// httpapi.Options.Observe).
func (m *Metrics) ObserveHTTP(route, method string, status int, d time.Duration) {
	if !methods[method] {
		method = "other"
	}
	k := httpKey{route, method, status}
	s, ok := m.httpByKey.Load(k)
	if !ok {
		s, _ = m.httpByKey.LoadOrStore(k, &httpSeries{
			requests: m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)),
			duration: m.httpDuration.WithLabelValues(route, method),
		})
	}
	s.(*httpSeries).requests.Inc()
	s.(*httpSeries).duration.Observe(d.Seconds())
}

// brokerCollector reads the broker's counters on each scrape: the same
// numbers GET /stats shows, the same on every instance sharing the
// broker.
type brokerCollector struct {
	stats func(context.Context) (ports.Stats, error)
	now   func() time.Time
}

var (
	tasksDesc = prometheus.NewDesc(namespace+"_tasks", "Tasks stored in the broker by type and status (the counters GET /stats shows; the whole queue, not this instance).",
		[]string{"type", "status"}, nil)
	oldestDesc = prometheus.NewDesc(namespace+"_oldest_pending_age_seconds", "Queue latency: how long the task that has waited longest in pending has waited, by type (0 when none is pending).",
		[]string{"type"}, nil)
)

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tasksDesc
	ch <- oldestDesc
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	if c.stats == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := c.stats(ctx)
	if err != nil {
		// The scrape still serves the other metrics; this one's failure
		// shows in the error log and taskqueue_broker_errors_total.
		ch <- prometheus.NewInvalidMetric(tasksDesc, err)
		return
	}
	now := c.now()
	for typ, counts := range st.ByType {
		for _, s := range domain.Statuses() {
			ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(counts[s]), typ, s.String())
		}
		age := 0.0
		if since, ok := st.OldestPendingByType[typ]; ok {
			age = max(0, now.Sub(since).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, typ)
	}
}

type logAdapter struct{ log logrus.FieldLogger }

func (l logAdapter) Println(v ...any) { l.log.Warn(append([]any{"metrics: "}, v...)...) }
