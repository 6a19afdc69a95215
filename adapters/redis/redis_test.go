package redis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/brokertest"
	"github.com/taskqueue/taskqueue/adapters/redis"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
	"github.com/taskqueue/taskqueue/test/redisserver"
)

func redisURL(t testing.TB) string { return redisserver.URL(t) }

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newPrefix returns a fresh queue name whose keys are deleted after t.
func newPrefix(t testing.TB) string {
	prefix := fmt.Sprintf("tqtest-%s-%08x", strings.ReplaceAll(t.Name(), "/", "-"), rand.Uint32())
	redisserver.DeleteAfter(t, redisURL(t), prefix)
	return prefix
}

func policy(d time.Duration) domain.RetryPolicy {
	p, _ := domain.NewRetryPolicy(d, d)
	return p
}

func newBroker(t testing.TB, prefix string, edit func(*redis.Options)) *redis.Broker {
	opts := redis.Options{
		URL:              redisURL(t),
		Prefix:           prefix,
		QueueSize:        100,
		Retention:        time.Hour,
		Lease:            30 * time.Second,
		Policy:           policy(100 * time.Millisecond),
		MaintainInterval: 100 * time.Millisecond,
		Log:              quietLog(),
	}
	if edit != nil {
		edit(&opts)
	}
	b, err := redis.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func TestContract(t *testing.T) { contract(t, false) }

// TestContractScripts runs the contract with the scripts sent by EVALSHA,
// as on Redis before 7 or with Options.NoFunctions.
func TestContractScripts(t *testing.T) { contract(t, true) }

func contract(t *testing.T, noFunctions bool) {
	redisURL(t)
	shared := map[string]string{} // test and queue name → prefix
	var mu sync.Mutex
	brokertest.Run(t, func(t *testing.T, cfg brokertest.Config) ports.Broker {
		prefix := ""
		if cfg.Queue != "" {
			mu.Lock()
			if prefix = shared[t.Name()+"/"+cfg.Queue]; prefix == "" {
				prefix = newPrefix(t)
				shared[t.Name()+"/"+cfg.Queue] = prefix
			}
			mu.Unlock()
		} else {
			prefix = newPrefix(t)
		}
		return newBroker(t, prefix, func(o *redis.Options) {
			o.QueueSize, o.Retention = cfg.QueueSize, cfg.Retention
			o.Types, o.Limits, o.KeyConcurrency, o.Aging = cfg.Types, cfg.Limits, cfg.KeyConcurrency, cfg.Aging
			o.NoFunctions = noFunctions
		})
	})
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnreachableRedisNamesTheURL(t *testing.T) {
	_, err := redis.New(context.Background(), redis.Options{
		URL: "redis://:secret@127.0.0.1:1/0", Prefix: "x", QueueSize: 1, Lease: time.Second, Log: quietLog(),
	})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %v: want the URL named, without its password", err)
	}
	if _, err := redis.New(context.Background(), redis.Options{URL: "redis://127.0.0.1:1", Prefix: "x", QueueSize: 1, Lease: 500 * time.Millisecond, Log: quietLog()}); err == nil || !strings.Contains(err.Error(), "lease") {
		t.Fatalf("short lease: %v", err)
	}
}

func TestSharedQueueAcrossInstances(t *testing.T) {
	prefix := newPrefix(t)
	a, b := newBroker(t, prefix, nil), newBroker(t, prefix, nil)
	low, high := brokertest.NewTask(t, 1, 0), brokertest.NewTask(t, 8, 0)
	if err := a.Enqueue(ctx5(t), low); err != nil {
		t.Fatal(err)
	}
	if err := b.Enqueue(ctx5(t), high); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx5(t), low.ID()); err != nil || got.Status() != domain.StatusPending {
		t.Fatalf("task submitted to a, read on b: %v %v", got, err)
	}
	firstAtt, err := a.Dequeue(ctx5(t))
	first := firstAtt.Task
	if err != nil || first.ID() != high.ID() {
		t.Fatalf("a dequeued %v, %v; want the high-priority task submitted to b", first, err)
	}
	// b cannot settle a's attempt.
	_ = first.Succeed(time.Now())
	if err := b.Settle(ctx5(t), 1, first); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Fatalf("settle from another instance: %v", err)
	}
}

