// Command bench compares taskqueue's Redis broker with github.com/hibiken/asynq
// on the same Redis, in one run: enqueue throughput, drain throughput at two
// worker counts, submit-to-start latency at a steady rate, Redis memory per
// pending task, and the commands an idle instance sends.
//
// It is a separate module so the service never depends on asynq. Run it with
//
//	cd test/bench && go run . -redis redis://127.0.0.1:6379/0
//
// It uses its own key prefix and asynq queue and deletes them afterwards.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/logging"
	"github.com/taskqueue/taskqueue/adapters/redis"
	"github.com/taskqueue/taskqueue/adapters/workerpool"
	"github.com/taskqueue/taskqueue/application"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

var (
	redisURL  = flag.String("redis", "redis://127.0.0.1:6379/0", "Redis to benchmark against")
	tasks     = flag.Int("tasks", 100_000, "tasks per enqueue and drain run")
	producers = flag.Int("producers", 8, "concurrent producers for the enqueue run")
	rate      = flag.Int("rate", 2000, "tasks per second for the latency run")
	latFor    = flag.Duration("latency-duration", 5*time.Second, "length of the latency run")
	idleFor   = flag.Duration("idle-duration", 10*time.Second, "length of the idle-cost run")
	payload   = flag.Int("payload", 100, "payload size in bytes")
	only      = flag.String("only", "", "run only this system (taskqueue or asynq)")
	cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	pgURL     = flag.String("postgres", "", "compare the Postgres broker with River on this Postgres instead of Redis with asynq")
	singles   = flag.Int("singles", 20_000, "with -postgres: tasks submitted one by one")
	drainFor  = flag.Duration("drain-limit", 20*time.Second, "with -postgres: longest a drain run may take (the rate is what ran by then)")
	pgRate    = flag.Int("pg-rate", 500, "with -postgres: tasks per second for the latency run")
)

type system interface {
	name() string
	// enqueue submits n tasks from p producers.
	enqueue(n, p int) error
	// drain runs workers at concurrency c until n tasks have run.
	drain(n, c int) error
	// latency submits at rate r/s for d with c workers running and returns
	// submit-to-start latencies.
	latency(r int, d time.Duration, c int) ([]time.Duration, error)
	// idle starts c workers on an empty queue and waits d.
	idle(c int, d time.Duration) error
	cleanup()
}

func main() {
	flag.Parse()
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if *pgURL != "" {
		runPostgres(*pgURL)
		return
	}
	opts, err := goredis.ParseURL(*redisURL)
	if err != nil {
		fail(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		fail(fmt.Errorf("redis at %s: %w", *redisURL, err))
	}
	tag := fmt.Sprintf("bench%06x", rand.Uint32N(1<<24))
	systems := []system{newOurs(*redisURL, tag), newAsynq(opts, tag)}
	defer func() {
		for _, s := range systems {
			s.cleanup()
		}
	}()

	fmt.Printf("redis %s, %d tasks, %d-byte payload, %d producers\n\n", *redisURL, *tasks, *payload, *producers)
	fmt.Printf("%-10s %14s %14s %14s %10s %10s %14s %12s\n", "system", "enqueue/s", "drain/s c=10", "drain/s c=50",
		"p50", "p99", "bytes/pending", "idle cmd/s")
	var cpuRows []string
	for _, s := range systems {
		if *only != "" && s.name() != *only {
			continue
		}
		row := []string{s.name()}
		cpuRow := fmt.Sprintf("%-10s", s.name())
		before := usedMemory(rdb)
		cpu := redisCPU(rdb)
		start := time.Now()
		check(s.enqueue(*tasks, *producers))
		row = append(row, perSecond(*tasks, time.Since(start)))
		cpuRow += fmt.Sprintf(" %14.1f", (redisCPU(rdb)-cpu)*1e6/float64(*tasks))
		perPending := float64(usedMemory(rdb)-before) / float64(*tasks)
		for _, c := range []int{10, 50} {
			if c == 50 {
				check(s.enqueue(*tasks, *producers))
			}
			cpu = redisCPU(rdb)
			start = time.Now()
			check(s.drain(*tasks, c))
			row = append(row, perSecond(*tasks, time.Since(start)))
			cpuRow += fmt.Sprintf(" %14.1f", (redisCPU(rdb)-cpu)*1e6/float64(*tasks))
		}
		lat, err := s.latency(*rate, *latFor, 10)
		check(err)
		row = append(row, percentile(lat, 50), percentile(lat, 99))
		row = append(row, fmt.Sprintf("%.0f", perPending))
		cmdsBefore := totalCommands(rdb)
		start = time.Now()
		check(s.idle(10, *idleFor))
		row = append(row, fmt.Sprintf("%.1f", float64(totalCommands(rdb)-cmdsBefore)/time.Since(start).Seconds()))
		fmt.Printf("%-10s %14s %14s %14s %10s %10s %14s %12s\n", row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])
		cpuRows = append(cpuRows, cpuRow)
	}
	fmt.Printf("\nRedis CPU per task (µs): %-5s %14s %14s %14s\n", "", "enqueue", "drain c=10", "drain c=50")
	for _, r := range cpuRows {
		fmt.Println("                         " + r)
	}
}

