// Package workerpool is a ports.Executor that runs work on goroutines,
// never more at once than its size.
package workerpool

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Pool bounds concurrency with a semaphore channel. Work runs under one
// base context that Stop cancels only when its grace period runs out.
type Pool struct {
	sem    chan struct{}
	base   context.Context
	cancel context.CancelFunc
	log    logrus.FieldLogger

	mu       sync.Mutex
	stopping bool
	stopped  chan struct{} // closed when Stop begins
	wg       sync.WaitGroup
}

var _ ports.Executor = (*Pool)(nil)

// New returns a pool of the given size, or an error if size < 1.
func New(size int, log logrus.FieldLogger) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("worker count must be at least 1, got %d", size)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Pool{
		sem:     make(chan struct{}, size),
		base:    base,
		cancel:  cancel,
		log:     log,
		stopped: make(chan struct{}),
	}, nil
}

// Go waits for a free worker and starts work on it; see ports.Executor.
func (p *Pool) Go(ctx context.Context, work func(ctx context.Context)) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stopped:
		return domain.ErrShuttingDown
	}
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		<-p.sem
		return domain.ErrShuttingDown
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer func() {
			if v := recover(); v != nil { // the application recovers handlers; this guards the rest
				p.log.WithField("stack", string(debug.Stack())).Errorf("worker panicked: %v", v)
			}
			<-p.sem
			p.wg.Done()
		}()
		work(p.base)
	}()
	return nil
}

// Busy returns how many workers are running work now.
func (p *Pool) Busy() int { return len(p.sem) }

// Stop refuses new work and waits up to grace for running work to end.
// Then it cancels the context of the work still running and waits for it
// to return, at most cancelWait more. It returns how many were still
// running when grace ran out. Calling Stop again, or before any work,
// is safe.
func (p *Pool) Stop(grace, cancelWait time.Duration) (cancelled int) {
	p.mu.Lock()
	if !p.stopping {
		p.stopping = true
		close(p.stopped)
	}
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		p.cancel()
		return 0
	case <-timer.C:
	}
	cancelled = p.Busy()
	p.cancel()
	select {
	case <-done:
	case <-time.After(cancelWait):
		p.log.WithField("still_running", p.Busy()).Error("work ignored cancellation; leaving it behind")
	}
	return cancelled
}
