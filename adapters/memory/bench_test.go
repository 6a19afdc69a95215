package memory_test

import (
	"container/heap"
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/adapters/brokertest"
	"github.com/taskqueue/taskqueue/adapters/memory"
	"github.com/taskqueue/taskqueue/domain"
)

// Eight goroutines on this 2-core machine: GOMAXPROCS × 4.
const parallelism = 4

var idCounter atomic.Uint64

// cheapTask makes a pending task with a counter id, so the benchmark
// measures the broker, not crypto/rand.
func cheapTask(b *testing.B, priority int) *domain.Task {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], idCounter.Add(1))
	id[6] = 0x70
	p, _ := domain.ParsePriority(priority)
	t, err := domain.NewTask(id, "bench", nil, p, 0, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// BenchmarkEnqueueDequeue moves tasks through the whole broker cycle —
// Enqueue, Dequeue (which starts the attempt) and Settle as succeeded —
// with `queued` tasks already waiting. One op is one task through.
func BenchmarkEnqueueDequeue(b *testing.B) {
	for _, tc := range []struct {
		name   string
		queued int
	}{{"queued=1k", 1_000}, {"queued=1M", 1_000_000}} {
		b.Run(tc.name, func(b *testing.B) {
			broker, _ := memory.New(memory.Options{QueueSize: tc.queued + 1<<20, Retention: 0})
			ctx := context.Background()
			for i := 0; i < tc.queued; i++ {
				_ = broker.Enqueue(ctx, cheapTask(b, i%10))
			}
			b.SetParallelism(parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if err := broker.Enqueue(ctx, cheapTask(b, i%10)); err != nil {
						b.Error(err)
						return
					}
					att, err := broker.Dequeue(ctx)
					task := att.Task
					if err != nil {
						b.Error(err)
						return
					}
					_ = task.Succeed(time.Time{})
					if err := broker.Settle(ctx, 1, task); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			if s := broker.Counts(); s.Pending != tc.queued {
				b.Fatalf("queue drifted: %+v", s)
			}
		})
	}
}

// BenchmarkBareHeapBaseline is the floor to compare with: a mutex around
// container/heap, pushing and popping prebuilt items, no records kept.
func BenchmarkBareHeapBaseline(b *testing.B) {
	for _, tc := range []struct {
		name   string
		queued int
	}{{"queued=1k", 1_000}, {"queued=1M", 1_000_000}} {
		b.Run(tc.name, func(b *testing.B) {
			var mu sync.Mutex
			h := &bareHeap{}
			var seq uint64
			for i := 0; i < tc.queued; i++ {
				seq++
				heap.Push(h, &bareItem{priority: i % 10, seq: seq})
			}
			b.SetParallelism(parallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					mu.Lock()
					seq++
					heap.Push(h, &bareItem{priority: i % 10, seq: seq})
					_ = heap.Pop(h)
					mu.Unlock()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

type bareItem struct {
	priority int
	seq      uint64
}

type bareHeap []*bareItem

func (h bareHeap) Len() int { return len(h) }
func (h bareHeap) Less(i, j int) bool {
	if h[i].priority != h[j].priority {
		return h[i].priority > h[j].priority
	}
	return h[i].seq < h[j].seq
}
func (h bareHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bareHeap) Push(x any)   { *h = append(*h, x.(*bareItem)) }
func (h *bareHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// BenchmarkListAt1M reads one page of 50 tasks with a million stored; see
// brokertest.BenchmarkListAt1M.
func BenchmarkListAt1M(b *testing.B) {
	broker, _ := memory.New(memory.Options{QueueSize: 1_000_001, Retention: time.Hour})
	brokertest.BenchmarkListAt1M(b, broker)
}

// BenchmarkFlowDrain drains b.N stored tasks with 8 workers, for each
// shape of types and keys; see brokertest.BenchmarkDrain.
func BenchmarkFlowDrain(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			broker := newBenchBroker(b, shape.Config(b.N+1))
			brokertest.BenchmarkDrain(b, broker, shape, 2*parallelism)
		})
	}
}

// BenchmarkFlowSubmitToStart measures the wait from Enqueue to the start
// of the attempt with 8 idle workers; see brokertest.BenchmarkSubmitToStart.
func BenchmarkFlowSubmitToStart(b *testing.B) {
	for _, shape := range brokertest.Shapes {
		b.Run(shape.String(), func(b *testing.B) {
			broker := newBenchBroker(b, shape.Config(1000))
			brokertest.BenchmarkSubmitToStart(b, broker, shape, 2*parallelism)
		})
	}
}

func newBenchBroker(b *testing.B, cfg brokertest.Config) *memory.Broker {
	broker, err := memory.New(memory.Options{QueueSize: cfg.QueueSize, Retention: cfg.Retention, Types: cfg.Types})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { broker.Close() })
	return broker
}