// redisCPU returns the seconds of CPU Redis has used.
func redisCPU(c *goredis.Client) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	check(err)
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, f := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, f); ok {
				n, _ := strconv.ParseFloat(v, 64)
				total += n
			}
		}
	}
	return total
}

// ---- taskqueue ----

type ours struct {
	url, prefix string
	log         logrus.FieldLogger
}

func newOurs(url, tag string) *ours {
	// The service's logger and format, writing nowhere: log formatting is
	// part of the cost the service pays.
	l, err := logging.New(io.Discard, "info", logging.FormatText)
	check(err)
	return &ours{url: url, prefix: tag, log: l}
}

func (o *ours) name() string { return "taskqueue" }

func (o *ours) broker() *redis.Broker {
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	b, err := redis.New(context.Background(), redis.Options{
		URL: o.url, Prefix: o.prefix, QueueSize: 10 * *tasks, Retention: time.Minute,
		Lease: 30 * time.Second, Policy: policy, Log: o.log, Types: []string{"noop"},
	})
	check(err)
	return b
}

func (o *ours) enqueue(n, p int) error {
	return serviceEnqueue(func() queueBroker { return o.broker() }, n, p, o.log)
}

// run starts c workers whose handler calls fn, and returns a stop function.
func (o *ours) run(c int, fn func(*domain.Task)) func() {
	b := o.broker()
	stop := runProcessor(b, c, fn, o.log)
	return func() { stop(); b.Close(context.Background()) }
}

func (o *ours) drain(n, c int) error {
	ran, finished := countTo(n)
	stop := o.run(c, func(*domain.Task) { ran() })
	<-finished
	stop()
	return nil
}

func (o *ours) latency(r int, d time.Duration, c int) ([]time.Duration, error) {
	return serviceLatency(func() queueBroker { return o.broker() }, o.run, r, d, c, o.log), nil
}

func (o *ours) idle(c int, d time.Duration) error {
	stop := o.run(c, func(*domain.Task) {})
	time.Sleep(d)
	stop()
	return nil
}

func (o *ours) cleanup() {
	opts, _ := goredis.ParseURL(o.url)
	c := goredis.NewClient(opts)
	defer c.Close()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, "{"+o.prefix+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// queueBroker is a broker the benchmark opens and closes.
type queueBroker interface {
	ports.Broker
	Close(ctx context.Context) int
}

// serviceEnqueue submits n tasks one by one from p producers through the
// real service on a broker from open.
func serviceEnqueue(open func() queueBroker, n, p int, log logrus.FieldLogger) error {
	b := open()
	defer b.Close(context.Background())
	svc := application.NewService(b, application.ServiceConfig{Types: []string{"noop"}}, log)
	body := payloadBytes(*payload)
	return parallel(n, p, func(int) error {
		_, err := svc.Submit(context.Background(), ports.Submission{Type: "noop", Payload: body})
		return err
	})
}

// runProcessor runs c workers of the real processor on b, whose handler
// calls fn, and returns a function that stops them (not b).
func runProcessor(b ports.Broker, c int, fn func(*domain.Task), log logrus.FieldLogger) func() {
	pool, err := workerpool.New(c, log)
	check(err)
	policy, _ := domain.NewRetryPolicy(time.Second, time.Minute)
	h := ports.HandlerFunc(func(_ context.Context, t *domain.Task) error { fn(t); return nil })
	proc := application.NewProcessor(b, pool, map[string]ports.Handler{"noop": h},
		application.ProcessorConfig{Policy: policy, TaskTimeout: time.Minute}, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = proc.Run(ctx); close(done) }()
	return func() { cancel(); <-done; pool.Stop(10*time.Second, time.Second) }
}

// serviceLatency submits r tasks a second for d through the real service
// while workers started by run take them, and returns the waits from
// submission to handler.
func serviceLatency(open func() queueBroker, run func(int, func(*domain.Task)) func(), r int, d time.Duration, c int, log logrus.FieldLogger) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	stop := run(c, func(t *domain.Task) {
		var p struct{ T int64 }
		_ = json.Unmarshal(t.Payload(), &p)
		mu.Lock()
		lat = append(lat, time.Since(time.Unix(0, p.T)))
		mu.Unlock()
	})
	b := open()
	svc := application.NewService(b, application.ServiceConfig{Types: []string{"noop"}}, log)
	sent := steady(r, d, func() error {
		_, err := svc.Submit(context.Background(), ports.Submission{Type: "noop", Payload: stamp()})
		return err
	})
	waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return len(lat) >= sent })
	stop()
	b.Close(context.Background())
	return lat
}

