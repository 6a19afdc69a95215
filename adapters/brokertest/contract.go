// Package brokertest is the contract every ports.Broker adapter must meet.
// Each adapter's tests call Run with a factory for fresh brokers; passing
// the same suite is what makes adapters swappable.
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

// Config is what the suite asks of a new broker.
type Config struct {
	QueueSize int
	Retention time.Duration
	// Flow control: the types this instance starts (nil: all), their
	// limits, the cap per key, and priority aging.
	Types          []string
	Limits         map[string]domain.TypeLimits
	KeyConcurrency int
	Aging          time.Duration
	// Queue, when set, names a queue that the brokers a test makes with
	// the same name share, as instances of the service share one broker
	// (an in-process broker returns the same one).
	Queue string
}

// Factory returns an empty broker with the given config, cleaned up when t
// ends.
type Factory func(t *testing.T, cfg Config) ports.Broker

const wait = 5 * time.Second

// Run runs the whole contract against brokers made by newBroker.
func Run(t *testing.T, newBroker Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"PriorityOrderAndFIFO", testPriorityOrder},
		{"BoundRefusesOnlyNewPending", testBound},
		{"BoundCountsRetryingTasks", testBoundCountsRetrying},
		{"PingWhileOpen", testPing},
		{"DequeueStartsAttempt", testDequeueStartsAttempt},
		{"DequeueBlocksUntilEnqueue", testDequeueBlocks},
		{"DequeueHonoursContext", testDequeueContext},
		{"SettleIsFencedByAttempt", testSettleFenced},
		{"RetryWaitsThenJoinsBackOfItsPriority", testRetry},
		{"RetryComesBackEvenWhenFull", testRetryOverLimit},
		{"HandedBackTaskIsFirstAgain", testHandBack},
		{"FinishedTasksExpire", testRetention},
		{"GetUnknown", testGetUnknown},
		{"ConcurrentUseDeliversEachTaskOnce", testConcurrent},
		{"AttemptSaysWhenTheTaskBecameReady", testAttemptReady},
	}
	tests = append(tests, lifecycleTests...)
	tests = append(tests, flowTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBroker) })
	}
}

// NewTask returns a pending task of the given priority for tests.
func NewTask(t testing.TB, priority, maxRetries int) *domain.Task {
	t.Helper()
	p, err := domain.ParsePriority(priority)
	if err != nil {
		t.Fatal(err)
	}
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), "test", []byte(`{"n":1}`), p, maxRetries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func enqueue(t *testing.T, b ports.Broker, tasks ...*domain.Task) {
	t.Helper()
	for _, task := range tasks {
		if err := b.Enqueue(ctxT(t), task); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
}

func dequeue(t *testing.T, b ports.Broker) *domain.Task {
	t.Helper()
	return dequeueAttempt(t, b).Task
}

func dequeueAttempt(t *testing.T, b ports.Broker) ports.Attempt {
	t.Helper()
	att, err := b.Dequeue(ctxT(t))
	if err != nil {
		t.Fatalf("Dequeue: %v", err)
	}
	if att.Task == nil || att.Cancelled == nil {
		t.Fatalf("Dequeue returned an attempt without a task or a Cancelled channel: %+v", att)
	}
	return att
}

func get(t *testing.T, b ports.Broker, id uuid.UUID) *domain.Task {
	t.Helper()
	task, err := b.Get(ctxT(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return task
}

func policy(t *testing.T, d time.Duration) domain.RetryPolicy {
	p, err := domain.NewRetryPolicy(d, d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testPriorityOrder(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 100, Retention: time.Hour})
	var want []uuid.UUID
	byPriority := map[int][]uuid.UUID{}
	for _, p := range []int{0, 5, 9, 5, 0, 9, 1, 5} {
		task := NewTask(t, p, 0)
		enqueue(t, b, task)
		byPriority[p] = append(byPriority[p], task.ID())
	}
	for p := 9; p >= 0; p-- {
		want = append(want, byPriority[p]...)
	}
	for i, id := range want {
		if got := dequeue(t, b); got.ID() != id {
			t.Fatalf("dequeue %d: got %s (priority %d); want %s", i, got.ID(), got.Priority().Level(), id)
		}
	}
}

func testBound(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 3, Retention: time.Hour})
	enqueue(t, b, NewTask(t, 1, 0), NewTask(t, 1, 0), NewTask(t, 1, 0))
	extra := NewTask(t, 9, 0)
	if err := b.Enqueue(ctxT(t), extra); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("Enqueue over the limit: %v; want ErrQueueFull", err)
	}
	if _, err := b.Get(ctxT(t), extra.ID()); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("refused task was stored: Get = %v", err)
	}
	dequeue(t, b) // a running task does not count
	enqueue(t, b, NewTask(t, 1, 0))
}

