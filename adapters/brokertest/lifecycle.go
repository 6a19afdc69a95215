package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// lifecycleTests are the contract of scheduling, batches, listing,
// cancelling, retrying by hand, deleting, counters and idempotency keys.
var lifecycleTests = []struct {
	name string
	fn   func(*testing.T, Factory)
}{
	{"ScheduledTaskWaitsForItsTime", testScheduled},
	{"ScheduledTasksCountAgainstTheBound", testScheduledBound},
	{"BatchIsAllOrNothing", testBatch},
	{"ListPagesNewestFirstWithFilters", testList},
	{"CancelTakesWaitingTasksOutOfTheQueue", testCancelWaiting},
	{"CancelStopsARunningAttempt", testCancelRunning},
	{"CancelOfAFinishedTaskIsRefused", testCancelFinished},
	{"RetryByHandGivesAFreshBudget", testRetryByHand},
	{"UpdateManyRetriesDeadLetters", testUpdateMany},
	{"DeleteOnlyFinishedTasks", testDelete},
	{"StatsMatchTheLists", testStats},
	{"IdempotencyKeys", testIdempotency},
	{"ConcurrentCancelAndRetry", testConcurrentCancelRetry},
}

// NewScheduledTask returns a task scheduled for runAt.
func NewScheduledTask(t testing.TB, priority int, runAt time.Time) *domain.Task {
	t.Helper()
	task := NewTask(t, priority, 0)
	if err := task.Schedule(runAt, time.Now()); err != nil {
		t.Fatal(err)
	}
	return task
}

func newTyped(t testing.TB, typ string, maxRetries int) *domain.Task {
	t.Helper()
	p, _ := domain.ParsePriority(0)
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), typ, []byte(`{}`), p, maxRetries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func cancel(t *testing.T, b ports.Broker, id uuid.UUID) (*domain.Task, error) {
	return b.Update(ctxT(t), id, func(task *domain.Task) error { return task.Cancel(time.Now()) })
}

func testScheduled(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	runAt := time.Now().Add(300 * time.Millisecond)
	later := NewScheduledTask(t, 9, runAt)
	now := NewTask(t, 0, 0)
	enqueue(t, b, later, now)
	if got := get(t, b, later.ID()); got.Status() != domain.StatusScheduled || !got.RunAt().Equal(runAt.UTC()) {
		t.Fatalf("scheduled task: %+v", got.Snapshot())
	}
	if first := dequeue(t, b); first.ID() != now.ID() {
		t.Fatalf("got %s first; the scheduled task is not due yet", first.ID())
	}
	second := dequeue(t, b) // blocks until it is due
	if second.ID() != later.ID() || time.Now().Before(runAt) {
		t.Fatalf("scheduled task ran at %v, due %v", time.Now(), runAt)
	}
}

func testScheduledBound(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 2, Retention: time.Hour})
	enqueue(t, b, NewScheduledTask(t, 0, time.Now().Add(time.Hour)), NewTask(t, 0, 0))
	if err := b.Enqueue(ctxT(t), NewTask(t, 0, 0)); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("Enqueue with a scheduled and a pending task and a bound of 2: %v; want ErrQueueFull", err)
	}
}

func testBatch(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 5, Retention: time.Hour})
	enqueue(t, b, NewTask(t, 0, 0), NewTask(t, 0, 0))
	tooMany := []*domain.Task{NewTask(t, 1, 0), NewTask(t, 2, 0), NewTask(t, 3, 0), NewTask(t, 4, 0)}
	if err := b.Enqueue(ctxT(t), tooMany...); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("a batch of 4 with room for 3: %v; want ErrQueueFull", err)
	}
	for _, task := range tooMany {
		if _, err := b.Get(ctxT(t), task.ID()); !errors.Is(err, domain.ErrTaskNotFound) {
			t.Fatalf("a task of a refused batch was stored: %v", err)
		}
	}
	fits := []*domain.Task{NewTask(t, 5, 0), NewScheduledTask(t, 5, time.Now().Add(time.Hour)), NewTask(t, 7, 0)}
	if err := b.Enqueue(ctxT(t), fits...); err != nil {
		t.Fatalf("a batch that fits: %v", err)
	}
	if got := dequeue(t, b); got.ID() != fits[2].ID() {
		t.Fatalf("got %s; want the batch's priority-7 task", got.ID())
	}
}

// ids returns the ids of a page.
func ids(p ports.ListPage) []uuid.UUID {
	out := make([]uuid.UUID, len(p.Tasks))
	for i, t := range p.Tasks {
		out[i] = t.ID()
	}
	return out
}

