package workerpool_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/adapters/workerpool"
	"github.com/taskqueue/taskqueue/domain"
)

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newPool(t *testing.T, n int) *workerpool.Pool {
	p, err := workerpool.New(n, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNewRejectsZero(t *testing.T) {
	if _, err := workerpool.New(0, quiet()); err == nil {
		t.Fatal("size 0 accepted")
	}
}

func TestNeverMoreThanSize(t *testing.T) {
	const size, jobs = 3, 20
	p := newPool(t, size)
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.Go(context.Background(), func(context.Context) {
				n := running.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				<-release
				running.Add(-1)
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	// Wait for work to have started, not for slots to be taken: a slot is
	// taken before its goroutine runs.
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < size {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d workers ever ran at once", running.Load(), size)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	p.Stop(5*time.Second, time.Second)
	if got := peak.Load(); got != size {
		t.Fatalf("peak concurrency %d; want %d", got, size)
	}
}

func TestGoHonoursContextWhenFull(t *testing.T) {
	p := newPool(t, 1)
	block := make(chan struct{})
	defer close(block)
	_ = p.Go(context.Background(), func(context.Context) { <-block })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Go(ctx, func(context.Context) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Go on a full pool: %v", err)
	}
}

func TestStopWaitsForRunningWork(t *testing.T) {
	p := newPool(t, 2)
	finished := make(chan struct{})
	started := make(chan struct{})
	_ = p.Go(context.Background(), func(ctx context.Context) {
		close(started)
		time.Sleep(50 * time.Millisecond) // simulated work, not an assertion
		if ctx.Err() != nil {
			t.Error("work context cancelled before grace ran out")
		}
		close(finished)
	})
	<-started
	if n := p.Stop(5*time.Second, time.Second); n != 0 {
		t.Fatalf("Stop cancelled %d", n)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Stop returned before running work finished")
	}
	if err := p.Go(context.Background(), func(context.Context) {}); !errors.Is(err, domain.ErrShuttingDown) {
		t.Fatalf("Go after Stop: %v", err)
	}
	p.Stop(time.Second, time.Second) // idempotent
}

func TestStopCancelsAfterGrace(t *testing.T) {
	p := newPool(t, 1)
	started := make(chan struct{})
	var sawCancel atomic.Bool
	_ = p.Go(context.Background(), func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		sawCancel.Store(true)
	})
	<-started
	if n := p.Stop(20*time.Millisecond, 5*time.Second); n != 1 {
		t.Fatalf("Stop reported %d cancelled; want 1", n)
	}
	if !sawCancel.Load() {
		t.Fatal("work did not see its context cancelled")
	}
}

func TestStopBeforeAnyWork(t *testing.T) {
	p := newPool(t, 1)
	if n := p.Stop(time.Second, time.Second); n != 0 {
		t.Fatal(n)
	}
}

func TestPanicInWorkFreesTheWorker(t *testing.T) {
	p := newPool(t, 1)
	_ = p.Go(context.Background(), func(context.Context) { panic("boom") })
	done := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Go(ctx, func(context.Context) { close(done) }); err != nil {
		t.Fatalf("worker not freed after a panic: %v", err)
	}
	<-done
	p.Stop(time.Second, time.Second)
}