// testBoundCountsRetrying holds that --queue-size bounds every task
// waiting to run: a task waiting out its backoff keeps its place in the
// count, so a failing handler cannot make the broker hold more than the
// bound; and the failed attempt itself is never refused.
func testBoundCountsRetrying(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 2, Retention: time.Hour})
	failing := NewTask(t, 0, 5)
	enqueue(t, b, failing, NewTask(t, 0, 0))
	running := dequeue(t, b)
	if running.ID() != failing.ID() {
		t.Fatalf("dequeued %s; want %s", running.ID(), failing.ID())
	}
	enqueue(t, b, NewTask(t, 0, 0)) // one running, two pending: full
	_ = running.Fail(time.Now(), "boom", policy(t, time.Hour), 0.5)
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatalf("Settle of a failed attempt over the bound: %v; it must never be refused", err)
	}
	dequeue(t, b)
	dequeue(t, b) // two running; the retrying task still counts
	enqueue(t, b, NewTask(t, 0, 0))
	if err := b.Enqueue(ctxT(t), NewTask(t, 0, 0)); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("Enqueue with one retrying and one pending: %v; want ErrQueueFull", err)
	}
}

func testPing(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 1, Retention: time.Hour})
	if err := b.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping on an open broker: %v", err)
	}
}

func testDequeueStartsAttempt(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 4, 2)
	enqueue(t, b, task)
	if got := get(t, b, task.ID()); got.Status() != domain.StatusPending || got.Attempts() != 0 {
		t.Fatalf("after Enqueue: %v, %d attempts", got.Status(), got.Attempts())
	}
	got := dequeue(t, b)
	if got.ID() != task.ID() || got.Status() != domain.StatusRunning || got.Attempts() != 1 || got.StartedAt().IsZero() {
		t.Fatalf("Dequeue returned %+v", got.Snapshot())
	}
	if string(got.Payload()) != `{"n":1}` || got.Type() != "test" || got.MaxRetries() != 2 || got.Priority().Level() != 4 {
		t.Fatalf("Dequeue lost fields: %+v", got.Snapshot())
	}
	if stored := get(t, b, task.ID()); stored.Status() != domain.StatusRunning || stored.Attempts() != 1 {
		t.Fatalf("stored task after Dequeue: %v, %d attempts", stored.Status(), stored.Attempts())
	}
}

func testDequeueBlocks(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	got := make(chan *domain.Task, 1)
	go func() {
		att, err := b.Dequeue(ctxT(t))
		if err != nil {
			t.Errorf("Dequeue: %v", err)
		}
		got <- att.Task
	}()
	select {
	case task := <-got:
		t.Fatalf("Dequeue returned %v from an empty queue", task)
	case <-time.After(50 * time.Millisecond):
	}
	task := NewTask(t, 0, 0)
	enqueue(t, b, task)
	select {
	case g := <-got:
		if g == nil || g.ID() != task.ID() {
			t.Fatalf("Dequeue returned %v; want %s", g, task.ID())
		}
	case <-time.After(wait):
		t.Fatal("blocked Dequeue did not wake up after Enqueue")
	}
}

func testDequeueContext(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := b.Dequeue(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dequeue on empty queue with deadline: %v", err)
	}
}

func testSettleFenced(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 0, 0)
	enqueue(t, b, task)
	running := dequeue(t, b)
	wrong := *running
	if err := b.Settle(ctxT(t), 2, &wrong); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Fatalf("Settle with wrong attempt: %v; want ErrStaleAttempt", err)
	}
	if err := running.Succeed(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if got := get(t, b, task.ID()); got.Status() != domain.StatusSucceeded || got.FinishedAt().IsZero() {
		t.Fatalf("after Settle: %+v", got.Snapshot())
	}
	if err := b.Settle(ctxT(t), 1, running); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Fatalf("second Settle: %v; want ErrStaleAttempt", err)
	}
}

func testRetry(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 3, 1)
	enqueue(t, b, task)
	running := dequeue(t, b)
	if err := running.Fail(time.Now(), "boom", policy(t, 300*time.Millisecond), 0.5); err != nil {
		t.Fatal(err)
	}
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatal(err)
	}
	got := get(t, b, task.ID())
	if got.Status() != domain.StatusRetrying || got.LastError() != "boom" || !got.NextAttemptAt().Equal(running.NextAttemptAt()) {
		t.Fatalf("after failed attempt: %+v", got.Snapshot())
	}
	ahead := NewTask(t, 3, 0) // already waiting when the retry becomes due
	enqueue(t, b, ahead)
	if first := dequeue(t, b); first.ID() != ahead.ID() {
		t.Fatalf("got %s; want the task that was pending", first.ID())
	}
	again := dequeue(t, b) // blocks until the backoff is over
	if again.ID() != task.ID() || again.Attempts() != 2 {
		t.Fatalf("retry: got %+v", again.Snapshot())
	}
	if time.Now().Before(running.NextAttemptAt()) {
		t.Fatalf("retry ran before its backoff ended (due %v)", running.NextAttemptAt())
	}
}