// listAll pages through a filter and returns every id, failing on a
// duplicate.
func listAll(t *testing.T, b ports.Broker, f ports.ListFilter, limit int) []uuid.UUID {
	t.Helper()
	var all []uuid.UUID
	seen := map[uuid.UUID]bool{}
	after := uuid.Nil
	for pages := 0; ; pages++ {
		p, err := b.List(ctxT(t), f, after, limit)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(p.Tasks) > limit {
			t.Fatalf("page of %d; limit %d", len(p.Tasks), limit)
		}
		for _, id := range ids(p) {
			if seen[id] {
				t.Fatalf("task %s listed twice", id)
			}
			seen[id] = true
			all = append(all, id)
		}
		if p.Next == uuid.Nil {
			return all
		}
		if pages > 10000 {
			t.Fatal("List never ends")
		}
		after = p.Next
	}
}

func newestFirst(ids []uuid.UUID) []uuid.UUID {
	out := append([]uuid.UUID(nil), ids...)
	sort.Slice(out, func(i, j int) bool { return out[i].String() > out[j].String() })
	return out
}

func testList(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 100, Retention: time.Hour})
	var a, c, all []uuid.UUID
	for i := 0; i < 25; i++ {
		typ := "a"
		if i%3 == 0 {
			typ = "c"
		}
		task := newTyped(t, typ, 0)
		enqueue(t, b, task)
		all = append(all, task.ID())
		if typ == "a" {
			a = append(a, task.ID())
		} else {
			c = append(c, task.ID())
		}
	}
	// One of each kind runs, one has succeeded.
	running := dequeue(t, b)
	done := dequeue(t, b)
	_ = done.Succeed(time.Now())
	if err := b.Settle(ctxT(t), 1, done); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, b, ports.ListFilter{}, 7); fmt.Sprint(got) != fmt.Sprint(newestFirst(all)) {
		t.Fatalf("all tasks, newest first, in pages of 7:\n got  %v\n want %v", got, newestFirst(all))
	}
	if got := listAll(t, b, ports.ListFilter{Types: []string{"a"}}, 4); fmt.Sprint(got) != fmt.Sprint(newestFirst(a)) {
		t.Fatalf("type a: %v; want %v", got, newestFirst(a))
	}
	if got := listAll(t, b, ports.ListFilter{Statuses: []domain.Status{domain.StatusRunning}}, 10); len(got) != 1 || got[0] != running.ID() {
		t.Fatalf("running: %v; want [%s]", got, running.ID())
	}
	got := listAll(t, b, ports.ListFilter{Statuses: []domain.Status{domain.StatusSucceeded, domain.StatusRunning}, Types: []string{"a", "c"}}, 1)
	if len(got) != 2 {
		t.Fatalf("succeeded or running: %v", got)
	}
	if got := listAll(t, b, ports.ListFilter{Statuses: []domain.Status{domain.StatusPending}}, 50); len(got) != 23 {
		t.Fatalf("%d pending listed; want 23", len(got))
	}
	// A cursor stays valid while tasks come: a new task is newer than
	// every listed one, so it is never listed on a later page.
	first, _ := b.List(ctxT(t), ports.ListFilter{Types: []string{"c"}}, uuid.Nil, 3)
	enqueue(t, b, newTyped(t, "c", 0))
	rest := listAll(t, b, ports.ListFilter{Types: []string{"c"}}, 3)
	_ = rest
	next, _ := b.List(ctxT(t), ports.ListFilter{Types: []string{"c"}}, first.Next, 100)
	if fmt.Sprint(append(ids(first), ids(next)...)) != fmt.Sprint(newestFirst(c)) {
		t.Fatalf("pages across an insert: %v + %v; want %v", ids(first), ids(next), newestFirst(c))
	}
}

func testCancelWaiting(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	pending := NewTask(t, 9, 0)
	scheduled := NewScheduledTask(t, 9, time.Now().Add(100*time.Millisecond))
	retrying := NewTask(t, 9, 3)
	other := NewTask(t, 0, 0)
	enqueue(t, b, retrying)
	running := dequeue(t, b)
	_ = running.Fail(time.Now(), "boom", policy(t, 100*time.Millisecond), 0.5)
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatal(err)
	}
	enqueue(t, b, pending, scheduled, other)
	for _, task := range []*domain.Task{pending, scheduled, retrying} {
		got, err := cancel(t, b, task.ID())
		if err != nil || got.Status() != domain.StatusCancelled || got.FinishedAt().IsZero() || got.LastError() == "" {
			t.Fatalf("cancel %v: %v %+v", task.ID(), err, got)
		}
	}
	// Only the other task runs, even once the cancelled ones would be due.
	if got := dequeue(t, b); got.ID() != other.ID() {
		t.Fatalf("got %s; want the one task not cancelled", got.ID())
	}
	ctx, stop := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer stop()
	if att, err := b.Dequeue(ctx); err == nil {
		t.Fatalf("a cancelled task ran: %+v", att.Task.Snapshot())
	}
	// Cancelled tasks left the count of waiting tasks.
	enqueue(t, b, NewTask(t, 0, 0), NewTask(t, 0, 0), NewTask(t, 0, 0))
}