func TestBoundIsGlobalAndAtomic(t *testing.T) {
	prefix := newPrefix(t)
	brokers := []*redis.Broker{
		newBroker(t, prefix, func(o *redis.Options) { o.QueueSize = 50 }),
		newBroker(t, prefix, func(o *redis.Options) { o.QueueSize = 50 }),
	}
	results := make(chan error, 400)
	for i := 0; i < 400; i++ {
		go func(i int) { results <- brokers[i%2].Enqueue(context.Background(), brokertest.NewTask(t, i%10, 0)) }(i)
	}
	accepted, full := 0, 0
	for i := 0; i < 400; i++ {
		switch err := <-results; {
		case err == nil:
			accepted++
		case errors.Is(err, domain.ErrQueueFull):
			full++
		default:
			t.Fatal(err)
		}
	}
	s, _ := brokers[0].Counts(ctx5(t))
	if accepted != 50 || full != 350 || s.Pending != 50 {
		t.Fatalf("accepted %d, full %d, pending %d; want exactly 50 accepted", accepted, full, s.Pending)
	}
}

func TestExpiredLeaseIsRecoveredByAnotherInstance(t *testing.T) {
	prefix := newPrefix(t)
	dead := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	alive := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	task := brokertest.NewTask(t, 5, 2)
	if err := dead.Enqueue(ctx5(t), task); err != nil {
		t.Fatal(err)
	}
	runningAtt, err := dead.Dequeue(ctx5(t))
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	dead.Close(context.Background()) // stops renewing without handing back: as if killed
	start := time.Now()
	againAtt, err := alive.Dequeue(ctx5(t))
	again := againAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != task.ID() || again.Attempts() != 2 || !strings.Contains(again.LastError(), "lease expired") {
		t.Fatalf("recovered task: %+v", again.Snapshot())
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Fatalf("recovery took %v; want about the 1s lease plus a little", waited)
	}
	// The dead instance's late result changes nothing.
	_ = running.Succeed(time.Now())
	late := newBroker(t, prefix, nil)
	if err := late.Settle(ctx5(t), 1, running); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Fatalf("late settle: %v", err)
	}
	if got, _ := alive.Get(ctx5(t), task.ID()); got.Status() != domain.StatusRunning || got.Attempts() != 2 {
		t.Fatalf("after late settle: %+v", got.Snapshot())
	}
}

func TestExpiredLeaseWithNoRetriesLeftFails(t *testing.T) {
	prefix := newPrefix(t)
	dead := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	watcher := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	task := brokertest.NewTask(t, 0, 0)
	_ = dead.Enqueue(ctx5(t), task)
	if _, err := dead.Dequeue(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	dead.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := watcher.Get(ctx5(t), task.ID())
		if err != nil {
			t.Fatal(err)
		}
		if got.Status() == domain.StatusFailed {
			if !strings.Contains(got.LastError(), "lease expired") || got.Attempts() != 1 {
				t.Fatalf("failed task: %+v", got.Snapshot())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task never failed: %+v", got.Snapshot())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLeaseIsRenewedWhileRunning(t *testing.T) {
	prefix := newPrefix(t)
	owner := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	other := newBroker(t, prefix, func(o *redis.Options) { o.Lease = time.Second })
	_ = owner.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 3))
	runningAtt, err := owner.Dequeue(ctx5(t))
	running := runningAtt.Task
	if err != nil {
		t.Fatal(err)
	}
	// Three lease periods pass; the owner keeps renewing, so nobody
	// recovers the task and the owner's result is accepted.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := other.Dequeue(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("another instance took a renewed task: %v %v", got, err)
	}
	_ = running.Succeed(time.Now())
	if err := owner.Settle(ctx5(t), 1, running); err != nil {
		t.Fatalf("owner's settle after renewals: %v", err)
	}
}

