package memory_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/adapters/brokertest"
	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// shared holds the brokers of tests that ask for a shared queue: an
// in-process broker is shared by being the same one.
var shared sync.Map // test and queue name → ports.Broker

func newBroker(t *testing.T, cfg brokertest.Config) ports.Broker {
	if cfg.Queue != "" {
		name := t.Name() + "/" + cfg.Queue
		if b, ok := shared.Load(name); ok {
			return b.(ports.Broker)
		}
		cfg.Queue = ""
		b := newBroker(t, cfg)
		shared.Store(name, b)
		t.Cleanup(func() { shared.Delete(name) })
		return b
	}
	b, err := memory.New(memory.Options{QueueSize: cfg.QueueSize, Retention: cfg.Retention,
		Types: cfg.Types, Limits: cfg.Limits, KeyConcurrency: cfg.KeyConcurrency, Aging: cfg.Aging})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestContract(t *testing.T) { brokertest.Run(t, newBroker) }

func TestNewValidates(t *testing.T) {
	if _, err := memory.New(memory.Options{QueueSize: 0}); err == nil {
		t.Error("queue size 0 accepted")
	}
	if _, err := memory.New(memory.Options{QueueSize: 1, Retention: -1}); err == nil {
		t.Error("negative retention accepted")
	}
}

func TestCloseWakesWaitersAndCountsDropped(t *testing.T) {
	b, _ := memory.New(memory.Options{QueueSize: 10, Retention: time.Hour})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		_ = b.Enqueue(ctx, brokertest.NewTask(t, 0, 1))
	}
	att, _ := b.Dequeue(ctx)
	running := att.Task
	p, _ := domain.NewRetryPolicy(time.Hour, time.Hour)
	_ = running.Fail(time.Now(), "x", p, 0.5)
	if err := b.Settle(ctx, 1, running); err != nil {
		t.Fatal(err)
	}
	_, _ = b.Dequeue(ctx) // one running
	if s := b.Counts(); s.Pending != 1 || s.Running != 1 || s.Retrying != 1 || s.Finished != 0 {
		t.Fatalf("Stats = %+v", s)
	}
	empty, _ := memory.New(memory.Options{QueueSize: 1})
	errc := make(chan error, 1)
	go func() { _, err := empty.Dequeue(ctx); errc <- err }()
	empty.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, domain.ErrShuttingDown) {
			t.Fatalf("waiting Dequeue after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a waiting Dequeue")
	}
	if s := b.Close(); s.Pending != 1 || s.Retrying != 1 {
		t.Fatalf("Close reported %+v", s)
	}
	b.Close() // idempotent
	if err := b.Enqueue(ctx, brokertest.NewTask(t, 0, 0)); !errors.Is(err, domain.ErrShuttingDown) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
}

func TestRetentionWithInjectedClock(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _ := memory.New(memory.Options{QueueSize: 10, Retention: time.Hour, Now: func() time.Time { return now }})
	ctx := context.Background()
	task := brokertest.NewTask(t, 0, 0)
	_ = b.Enqueue(ctx, task)
	att, _ := b.Dequeue(ctx)
	running := att.Task
	_ = running.Succeed(now)
	_ = b.Settle(ctx, 1, running)
	now = now.Add(time.Hour - time.Nanosecond)
	if _, err := b.Get(ctx, task.ID()); err != nil {
		t.Fatalf("just before retention ends: %v", err)
	}
	now = now.Add(time.Nanosecond)
	if _, err := b.Get(ctx, task.ID()); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("at retention end: %v", err)
	}
	if s := b.Counts(); s.Finished != 0 {
		t.Fatalf("expired task still held: %+v", s)
	}
}

