package main

// The Postgres comparison: taskqueue's Postgres broker against
// github.com/riverqueue/river on the same database, in one run. Run it
// with
//
//	cd test/bench && go run . -postgres postgres://postgres@127.0.0.1:5432/test
//
// Each system gets its own schema, dropped afterwards.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/postgres"
	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// pgSystem is one queue on Postgres under test.
type pgSystem interface {
	name() string
	// enqueue submits n tasks one by one from p producers.
	enqueue(n, p int) error
	// enqueueBatches submits n tasks in batches of size.
	enqueueBatches(n, size int) error
	// drain runs c workers until n tasks have run or limit has passed,
	// and returns how many ran.
	drain(n, c int, limit time.Duration) (int, error)
	latency(r int, d time.Duration, c int) ([]time.Duration, error)
	// table is the queue's table, for its size.
	table() string
	// reset empties the queue between runs.
	reset(pool *pgxpool.Pool) error
	cleanup()
}

func runPostgres(url string) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	check(err)
	defer pool.Close()
	check(pool.Ping(ctx))
	tag := fmt.Sprintf("bench%06x", rand.Uint32N(1<<24))
	systems := []pgSystem{
		newOursPG(url, "tq_"+tag),
		newRiver(pool, "river_"+tag, "river", 0),
		newRiver(pool, "river1ms_"+tag, "river-1ms", time.Millisecond),
	}
	defer func() {
		for _, s := range systems {
			s.cleanup()
		}
	}()
	fmt.Printf("postgres %s, %d tasks to drain (or %s), %d-byte payload, %d producers\n\n", postgres.Redact(url), *tasks, *drainFor, *payload, *producers)
	fmt.Printf("%-10s %10s %12s %12s %12s %12s %9s %9s %12s %12s\n", "system", "enqueue/s", "batch1000/s",
		"drain c=10", "drain c=50", "drain c=100", "p50", "p99", "B/pending", "B/finished")
	for _, s := range systems {
		if *only != "" && s.name() != *only {
			continue
		}
		row := []any{s.name()}
		start := time.Now()
		check(s.enqueue(*singles, *producers))
		row = append(row, perSecond(*singles, time.Since(start)))
		check(s.reset(pool))
		start = time.Now()
		check(s.enqueueBatches(*tasks, 1000))
		row = append(row, perSecond(*tasks, time.Since(start)))
		pendingBytes := tableBytes(pool, s.table()) / float64(*tasks)
		var finishedBytes float64
		for i, c := range []int{10, 50, 100} {
			if i > 0 {
				check(s.reset(pool))
				check(s.enqueueBatches(*tasks, 1000))
			}
			start = time.Now()
			ran, err := s.drain(*tasks, c, *drainFor)
			check(err)
			row = append(row, perSecond(ran, time.Since(start)))
			if i == 0 {
				finishedBytes = finishedTableBytes(pool, s)
			}
		}
		check(s.reset(pool))
		lat, err := s.latency(*pgRate, *latFor, 10)
		check(err)
		row = append(row, percentile(lat, 50), percentile(lat, 99), fmt.Sprintf("%.0f", pendingBytes), fmt.Sprintf("%.0f", finishedBytes))
		fmt.Printf("%-10s %10s %12s %12s %12s %12s %9s %9s %12s %12s\n", row...)
	}
}

// tableBytes is the size of a table with its indexes and TOAST, after a
// VACUUM so dead rows of earlier runs are not counted as live ones.
func tableBytes(pool *pgxpool.Pool, table string) float64 {
	ctx := context.Background()
	_, err := pool.Exec(ctx, "VACUUM "+table)
	check(err)
	var n int64
	check(pool.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass)", table).Scan(&n))
	return float64(n)
}

// finishedTableBytes is the table's size per finished task right after a
// drain (every row in it is a finished task until pruning).
func finishedTableBytes(pool *pgxpool.Pool, s pgSystem) float64 {
	var rows int64
	check(pool.QueryRow(context.Background(), "SELECT count(*) FROM "+s.table()).Scan(&rows))
	if rows == 0 {
		return 0
	}
	return tableBytes(pool, s.table()) / float64(rows)
}

// reset empties the system's tables between runs, so each run starts on
// the same amount of data.
func (o *oursPG) reset(pool *pgxpool.Pool) error {
	_, err := pool.Exec(context.Background(), "TRUNCATE "+o.schema+".tasks, "+o.schema+".counts, "+o.schema+".turns")
	return err
}

func (r *riverSystem) reset(pool *pgxpool.Pool) error {
	_, err := pool.Exec(context.Background(), "TRUNCATE "+r.table())
	return err
}

// ---- taskqueue on Postgres ----

type oursPG struct {
	url, schema string
	log         logrus.FieldLogger
}

func newOursPG(url, schema string) *oursPG {
	o := &oursPG{url: url, schema: schema, log: newOurs(url, schema).log}
	b := o.broker()
	b.Close(context.Background())
	return o
}

func (o *oursPG) name() string  { return "taskqueue" }
func (o *oursPG) table() string { return o.schema + ".tasks" }