func testCancelRunning(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 0, 3)
	enqueue(t, b, task)
	att := dequeueAttempt(t, b)
	got, err := cancel(t, b, task.ID())
	if err != nil || got.Status() != domain.StatusCancelled || got.Attempts() != 1 {
		t.Fatalf("cancel while running: %v %+v", err, got)
	}
	select {
	case <-att.Cancelled:
	case <-time.After(time.Second):
		t.Fatal("the running attempt was not told within 1s")
	}
	_ = att.Task.Succeed(time.Now())
	if err := b.Settle(ctxT(t), 1, att.Task); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Fatalf("the cancelled attempt's outcome: %v; want ErrStaleAttempt", err)
	}
	if got := get(t, b, task.ID()); got.Status() != domain.StatusCancelled {
		t.Fatalf("after the late outcome: %v", got.Status())
	}
}

func testCancelFinished(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task := NewTask(t, 0, 0)
	enqueue(t, b, task)
	running := dequeue(t, b)
	_ = running.Succeed(time.Now())
	_ = b.Settle(ctxT(t), 1, running)
	var te *domain.TransitionError
	if _, err := cancel(t, b, task.ID()); !errors.As(err, &te) || te.From != domain.StatusSucceeded {
		t.Fatalf("cancel a succeeded task: %v; want a TransitionError from succeeded", err)
	}
	if _, err := cancel(t, b, uuid.Must(uuid.NewV7())); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("cancel an unknown task: %v", err)
	}
}

func testRetryByHand(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 1, Retention: time.Hour})
	task := NewTask(t, 0, 0)
	enqueue(t, b, task)
	running := dequeue(t, b)
	_ = running.Fail(time.Now(), "boom", policy(t, time.Hour), 0.5)
	if err := b.Settle(ctxT(t), 1, running); err != nil {
		t.Fatal(err)
	}
	blocker := NewTask(t, 0, 0)
	enqueue(t, b, blocker)
	retry := func(task *domain.Task) error { return task.Retry(time.Now()) }
	if _, err := b.Update(ctxT(t), task.ID(), retry); !errors.Is(err, domain.ErrQueueFull) {
		t.Fatalf("retry with the queue full: %v; want ErrQueueFull", err)
	}
	dequeue(t, b)
	got, err := b.Update(ctxT(t), task.ID(), retry)
	if err != nil || got.Status() != domain.StatusPending || got.RetriesLeft() != 0 || got.Attempts() != 1 {
		t.Fatalf("retry: %v %+v", err, got)
	}
	if again := dequeue(t, b); again.ID() != task.ID() || again.Attempts() != 2 {
		t.Fatalf("after retry: %+v", again.Snapshot())
	}
	var te *domain.TransitionError
	if _, err := b.Update(ctxT(t), task.ID(), retry); !errors.As(err, &te) {
		t.Fatalf("retry a running task: %v; want a TransitionError", err)
	}
}

func testUpdateMany(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 100, Retention: time.Hour})
	var failed []uuid.UUID
	for i := 0; i < 6; i++ {
		typ := "a"
		if i%2 == 1 {
			typ = "c"
		}
		task := newTyped(t, typ, 0)
		enqueue(t, b, task)
		running := dequeue(t, b)
		_ = running.Fail(time.Now(), "boom", policy(t, time.Hour), 0.5)
		if err := b.Settle(ctxT(t), 1, running); err != nil {
			t.Fatal(err)
		}
		failed = append(failed, task.ID())
	}
	retry := func(task *domain.Task) error { return task.Retry(time.Now()) }
	n, err := b.UpdateMany(ctxT(t), ports.ListFilter{Statuses: []domain.Status{domain.StatusFailed}, Types: []string{"c"}}, 2, retry)
	if err != nil || n != 2 {
		t.Fatalf("retry 2 of type c: %d, %v", n, err)
	}
	n, err = b.UpdateMany(ctxT(t), ports.ListFilter{Statuses: []domain.Status{domain.StatusFailed}}, 100, retry)
	if err != nil || n != 4 {
		t.Fatalf("retry the rest: %d, %v", n, err)
	}
	if got := listAll(t, b, ports.ListFilter{Statuses: []domain.Status{domain.StatusPending}}, 100); len(got) != 6 {
		t.Fatalf("%d pending after retrying all; want 6", len(got))
	}
}