func TestRingGrowsAndShrinksInOrder(t *testing.T) {
	b, _ := memory.New(memory.Options{QueueSize: 10000, Retention: time.Hour})
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5000; i++ {
		task := brokertest.NewTask(t, 5, 0)
		ids = append(ids, task.ID().String())
		if err := b.Enqueue(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		att, err := b.Dequeue(ctx)
		got := att.Task
		if err != nil || got.ID().String() != id {
			t.Fatalf("dequeue %d: %v %v; want %s", i, got, err, id)
		}
	}
}

func TestMaxFinishedForgetsOldestFirst(t *testing.T) {
	b, _ := memory.New(memory.Options{QueueSize: 10, Retention: time.Hour, MaxFinished: 2})
	ctx := context.Background()
	var ids []uuid.UUID
	for i := 0; i < 3; i++ {
		task := brokertest.NewTask(t, 0, 0)
		ids = append(ids, task.ID())
		_ = b.Enqueue(ctx, task)
		att, _ := b.Dequeue(ctx)
		running := att.Task
		_ = running.Succeed(time.Now())
		if err := b.Settle(ctx, 1, running); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Get(ctx, ids[0]); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("oldest finished task kept past the cap: %v", err)
	}
	for _, id := range ids[1:] {
		if _, err := b.Get(ctx, id); err != nil {
			t.Fatalf("newer finished task %s: %v", id, err)
		}
	}
	if _, err := memory.New(memory.Options{QueueSize: 1, MaxFinished: -1}); err == nil {
		t.Fatal("negative cap accepted")
	}
}

func taskWithPayload(t *testing.T, size int) *domain.Task {
	p, _ := domain.ParsePriority(0)
	payload := make([]byte, size)
	copy(payload, `{"k":"`)
	for i := 6; i < size-2; i++ {
		payload[i] = 'x'
	}
	copy(payload[size-2:], `"}`)
	task, err := domain.NewTask(uuid.Must(uuid.NewV7()), "big", payload, p, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// The memory limit bounds the bytes held, whatever the task count: room is
// made by forgetting finished tasks oldest first, and a task that still
// does not fit is refused with ErrStorageFull (a 503, like a full queue).
func TestMemoryLimitEvictsFinishedOldestFirstThenRefuses(t *testing.T) {
	const payload = 10_000
	limit := int64(5 * (payload + memory.TaskOverhead + 64))
	b, _ := memory.New(memory.Options{QueueSize: 1000, Retention: time.Hour, MemoryLimit: limit})
	ctx := context.Background()
	var finished []uuid.UUID
	for i := 0; i < 3; i++ {
		task := taskWithPayload(t, payload)
		if err := b.Enqueue(ctx, task); err != nil {
			t.Fatal(err)
		}
		att, _ := b.Dequeue(ctx)
		running := att.Task
		_ = running.Succeed(time.Now())
		_ = b.Settle(ctx, 1, running)
		finished = append(finished, task.ID())
	}
	// Two more fit beside the three finished ones; the third needs room.
	for i := 0; i < 3; i++ {
		if err := b.Enqueue(ctx, taskWithPayload(t, payload)); err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if _, err := b.Get(ctx, finished[0]); !errors.Is(err, domain.ErrTaskNotFound) {
		t.Fatalf("oldest finished task kept although room was needed: %v", err)
	}
	if _, err := b.Get(ctx, finished[1]); err != nil {
		t.Fatalf("a newer finished task was forgotten before the oldest: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := b.Enqueue(ctx, taskWithPayload(t, payload)); err != nil {
			t.Fatalf("enqueue after room was made: %v", err)
		}
	}
	err := b.Enqueue(ctx, taskWithPayload(t, payload))
	if !errors.Is(err, domain.ErrStorageFull) || !strings.Contains(err.Error(), "memory limit") {
		t.Fatalf("enqueue with only waiting tasks held: %v; want ErrStorageFull", err)
	}
	if s := b.Counts(); s.Bytes > limit || s.Pending != 5 || s.Finished != 0 {
		t.Fatalf("stats %+v; want 5 pending within %d bytes", s, limit)
	}
}
