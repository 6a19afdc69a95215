package memory_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/domain"
)

// TestPendingTaskMemory holds the promise that a pending task costs at most
// 1 KiB beyond its payload: the record, the index cell, the FIFO slot and
// the type string, as a real submission makes them.
func TestPendingTaskMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100k tasks")
	}
	const n, payloadSize = 100_000, 100
	b, _ := memory.New(memory.Options{QueueSize: n, Retention: time.Hour})
	p, _ := domain.ParsePriority(3)
	ctx := context.Background()
	before := heapInUse()
	for i := 0; i < n; i++ {
		payload := []byte(`{"k":"` + strings.Repeat("x", payloadSize-8) + `"}`)
		task, err := domain.NewTask(uuid.Must(uuid.NewV7()), strings.Clone("email:send"), payload, p, 3, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Enqueue(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	after := heapInUse()
	perTask := float64(after-before)/n - payloadSize
	t.Logf("a pending task costs %.0f bytes beyond its %d-byte payload", perTask, payloadSize)
	if perTask > 1024 {
		t.Fatalf("a pending task costs %.0f bytes beyond its payload; the budget is 1024", perTask)
	}
	runtime.KeepAlive(b)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