func testDelete(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	task, waiting := NewTask(t, 0, 0), NewTask(t, 0, 0)
	enqueue(t, b, task)
	running := dequeue(t, b)
	_ = running.Succeed(time.Now())
	_ = b.Settle(ctxT(t), 1, running)
	enqueue(t, b, waiting)
	check := func(t *domain.Task) error { return t.CheckDelete() }
	var te *domain.TransitionError
	if err := b.Delete(ctxT(t), waiting.ID(), check); !errors.As(err, &te) {
		t.Fatalf("delete a pending task: %v; want a TransitionError", err)
	}
	if err := b.Delete(ctxT(t), task.ID(), check); err != nil {
		t.Fatalf("delete a succeeded task: %v", err)
	}
	if _, err := b.Get(ctxT(t), task.ID()); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if got := listAll(t, b, ports.ListFilter{}, 10); len(got) != 1 || got[0] != waiting.ID() {
		t.Fatalf("listed after delete: %v", got)
	}
	if err := b.Delete(ctxT(t), task.ID(), check); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func count(st ports.Stats, typ string, s domain.Status) int64 { return st.ByType[typ][s] }

func testStats(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 100, Retention: time.Hour})
	before := time.Now()
	for i := 0; i < 4; i++ {
		enqueue(t, b, newTyped(t, "a", 0))
	}
	enqueue(t, b, newTyped(t, "c", 0))
	enqueue(t, b, NewScheduledTask(t, 0, time.Now().Add(time.Hour)))
	running := dequeue(t, b) // the oldest "a"
	st, err := b.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if count(st, "a", domain.StatusPending) != 3 || count(st, "a", domain.StatusRunning) != 1 || count(st, "c", domain.StatusPending) != 1 || count(st, "test", domain.StatusScheduled) != 1 {
		t.Fatalf("stats %+v", st.ByType)
	}
	if st.OldestPending.Before(before.Add(-time.Second)) || st.OldestPending.After(time.Now()) {
		t.Fatalf("oldest pending %v", st.OldestPending)
	}
	// Per type: "a" has waited since its first submission (the oldest "a"
	// runs; the next is second oldest), "c" since its only one; "test" has
	// none pending.
	byType := st.OldestPendingByType
	if len(byType) != 2 || !byType["a"].Equal(st.OldestPending) || !byType["c"].After(byType["a"]) || byType["c"].After(time.Now()) {
		t.Fatalf("oldest pending by type %v (overall %v)", byType, st.OldestPending)
	}
	_ = running.Succeed(time.Now())
	_ = b.Settle(ctxT(t), 1, running)
	st, _ = b.Stats(ctxT(t))
	for _, typ := range []string{"a", "c", "test"} {
		for _, s := range domain.Statuses() {
			listed := listAll(t, b, ports.ListFilter{Statuses: []domain.Status{s}, Types: []string{typ}}, 100)
			if int64(len(listed)) != count(st, typ, s) {
				t.Fatalf("%s %s: stats say %d, list finds %d", typ, s, count(st, typ, s), len(listed))
			}
		}
	}
}