func (o *oursPG) broker() *postgres.Broker {
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	b, err := postgres.New(context.Background(), postgres.Options{
		URL: o.url, Schema: o.schema, Migrate: true, QueueSize: 10 * *tasks, Retention: time.Hour,
		Lease: 30 * time.Second, Policy: policy, Log: o.log, Types: []string{"noop"}, MaxConns: 32,
	})
	check(err)
	return b
}

func (o *oursPG) enqueue(n, p int) error {
	return serviceEnqueue(func() queueBroker { return o.broker() }, n, p, o.log)
}

func (o *oursPG) enqueueBatches(n, size int) error {
	b := o.broker()
	defer b.Close(context.Background())
	svc := application.NewService(b, application.ServiceConfig{Types: []string{"noop"}, MaxBatch: size}, o.log)
	body := payloadBytes(*payload)
	for done := 0; done < n; done += size {
		subs := make([]ports.Submission, min(size, n-done))
		for i := range subs {
			subs[i] = ports.Submission{Type: "noop", Payload: body}
		}
		if _, err := svc.SubmitBatch(context.Background(), subs); err != nil {
			return err
		}
	}
	return nil
}

func (o *oursPG) run(c int, fn func(*domain.Task)) func() {
	b := o.broker()
	stop := runProcessor(b, c, fn, o.log)
	return func() { stop(); b.Close(context.Background()) }
}

func (o *oursPG) drain(n, c int, limit time.Duration) (int, error) {
	return drainWithin(n, limit, func(ran func()) func() { return o.run(c, func(*domain.Task) { ran() }) }), nil
}

func (o *oursPG) latency(r int, d time.Duration, c int) ([]time.Duration, error) {
	return serviceLatency(func() queueBroker { return o.broker() }, o.run, r, d, c, o.log), nil
}

func (o *oursPG) cleanup() { dropSchema(o.url, o.schema) }

func dropSchema(url, schema string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
}

// ---- River ----

type noopArgs struct {
	T    int64  `json:"T"`
	Data string `json:"data,omitempty"`
}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	fn func(noopArgs)
}

func (w *noopWorker) Work(_ context.Context, job *river.Job[noopArgs]) error {
	w.fn(job.Args)
	return nil
}

type riverSystem struct {
	pool     *pgxpool.Pool
	schema   string
	label    string
	cooldown time.Duration
	handler  atomic.Pointer[func(noopArgs)]
}

func newRiver(pool *pgxpool.Pool, schema, label string, cooldown time.Duration) *riverSystem {
	ctx := context.Background()
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
	check(err)
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema, Logger: quietSlog()})
	check(err)
	_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	check(err)
	return &riverSystem{pool: pool, schema: schema, label: label, cooldown: cooldown}
}

func quietSlog() *slog.Logger {
	return slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError + 4}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (r *riverSystem) name() string  { return r.label }
func (r *riverSystem) table() string { return r.schema + ".river_job" }

// client returns a River client with c workers (0: insert only).
func (r *riverSystem) client(c int) *river.Client[pgx.Tx] {
	cfg := &river.Config{Schema: r.schema, Logger: quietSlog(), FetchCooldown: r.cooldown}
	if c > 0 {
		workers := river.NewWorkers()
		river.AddWorker(workers, &noopWorker{fn: func(a noopArgs) { (*r.handler.Load())(a) }})
		cfg.Workers = workers
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: c}}
	}
	client, err := river.NewClient(riverpgxv5.New(r.pool), cfg)
	check(err)
	return client
}

func (r *riverSystem) enqueue(n, p int) error {
	client := r.client(0)
	body := string(payloadBytes(*payload))
	return parallel(n, p, func(int) error {
		_, err := client.Insert(context.Background(), noopArgs{Data: body}, &river.InsertOpts{MaxAttempts: 2})
		return err
	})
}

func (r *riverSystem) enqueueBatches(n, size int) error {
	client := r.client(0)
	body := string(payloadBytes(*payload))
	for done := 0; done < n; done += size {
		params := make([]river.InsertManyParams, min(size, n-done))
		for i := range params {
			params[i] = river.InsertManyParams{Args: noopArgs{Data: body}, InsertOpts: &river.InsertOpts{MaxAttempts: 2}}
		}
		if _, err := client.InsertMany(context.Background(), params); err != nil {
			return err
		}
	}
	return nil
}

func (r *riverSystem) run(c int, fn func(noopArgs)) func() {
	r.handler.Store(&fn)
	client := r.client(c)
	check(client.Start(context.Background()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(ctx)
	}
}

func (r *riverSystem) drain(n, c int, limit time.Duration) (int, error) {
	return drainWithin(n, limit, func(ran func()) func() { return r.run(c, func(noopArgs) { ran() }) }), nil
}

func (r *riverSystem) latency(rate int, d time.Duration, c int) ([]time.Duration, error) {
	var mu sync.Mutex
	var lat []time.Duration
	stop := r.run(c, func(a noopArgs) {
		mu.Lock()
		lat = append(lat, time.Since(time.Unix(0, a.T)))
		mu.Unlock()
	})
	client := r.client(0)
	sent := steady(rate, d, func() error {
		_, err := client.Insert(context.Background(), noopArgs{T: time.Now().UnixNano()}, nil)
		return err
	})
	waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return len(lat) >= sent })
	stop()
	return lat, nil
}

func (r *riverSystem) cleanup() {
	_, _ = r.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+r.schema+" CASCADE")
}
