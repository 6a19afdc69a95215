package brokertest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// flowTests are the contract of flow control: types an instance runs,
// per-type concurrency and rate limits, fairness keys and their cap,
// priority aging, and pausing.
var flowTests = []struct {
	name string
	fn   func(*testing.T, Factory)
}{
	{"OnlyTypesItRuns", testOnlyTypesItRuns},
	{"ConcurrencyLimitPerType", testConcurrencyLimit},
	{"ConcurrencyLimitAcrossInstances", testConcurrencyAcrossInstances},
	{"RateLimitPerType", testRateLimit},
	{"KeysTakeTurns", testKeysTakeTurns},
	{"KeyConcurrency", testKeyConcurrency},
	{"AgingBoundsTheWait", testAging},
	{"PauseAndResume", testPause},
}

func newKeyed(t testing.TB, typ, key string, priority int) *domain.Task {
	t.Helper()
	p, _ := domain.ParsePriority(priority)
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), typ, []byte(`{}`), p, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		if err := task.SetKey(key); err != nil {
			t.Fatal(err)
		}
	}
	return task
}

// dequeueWithin returns the next attempt, or nil when none comes within d.
func dequeueWithin(t *testing.T, b ports.Broker, d time.Duration) *domain.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	att, err := b.Dequeue(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatalf("Dequeue: %v", err)
	}
	return att.Task
}

func settle(t *testing.T, b ports.Broker, task *domain.Task) {
	t.Helper()
	_ = task.Succeed(time.Now())
	if err := b.Settle(ctxT(t), task.Attempts(), task); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

func limits(concurrency, rate int, period time.Duration) domain.TypeLimits {
	l, _ := domain.NewTypeLimits(concurrency, rate, period)
	return l
}

func testOnlyTypesItRuns(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour, Types: []string{"mine"}})
	theirs, mine := newKeyed(t, "theirs", "", 9), newKeyed(t, "mine", "", 0)
	enqueue(t, b, theirs, mine)
	if got := dequeue(t, b); got.ID() != mine.ID() {
		t.Fatalf("got %s (%s); want the task of the type this instance runs", got.ID(), got.Type())
	}
	if got := dequeueWithin(t, b, 200*time.Millisecond); got != nil {
		t.Fatalf("an instance took a task of a type it does not run: %s", got.Type())
	}
	st, _ := b.Stats(ctxT(t))
	if count(st, "theirs", domain.StatusPending) != 1 {
		t.Fatalf("the waiting task is not counted: %+v", st.ByType)
	}
}

func testConcurrencyLimit(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 20, Retention: time.Hour, Limits: map[string]domain.TypeLimits{"limited": limits(2, 0, 0)}})
	for i := 0; i < 4; i++ {
		enqueue(t, b, newKeyed(t, "limited", "", 9))
	}
	other := newKeyed(t, "other", "", 0)
	enqueue(t, b, other)
	first, second := dequeue(t, b), dequeue(t, b)
	// Two of the limited type run: the next one waits, without holding
	// back the other type.
	if third := dequeue(t, b); third.ID() != other.ID() {
		t.Fatalf("got %s (%s); want the task of the other type", third.ID(), third.Type())
	}
	if got := dequeueWithin(t, b, 200*time.Millisecond); got != nil {
		t.Fatalf("a third attempt of a type limited to 2 started")
	}
	settle(t, b, first)
	if got := dequeueWithin(t, b, 2*time.Second); got == nil || got.Type() != "limited" {
		t.Fatalf("no attempt started when a slot came free: %v", got)
	}
	_ = second
}

func testConcurrencyAcrossInstances(t *testing.T, newBroker Factory) {
	const limit, tasks = 3, 30
	cfg := Config{QueueSize: 100, Retention: time.Hour, Queue: "shared", Limits: map[string]domain.TypeLimits{"limited": limits(limit, 0, 0)}}
	instances := []ports.Broker{newBroker(t, cfg), newBroker(t, cfg), newBroker(t, cfg)}
	for i := 0; i < tasks; i++ {
		enqueue(t, instances[i%3], newKeyed(t, "limited", "", 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var running, most, done atomic.Int64
	var wg sync.WaitGroup
	for _, b := range instances {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Load() < tasks {
					att, err := b.Dequeue(ctx)
					if err != nil {
						return
					}
					n := running.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					time.Sleep(10 * time.Millisecond) // the handler's work
					running.Add(-1)
					_ = att.Task.Succeed(time.Now())
					if err := b.Settle(context.Background(), att.Task.Attempts(), att.Task); err != nil {
						t.Error(err)
					}
					if done.Add(1) == tasks {
						cancel()
					}
				}
			}()
		}
	}
	wg.Wait()
	if done.Load() != tasks {
		t.Fatalf("%d of %d tasks ran", done.Load(), tasks)
	}
	if m := most.Load(); m != limit {
		t.Fatalf("at most %d attempts ran at once across 3 instances with 12 workers; want the limit, %d", m, limit)
	}
}

func testRateLimit(t *testing.T, newBroker Factory) {
	const rate = 10
	b := newBroker(t, Config{QueueSize: 1000, Retention: time.Hour, Limits: map[string]domain.TypeLimits{"rated": limits(0, rate, time.Second)}})
	for i := 0; i < 200; i++ {
		enqueue(t, b, newKeyed(t, "rated", "", 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var started atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				att, err := b.Dequeue(ctx)
				if err != nil {
					return
				}
				started.Add(1)
				_ = att.Task.Succeed(time.Now())
				_ = b.Settle(context.Background(), att.Task.Attempts(), att.Task)
			}
		}()
	}
	wg.Wait()
	// A token bucket holding 10: a burst of 10, then 10 a second.
	if n := started.Load(); n < 26 || n > 31 {
		t.Fatalf("%d attempts in 2s at 10/s with a burst of 10; want about 30", n)
	}
}

func testKeysTakeTurns(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 2000, Retention: time.Hour})
	for i := 0; i < 1000; i++ {
		enqueue(t, b, newKeyed(t, "job", "flood", 3))
	}
	single := newKeyed(t, "job", "single", 3)
	enqueue(t, b, single)
	for i := 0; i < 3; i++ {
		if got := dequeue(t, b); got.ID() == single.ID() {
			return
		}
	}
	t.Fatal("a key with one task waited behind more than a couple of a flooding key's")
}

