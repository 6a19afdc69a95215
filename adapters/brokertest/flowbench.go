package brokertest

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Shape is how a flow-control benchmark spreads its tasks: over how many
// types (the broker runs them all) and fairness keys (0: no keys).
type Shape struct {
	Types, Keys int
}

func (s Shape) String() string { return fmt.Sprintf("types=%d/keys=%d", s.Types, s.Keys) }

// Shapes are the shapes the flow-control benchmarks compare: one type
// without keys (the case before flow control), 20 types, 1,000 keys, and
// both.
var Shapes = []Shape{{1, 0}, {20, 0}, {1, 1000}, {20, 1000}}

// Config returns a broker config that runs every type of the shape.
func (s Shape) Config(queueSize int) Config {
	types := make([]string, s.Types)
	for i := range types {
		types[i] = fmt.Sprintf("t%02d", i)
	}
	return Config{QueueSize: queueSize, Retention: 0, Types: types}
}

var benchID atomic.Uint64

// Task returns the i-th task of the shape: types, keys and priorities in
// turn, with a counter id (so the benchmark measures the broker, not
// crypto/rand).
func (s Shape) Task(tb testing.TB, i int) *domain.Task {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], benchID.Add(1))
	binary.BigEndian.PutUint64(id[:8], uint64(time.Now().UnixMilli())<<16)
	id[6] = 0x70
	p, _ := domain.ParsePriority(i % 10)
	t, err := domain.NewTask(id, fmt.Sprintf("t%02d", i%s.Types), nil, p, 0, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	if s.Keys > 0 {
		if err := t.SetKey(fmt.Sprintf("k%04d", (i/s.Types)%s.Keys)); err != nil {
			tb.Fatal(err)
		}
	}
	return t
}

// BenchmarkDrain stores b.N tasks of the shape (in batches of 1,000),
// then workers take and settle them until none is left. It reports the
// drain rate in tasks/s.
func BenchmarkDrain(bm *testing.B, b ports.Broker, shape Shape, workers int) {
	ctx := context.Background()
	batch := make([]*domain.Task, 0, 1000)
	for i := 0; i < bm.N; i++ {
		batch = append(batch, shape.Task(bm, i))
		if len(batch) == cap(batch) || i == bm.N-1 {
			if err := b.Enqueue(ctx, batch...); err != nil {
				bm.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	var left atomic.Int64
	left.Store(int64(bm.N))
	drained, done := context.WithCancel(ctx)
	defer done()
	var wg sync.WaitGroup
	bm.ResetTimer()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				att, err := b.Dequeue(drained)
				if err != nil {
					return
				}
				_ = att.Task.Succeed(time.Now())
				if err := b.Settle(ctx, att.Task.Attempts(), att.Task); err != nil {
					bm.Error(err)
				}
				if left.Add(-1) == 0 {
					done()
				}
			}
		}()
	}
	wg.Wait()
	bm.StopTimer()
	if n := left.Load(); n != 0 {
		bm.Fatalf("%d tasks were not drained", n)
	}
	bm.ReportMetric(float64(bm.N)/bm.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkSubmitToStart measures how long a task waits from its Enqueue
// to the Dequeue that starts it, with workers idle and waiting: one task
// at a time, the next submitted once the last has started. It reports
// the median and the 99th percentile.
func BenchmarkSubmitToStart(bm *testing.B, b ports.Broker, shape Shape, workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan time.Time, 1)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				att, err := b.Dequeue(ctx)
				if err != nil {
					return
				}
				started <- time.Now()
				_ = att.Task.Succeed(time.Now())
				_ = b.Settle(context.Background(), att.Task.Attempts(), att.Task)
			}
		}()
	}
	waits := make([]time.Duration, 0, bm.N)
	bm.ResetTimer()
	for i := 0; i < bm.N; i++ {
		task := shape.Task(bm, i)
		at := time.Now()
		if err := b.Enqueue(ctx, task); err != nil {
			bm.Fatal(err)
		}
		waits = append(waits, (<-started).Sub(at))
	}
	bm.StopTimer()
	cancel()
	wg.Wait()
	slices.Sort(waits)
	bm.ReportMetric(float64(waits[len(waits)/2].Nanoseconds())/1e3, "p50-µs")
	bm.ReportMetric(float64(waits[len(waits)*99/100].Nanoseconds())/1e3, "p99-µs")
}