func testIdempotency(t *testing.T, newBroker Factory) {
	b := newBroker(t, Config{QueueSize: 10, Retention: time.Hour})
	key := "k-" + uuid.NewString()
	rec, claimed, err := b.Reserve(ctxT(t), key, "fp1", time.Minute)
	if err != nil || !claimed {
		t.Fatalf("first reserve: %v %v", claimed, err)
	}
	rec, claimed, _ = b.Reserve(ctxT(t), key, "fp2", time.Minute)
	if claimed || rec.Fingerprint != "fp1" || rec.Done {
		t.Fatalf("reserve while in flight: %v %+v", claimed, rec)
	}
	if err := b.Complete(ctxT(t), key, ports.IdempotencyRecord{Fingerprint: "fp1", Done: true, Response: []byte("resp")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	rec, claimed, _ = b.Reserve(ctxT(t), key, "fp1", time.Minute)
	if claimed || !rec.Done || string(rec.Response) != "resp" {
		t.Fatalf("reserve after complete: %v %+v", claimed, rec)
	}
	// A released key is free at once; a hold runs out by itself.
	other := "k-" + uuid.NewString()
	_, _, _ = b.Reserve(ctxT(t), other, "fp", time.Minute)
	_ = b.Release(ctxT(t), other)
	if _, claimed, _ := b.Reserve(ctxT(t), other, "fp", 200*time.Millisecond); !claimed {
		t.Fatal("a released key was not free")
	}
	time.Sleep(300 * time.Millisecond) // past the hold; not an assertion
	if _, claimed, _ := b.Reserve(ctxT(t), other, "fp", time.Minute); !claimed {
		t.Fatal("a hold did not run out")
	}
	// Of many reserving one key at once, exactly one claims it.
	race := "k-" + uuid.NewString()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, claimed, err := b.Reserve(context.Background(), race, "fp", time.Minute); err == nil && claimed {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent reservations of one key won; want 1", wins.Load())
	}
}

// testConcurrentCancelRetry has 100 goroutines cancel and retry the same
// tasks while workers run them. Every task ends in exactly one terminal
// state, the counters match the lists, and no attempt starts after a
// cancel returned unless a retry came after it.
func testConcurrentCancelRetry(t *testing.T, newBroker Factory) {
	const tasks = 20
	b := newBroker(t, Config{QueueSize: 1000, Retention: time.Hour})
	var all []uuid.UUID
	for i := 0; i < tasks; i++ {
		task := NewTask(t, i%10, 2)
		enqueue(t, b, task)
		all = append(all, task.ID())
	}
	// cancelledAt[id] is the attempt count a cancel returned, until a retry
	// lands. Changes to one task and the workers' checks take that task's
	// lock, so the record is never behind the broker.
	type record struct {
		sync.Mutex
		cancelledAt int // -1: no cancel since the last retry
	}
	records := make(map[uuid.UUID]*record, tasks) // read-only once built
	for _, id := range all {
		records[id] = &record{cancelledAt: -1}
	}
	ctx, stop := context.WithCancel(context.Background())
	var workers, changers sync.WaitGroup
	for w := 0; w < 4; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
				att, err := b.Dequeue(dctx)
				dcancel()
				if err != nil {
					continue
				}
				id := att.Task.ID()
				r := records[id]
				r.Lock()
				if n := r.cancelledAt; n >= 0 && att.Task.Attempts() > n {
					t.Errorf("task %s started attempt %d after a cancel at attempt %d returned", id, att.Task.Attempts(), n)
				}
				r.Unlock()
				if rand.IntN(2) == 0 {
					_ = att.Task.Succeed(time.Now())
				} else {
					_ = att.Task.Fail(time.Now(), "boom", policy(t, time.Millisecond), 0.5)
				}
				if err := b.Settle(context.Background(), att.Task.Attempts(), att.Task); err != nil && !errors.Is(err, domain.ErrStaleAttempt) {
					t.Errorf("Settle: %v", err)
				}
			}
		}()
	}
	for g := 0; g < 100; g++ {
		changers.Add(1)
		go func() {
			defer changers.Done()
			for i := 0; i < 20; i++ {
				id := all[rand.IntN(len(all))]
				r := records[id]
				r.Lock()
				if rand.IntN(2) == 0 {
					if got, err := b.Update(context.Background(), id, func(task *domain.Task) error { return task.Cancel(time.Now()) }); err == nil {
						r.cancelledAt = got.Attempts()
					}
				} else if _, err := b.Update(context.Background(), id, func(task *domain.Task) error { return task.Retry(time.Now()) }); err == nil {
					r.cancelledAt = -1
				}
				r.Unlock()
			}
		}()
	}
	changers.Wait()
	// End every task: cancel what is still not finished, and let the
	// workers finish what runs.
	for _, id := range all {
		_, _ = b.Update(context.Background(), id, func(task *domain.Task) error { return task.Cancel(time.Now()) })
	}
	stop()
	workers.Wait()
	st, err := b.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range all {
		got := get(t, b, id)
		if !got.Status().Finished() {
			t.Fatalf("task %s ended %v; want a terminal status", id, got.Status())
		}
	}
	total := int64(0)
	for _, s := range domain.Statuses() {
		n := count(st, "test", s)
		if !s.Finished() && n != 0 {
			t.Fatalf("stats count %d %s tasks after every task finished", n, s)
		}
		total += n
	}
	if total != tasks {
		t.Fatalf("stats count %d tasks; want %d", total, tasks)
	}
}