func TestRunningTaskWithoutLeaseIsRepaired(t *testing.T) {
	prefix := newPrefix(t)
	sweepFast := func(o *redis.Options) { o.SweepInterval = 200 * time.Millisecond; o.Lease = time.Second }
	b := newBroker(t, prefix, sweepFast)
	task := brokertest.NewTask(t, 0, 1)
	_ = b.Enqueue(ctx5(t), task)
	if _, err := b.Dequeue(ctx5(t)); err != nil {
		t.Fatal(err)
	}
	b.Close(context.Background())
	c := rawClient(t)
	// Damage the queue the way a manual edit or a bug could: the record
	// says running, and no lease exists.
	c.Del(ctx5(t), "{"+prefix+"}:running")
	if got, _ := newBroker(t, prefix, nil).Get(ctx5(t), task.ID()); got.Status() != domain.StatusRunning || got.Attempts() != 1 {
		t.Fatalf("damage not in place: %+v", got.Snapshot())
	}
	other := newBroker(t, prefix, sweepFast)
	againAtt, err := other.Dequeue(ctx5(t))
	again := againAtt.Task
	if err != nil || again.ID() != task.ID() || again.Attempts() != 2 || !strings.Contains(again.LastError(), "lease expired") {
		t.Fatalf("repaired task: %v %v", again, err)
	}
}

func rawClient(t testing.TB) *goredis.Client {
	opts, _ := goredis.ParseURL(redisURL(t))
	c := goredis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPendingTaskMissingFromItsSetIsPutBack(t *testing.T) {
	prefix := newPrefix(t)
	b := newBroker(t, prefix, func(o *redis.Options) { o.SweepInterval = 200 * time.Millisecond })
	task := brokertest.NewTask(t, 3, 0)
	_ = b.Enqueue(ctx5(t), task)
	opts, _ := goredis.ParseURL(redisURL(t))
	c := goredis.NewClient(opts)
	defer c.Close()
	c.ZRem(ctx5(t), "{"+prefix+"}:q|"+task.Type()+"|3|", task.ID().String())
	gotAtt, err := b.Dequeue(ctx5(t))
	got := gotAtt.Task
	if err != nil || got.ID() != task.ID() || got.Attempts() != 1 {
		t.Fatalf("stranded pending task: %v %v", got, err)
	}
}

func TestRedisLostAndBack(t *testing.T) {
	srv := redisserver.Start(t)
	b := newBroker(t, "outage", func(o *redis.Options) { o.URL = srv.URL })
	first := brokertest.NewTask(t, 0, 0)
	if err := b.Enqueue(ctx5(t), first); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := b.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 0)); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("enqueue with Redis down: %v", err)
	}
	if _, err := b.Get(ctx5(t), first.ID()); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("get with Redis down: %v", err)
	}
	got := make(chan *domain.Task, 1)
	go func() {
		taskAtt, err := b.Dequeue(context.Background())
		task := taskAtt.Task
		if err != nil {
			t.Error(err)
		}
		got <- task
	}()
	srv.Restart() // the append-only file brings the pending task back
	select {
	case task := <-got:
		if task.ID() != first.ID() {
			t.Fatalf("after restart got %s; want %s", task.ID(), first.ID())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("workers did not resume after Redis came back")
	}
	if err := b.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 0)); err != nil {
		t.Fatalf("enqueue after Redis came back: %v", err)
	}
}

// A Redis that lost its functions or scripts (a restart without
// persistence, FUNCTION FLUSH, SCRIPT FLUSH) gets them again on the next
// call.
func TestLostScriptsAreLoadedAgain(t *testing.T) {
	for _, noFunctions := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoFunctions=%v", noFunctions), func(t *testing.T) {
			b := newBroker(t, newPrefix(t), func(o *redis.Options) { o.NoFunctions = noFunctions })
			c := rawClient(t)
			if err := b.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 0)); err != nil {
				t.Fatal(err)
			}
			if err := c.FunctionFlush(ctx5(t)).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.ScriptFlush(ctx5(t)).Err(); err != nil {
				t.Fatal(err)
			}
			if err := b.Enqueue(ctx5(t), brokertest.NewTask(t, 0, 0)); err != nil {
				t.Fatalf("enqueue after the scripts were flushed: %v", err)
			}
			for i := 0; i < 2; i++ {
				if _, err := b.Dequeue(ctx5(t)); err != nil {
					t.Fatal(err)
				}
			}
			if st, err := b.Stats(ctx5(t)); err != nil || st.ByType["test"][domain.StatusRunning] != 2 {
				t.Fatalf("stats after the scripts were flushed: %+v, %v", st, err)
			}
		})
	}
}