func testRetryOverLimit(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 1, Retention: time.Hour})
	task := NewTask(t, 0, 1)
	enqueue(t, b, task)
	running := dequeue(t, b)
	enqueue(t, b, NewTask(t, 9, 0)) // fills the queue while task runs
	_ = running.Fail(time.Now(), "boom", policy(t, 100*time.Millisecond), 0.5)
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatalf("Settle of a failed attempt with the queue full: %v", err)
	}
	deadline := time.Now().Add(wait)
	for get(t, b, task.ID()).Status() != domain.StatusPending {
		if time.Now().After(deadline) {
			t.Fatal("retrying task never became pending while the queue was full")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dequeue(t, b)
	if again := dequeue(t, b); again.ID() != task.ID() {
		t.Fatalf("got %s; want the retried task", again.ID())
	}
}

func testHandBack(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	first, second := NewTask(t, 2, 0), NewTask(t, 2, 0)
	enqueue(t, b, first, second)
	running := dequeue(t, b)
	if err := running.Release(time.Now(), "handed back"); err != nil {
		t.Fatal(err)
	}
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatal(err)
	}
	got := get(t, b, first.ID())
	if got.Status() != domain.StatusPending || got.Attempts() != 1 || got.RetriesLeft() != 0 || got.LastError() != "handed back" {
		t.Fatalf("after hand-back: %+v; want pending, attempts still 1, no retry used", got.Snapshot())
	}
	// The rerun gets a number of its own, so a handler can tell it apart.
	if again := dequeue(t, b); again.ID() != first.ID() || again.Attempts() != 2 {
		t.Fatalf("after hand-back got %s attempt %d; want %s attempt 2", again.ID(), again.Attempts(), first.ID())
	}
}

func testRetention(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: 200 * time.Millisecond})
	task := NewTask(t, 0, 0)
	enqueue(t, b, task)
	running := dequeue(t, b)
	_ = running.Succeed(time.Now())
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatal(err)
	}
	get(t, b, task.ID()) // still readable right after
	deadline := time.Now().Add(wait)
	for {
		_, err := b.Get(ctxT(t), task.ID())
		if errors.Is(err, domain.ErrTaskNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("finished task outlived its retention")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testGetUnknown(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	if _, err := b.Get(ctxT(t), uuid.Must(uuid.NewV7())); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("Get unknown: %v; want ErrTaskNotFound", err)
	}
}

func testConcurrent(t *testing.T, newBroker Factory) {
	const producers, consumers, perProducer = 4, 4, 250
	b := newBroker(t, Config{QueueSize: producers * perProducer, Retention: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	var seen sync.Map
	var count atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for count.Load() < producers*perProducer {
				dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				att, err := b.Dequeue(dctx)
				dcancel()
				task := att.Task
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					continue
				}
				if err != nil {
					t.Errorf("Dequeue: %v", err)
					return
				}
				if _, dup := seen.LoadOrStore(task.ID(), true); dup {
					t.Errorf("task %s delivered twice", task.ID())
				}
				_ = task.Succeed(time.Now())
				if err := b.Settle(ctx, 1, task); err != nil {
					t.Errorf("Settle: %v", err)
				}
				count.Add(1)
			}
		}()
	}
	var pw sync.WaitGroup
	for p := 0; p < producers; p++ {
		pw.Add(1)
		go func(p int) {
			defer pw.Done()
			for i := 0; i < perProducer; i++ {
				if err := b.Enqueue(ctx, NewTask(t, (p+i)%10, 0)); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		}(p)
	}
	pw.Wait()
	wg.Wait()
	if got := count.Load(); got != producers*perProducer {
		t.Fatalf("delivered %d tasks; want %d", got, producers*perProducer)
	}
}

// An attempt says when its task became pending: for a new task, its
// pending record's time; for a retry, no sooner than the retry was due.
// Metrics take the wait for a worker from it.
func testAttemptReady(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 4, 2)
	enqueue(t, b, task)
	pendingSince := get(t, b, task.ID()).UpdatedAt()
	att := dequeueAttempt(t, b)
	if !att.Ready.Equal(pendingSince) {
		t.Fatalf("first attempt: Ready %v, want the pending record's time %v", att.Ready, pendingSince)
	}
	if att.Task.StartedAt().Before(att.Ready) {
		t.Fatalf("started %v before it was ready %v", att.Task.StartedAt(), att.Ready)
	}
	failed := att.Task
	if err := failed.Fail(time.Now(), "boom", policy(t, 30*time.Millisecond), 0.5); err != nil {
		t.Fatal(err)
	}
	if err := b.Settle(ctxT(t), failed.Attempts(), failed); err != nil {
		t.Fatal(err)
	}
	due := failed.NextAttemptAt()
	att = dequeueAttempt(t, b)
	if att.Task.ID() != task.ID() || att.Ready.Before(due.Add(-time.Millisecond)) || att.Task.StartedAt().Before(att.Ready) {
		t.Fatalf("retry: ready %v, due %v, started %v", att.Ready, due, att.Task.StartedAt())
	}
}