func testKeyConcurrency(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 20, Retention: time.Hour, KeyConcurrency: 1})
	k1, k2 := newKeyed(t, "job", "acme", 5), newKeyed(t, "job", "acme", 5)
	other := newKeyed(t, "job", "globex", 0)
	enqueue(t, b, k1, k2, other)
	if got := dequeue(t, b); got.ID() != k1.ID() {
		t.Fatalf("got %s; want acme's first", got.ID())
	}
	if got := dequeue(t, b); got.ID() != other.ID() {
		t.Fatalf("got %s (key %q); acme is at its limit of 1", got.ID(), got.Key())
	}
	if got := dequeueWithin(t, b, 200*time.Millisecond); got != nil {
		t.Fatalf("a second attempt of key acme started: %s", got.ID())
	}
	// Tasks without a key take turns as one key, but are not capped.
	n1, n2 := newKeyed(t, "job", "", 0), newKeyed(t, "job", "", 0)
	enqueue(t, b, n1, n2)
	if x, y := dequeue(t, b), dequeue(t, b); x.ID() != n1.ID() || y.ID() != n2.ID() {
		t.Fatalf("tasks without a key: got %s, %s", x.ID(), y.ID())
	}
	settle(t, b, k1Started(t, b, k1))
	if got := dequeueWithin(t, b, 2*time.Second); got == nil || got.ID() != k2.ID() {
		t.Fatalf("acme's second task did not start once its first ended: %v", got)
	}
}

// k1Started returns the running copy of task k1 (as a worker holds it).
func k1Started(t *testing.T, b ports.Broker, k1 *domain.Task) *domain.Task {
	got := get(t, b, k1.ID())
	if got.Status() != domain.StatusRunning {
		t.Fatalf("task %s is %v", k1.ID(), got.Status())
	}
	return got
}

func testAging(t *testing.T, newBroker Factory) {
	const step = 50 * time.Millisecond
	b := newBroker(t, Config{QueueSize: 100, Retention: time.Hour, Aging: step})
	start := time.Now() // before the task is made: it waits from then
	low := newKeyed(t, "job", "", 0)
	enqueue(t, b, low)
	// A steady stream of priority-9 tasks: one waiting at every moment.
	for {
		enqueue(t, b, newKeyed(t, "job", "", 9))
		got := dequeue(t, b)
		settle(t, b, got)
		if got.ID() == low.ID() {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the priority-0 task never ran under a stream of priority-9 tasks")
		}
	}
	if waited := time.Since(start); waited < 9*step || waited > 9*step+time.Second {
		t.Fatalf("the priority-0 task waited %v; want about 9 × %v", waited, step)
	}
}

func testPause(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	if err := b.Pause(ctxT(t), "job"); err != nil {
		t.Fatal(err)
	}
	task := newKeyed(t, "job", "", 0)
	enqueue(t, b, task) // a paused type still takes submissions
	if got := dequeueWithin(t, b, 300*time.Millisecond); got != nil {
		t.Fatal("an attempt of a paused type started")
	}
	if paused, _ := b.Paused(ctxT(t)); len(paused) != 1 || paused[0] != "job" {
		t.Fatalf("Paused = %v", paused)
	}
	got := make(chan *domain.Task, 1)
	go func() { got <- dequeueWithin(t, b, 3*time.Second) }()
	time.Sleep(50 * time.Millisecond) // the worker waits first; not an assertion
	resumed := time.Now()
	if err := b.Resume(ctxT(t), "job"); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g == nil || g.ID() != task.ID() || time.Since(resumed) > time.Second {
		t.Fatalf("after resume: %v after %v", g, time.Since(resumed))
	}
}