// drainWithin starts workers with start (their handler calls ran once per
// task) until n tasks ran or limit passed, and returns how many ran.
func drainWithin(n int, limit time.Duration, start func(ran func()) (stop func())) int {
	done, finished := countTo(n)
	var count atomic.Int64
	stop := start(func() { count.Add(1); done() })
	select {
	case <-finished:
	case <-time.After(limit):
	}
	got := int(count.Load())
	stop()
	return got
}

// ---- asynq ----

type asynqSystem struct {
	opt   asynq.RedisClientOpt
	queue string
}

func newAsynq(o *goredis.Options, tag string) *asynqSystem {
	return &asynqSystem{opt: asynq.RedisClientOpt{Addr: o.Addr, DB: o.DB, Password: o.Password}, queue: tag}
}

func (a *asynqSystem) name() string { return "asynq" }

func (a *asynqSystem) enqueue(n, p int) error {
	client := asynq.NewClient(a.opt)
	defer client.Close()
	body := payloadBytes(*payload)
	return parallel(n, p, func(int) error {
		_, err := client.Enqueue(asynq.NewTask("noop", body), asynq.Queue(a.queue), asynq.MaxRetry(1))
		return err
	})
}

func (a *asynqSystem) run(c int, fn func(*asynq.Task)) func() {
	srv := asynq.NewServer(a.opt, asynq.Config{
		Concurrency: c, Queues: map[string]int{a.queue: 1}, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(_ context.Context, t *asynq.Task) error { fn(t); return nil })
	check(srv.Start(mux))
	return srv.Shutdown
}

func (a *asynqSystem) drain(n, c int) error {
	ran, finished := countTo(n)
	stop := a.run(c, func(*asynq.Task) { ran() })
	<-finished
	stop()
	return nil
}

func (a *asynqSystem) latency(r int, d time.Duration, c int) ([]time.Duration, error) {
	var mu sync.Mutex
	var lat []time.Duration
	stop := a.run(c, func(t *asynq.Task) {
		var p struct{ T int64 }
		_ = json.Unmarshal(t.Payload(), &p)
		mu.Lock()
		lat = append(lat, time.Since(time.Unix(0, p.T)))
		mu.Unlock()
	})
	client := asynq.NewClient(a.opt)
	defer client.Close()
	sent := steady(r, d, func() error {
		_, err := client.Enqueue(asynq.NewTask("noop", stamp()), asynq.Queue(a.queue))
		return err
	})
	waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return len(lat) >= sent })
	stop()
	return lat, nil
}

func (a *asynqSystem) idle(c int, d time.Duration) error {
	stop := a.run(c, func(*asynq.Task) {})
	time.Sleep(d)
	stop()
	return nil
}

func (a *asynqSystem) cleanup() {
	insp := asynq.NewInspector(a.opt)
	defer insp.Close()
	_ = insp.DeleteQueue(a.queue, true)
}

// ---- helpers ----

// countTo returns a function for handlers to call once per task and a
// channel closed when it has been called n times.
func countTo(n int) (ran func(), finished <-chan struct{}) {
	var count atomic.Int64
	done := make(chan struct{})
	return func() {
		if count.Add(1) == int64(n) {
			close(done)
		}
	}, done
}

func parallel(n, p int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var first atomic.Value
	for w := 0; w < p; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += p {
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// steady calls fn r times a second for d and returns how many it made.
func steady(r int, d time.Duration, fn func() error) int {
	interval := time.Second / time.Duration(r)
	start := time.Now()
	sent := 0
	for next := start; time.Since(start) < d; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		check(fn())
		sent++
	}
	return sent
}

func waitFor(cond func() bool) {
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			fail(fmt.Errorf("timed out"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func payloadBytes(n int) []byte {
	return []byte(`{"data":"` + strings.Repeat("x", max(n-11, 0)) + `"}`)
}

func stamp() []byte { return []byte(`{"T":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}`) }

func perSecond(n int, d time.Duration) string { return fmt.Sprintf("%.0f", float64(n)/d.Seconds()) }

func percentile(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "-"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, len(d)*p/100)].Round(100 * time.Microsecond).String()
}

func usedMemory(c *goredis.Client) int64 {
	return infoInt(c, "memory", "used_memory")
}

func totalCommands(c *goredis.Client) int64 {
	return infoInt(c, "stats", "total_commands_processed")
}

func infoInt(c *goredis.Client, section, field string) int64 {
	info, err := c.Info(context.Background(), section).Result()
	check(err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func check(err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
