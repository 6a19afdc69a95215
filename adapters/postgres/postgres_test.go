package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/brokertest"
	"github.com/taskqueue/taskqueue/adapters/postgres"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/test/netproxy"
	"github.com/taskqueue/taskqueue/test/pgserver"
)

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func policy(d time.Duration) domain.RetryPolicy {
	p, _ := domain.NewRetryPolicy(d, d)
	return p
}

func newBroker(t testing.TB, schema string, edit func(*postgres.Options)) *postgres.Broker {
	t.Helper()
	opts := postgres.Options{
		URL:              pgserver.URL(t),
		Schema:           schema,
		Migrate:          true,
		QueueSize:        100,
		Retention:        time.Hour,
		Lease:            30 * time.Second,
		Policy:           policy(100 * time.Millisecond),
		MaintainInterval: 50 * time.Millisecond,
		Log:              quietLog(),
	}
	if edit != nil {
		edit(&opts)
	}
	b, err := postgres.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func TestContract(t *testing.T) {
	url := pgserver.URL(t)
	shared := map[string]string{} // test and queue name → schema
	var mu sync.Mutex
	brokertest.Run(t, func(t *testing.T, cfg brokertest.Config) ports.Broker {
		schema := ""
		if cfg.Queue != "" {
			mu.Lock()
			if schema = shared[t.Name()+"/"+cfg.Queue]; schema == "" {
				schema = pgserver.Schema(t, url)
				shared[t.Name()+"/"+cfg.Queue] = schema
			}
			mu.Unlock()
		} else {
			schema = pgserver.Schema(t, url)
		}
		return newBroker(t, schema, func(o *postgres.Options) {
			o.QueueSize, o.Retention = cfg.QueueSize, cfg.Retention
			o.Types, o.Limits, o.KeyConcurrency, o.Aging = cfg.Types, cfg.Limits, cfg.KeyConcurrency, cfg.Aging
		})
	})
}

// BenchmarkDrain drains b.N pre-enqueued no-op tasks with 10 and 50
// workers and reports tasks per second.
func BenchmarkDrain(bm *testing.B) {
	for _, workers := range []int{10, 50} {
		bm.Run(fmt.Sprintf("workers=%d", workers), func(bm *testing.B) {
			url := pgserver.URL(bm)
			b := newBroker(bm, pgserver.Schema(bm, url), func(o *postgres.Options) { o.QueueSize = bm.N + 1 })
			ctx := context.Background()
			batch := make([]*domain.Task, 0, 1000)
			for i := 0; i < bm.N; i++ {
				batch = append(batch, brokertest.NewTask(bm, 0, 0))
				if len(batch) == cap(batch) || i == bm.N-1 {
					if err := b.Enqueue(ctx, batch...); err != nil {
						bm.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			bm.ResetTimer()
			start := time.Now()
			var left atomic.Int64
			left.Store(int64(bm.N))
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						att, err := b.Dequeue(ctx)
						if err != nil {
							bm.Error(err)
							return
						}
						_ = att.Task.Succeed(time.Now())
						if err := b.Settle(ctx, att.Task.Attempts(), att.Task); err != nil {
							bm.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			bm.ReportMetric(float64(bm.N)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}

// viaProxy connects a broker to the test Postgres through a proxy the
// test can cut.
func viaProxy(t *testing.T) (*netproxy.Proxy, func(*postgres.Options)) {
	u, err := url.Parse(pgserver.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := netproxy.Start(t, u.Host)
	return p, func(o *postgres.Options) {
		v := *u
		v.Host = p.Addr()
		o.URL = v.String()
	}
}

// An outage shorter than the lease costs nothing: the outcome is recorded
// once Postgres answers again, and Dequeue reports the outage as
// domain.ErrUnavailable meanwhile.
func TestSettleDuringShortOutageIsRecorded(t *testing.T) {
	schema := pgserver.Schema(t, pgserver.URL(t))
	proxy, through := viaProxy(t)
	b := newBroker(t, schema, func(o *postgres.Options) { through(o); o.Lease = 5 * time.Second })
	task := brokertest.NewTask(t, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Enqueue(ctx, task); err != nil {
		t.Fatal(err)
	}
	att, err := b.Dequeue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	if _, err := b.Dequeue(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Dequeue with Postgres cut off: %v; want ErrUnavailable", err)
	}
	if err := b.Enqueue(ctx, brokertest.NewTask(t, 0, 0)); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Enqueue with Postgres cut off: %v; want ErrUnavailable", err)
	}
	_ = att.Task.Succeed(time.Now())
	settled := make(chan error, 1)
	go func() { settled <- b.Settle(ctx, 1, att.Task) }()
	select {
	case err := <-settled:
		t.Fatalf("Settle returned during the outage: %v", err)
	case <-time.After(300 * time.Millisecond): // the outage; not an assertion
	}
	proxy.Resume()
	if err := <-settled; err != nil {
		t.Fatalf("Settle across a short outage: %v", err)
	}
	got, err := b.Get(ctx, task.ID())
	if err != nil || got.Status() != domain.StatusSucceeded || got.Attempts() != 1 {
		t.Fatalf("after the outage: %v %+v", err, got)
	}
}

// A new build refuses a schema newer than it knows, and New with Migrate
// false refuses one older than it needs.
func TestSchemaVersions(t *testing.T) {
	url := pgserver.URL(t)
	schema := pgserver.Schema(t, url)
	opts := postgres.Options{URL: url, Schema: schema, QueueSize: 1, Lease: time.Second, Log: quietLog()}
	if _, err := postgres.New(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "taskqueue migrate") {
		t.Fatalf("New on an empty schema without Migrate: %v", err)
	}
	newBroker(t, schema, nil).Close(context.Background())
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "INSERT INTO "+schema+".schema_migrations (version, name) VALUES (999, 'future')"); err != nil {
		t.Fatal(err)
	}
	opts.Migrate = true
	if _, err := postgres.New(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("New on a schema from the future: %v", err)
	}
}

// Instances starting at once migrate a new schema once.
func TestConcurrentMigrations(t *testing.T) {
	url := pgserver.URL(t)
	schema := pgserver.Schema(t, url)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := postgres.Open(context.Background(), url, 2)
			if err != nil {
				errs <- err
				return
			}
			defer pool.Close()
			_, to, err := postgres.Migrate(context.Background(), pool, schema)
			if err == nil && to != postgres.LatestVersion() {
				err = fmt.Errorf("migrated to %d", to)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The status numbers stored are the domain's: the migration's comment and
// its partial indexes (status = 1 pending, IN (3, 6) retrying and
// scheduled, IN (4, 5, 7) finished) depend on them.
func TestStatusNumbers(t *testing.T) {
	want := map[domain.Status]int{domain.StatusPending: 1, domain.StatusRunning: 2, domain.StatusRetrying: 3,
		domain.StatusSucceeded: 4, domain.StatusFailed: 5, domain.StatusScheduled: 6, domain.StatusCancelled: 7}
	for s, n := range want {
		if int(s) != n {
			t.Errorf("%v is %d; the schema stores it as %d", s, int(s), n)
		}
	}
}

func TestRedactHidesPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://tq:hunter2@db:5432/app":         "postgres://tq:xxxxx@db:5432/app",
		"host=db user=tq password=hunter2 dbname=x": "host=db user=tq password=xxxxx dbname=x",
		"host=db password='hunter 2' dbname=x":      "host=db password=xxxxx dbname=x",
	} {
		if got := postgres.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q; want %q", in, got, want)
		}
	}
}

// BenchmarkFlowDrain drains b.N stored tasks with 50 workers, for each
// shape of types and keys; see brokertest.BenchmarkDrain. Give it a fixed
// count (-benchtime 20000x): each round stores b.N tasks first.
func BenchmarkFlowDrain(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			cfg := shape.Config(b.N + 1)
			broker := newBroker(b, pgserver.Schema(b, pgserver.URL(b)), func(o *postgres.Options) { o.QueueSize, o.Retention, o.Types = cfg.QueueSize, time.Hour, cfg.Types })
			brokertest.BenchmarkDrain(b, broker, shape, 50)
		})
	}
}

// BenchmarkFlowSubmitToStart measures the wait from Enqueue to the start
// of the attempt with 10 idle workers; see brokertest.BenchmarkSubmitToStart.
func BenchmarkFlowSubmitToStart(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			cfg := shape.Config(1000)
			broker := newBroker(b, pgserver.Schema(b, pgserver.URL(b)), func(o *postgres.Options) { o.QueueSize, o.Retention, o.Types = cfg.QueueSize, time.Hour, cfg.Types })
			brokertest.BenchmarkSubmitToStart(b, broker, shape, 10)
		})
	}
}

// crossInstanceWake has instance a take a task submitted to instance b
// and returns how long that took.
func crossInstanceWake(t *testing.T, edit func(*postgres.Options)) time.Duration {
	schema := pgserver.Schema(t, pgserver.URL(t))
	a, b := newBroker(t, schema, edit), newBroker(t, schema, edit)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan time.Time, 1)
	go func() {
		if _, err := a.Dequeue(ctx); err != nil {
			t.Error(err)
		}
		got <- time.Now()
	}()
	time.Sleep(100 * time.Millisecond) // a waits first; not an assertion
	at := time.Now()
	if err := b.Enqueue(ctx, brokertest.NewTask(t, 0, 0)); err != nil {
		t.Fatal(err)
	}
	return (<-got).Sub(at)
}

// Another instance's submission wakes an idle instance through NOTIFY,
// not the poll: with a poll of an hour it still starts at once.
func TestNotifyWakesOtherInstances(t *testing.T) {
	if d := crossInstanceWake(t, func(o *postgres.Options) { o.PollInterval = time.Hour }); d > time.Second {
		t.Fatalf("the other instance started the task after %v; NOTIFY should wake it at once", d)
	}
}

// With PollOnly (no LISTEN, for transaction poolers) instances find
// each other's submissions by polling, every 100 ms by default.
func TestPollOnlyFindsOtherInstancesWork(t *testing.T) {
	if d := crossInstanceWake(t, func(o *postgres.Options) { o.PollOnly = true }); d > time.Second {
		t.Fatalf("the other instance started the task after %v; want within the 100 ms poll", d)
	}
}
