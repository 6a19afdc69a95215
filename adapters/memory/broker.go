// Package memory is a broker kept in the process's memory: fast, bounded,
// and gone when the process exits.
package memory

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Broker is an in-memory ports.Broker. Pending tasks wait in one FIFO per
// priority (priorities are a closed set of ten), so taking the next task
// costs the same at any queue length; retrying tasks wait in a heap by due
// time and join the back of their priority's FIFO when due. Finished
// tasks are forgotten after the retention period.
type Broker struct {
	limit     int
	retention time.Duration
	now       func() time.Time

	mu       sync.Mutex
	tasks    map[uuid.UUID]*entry
	ready    [domain.PriorityLevels]ring
	pending  int
	delayed  delayedHeap
	finished ring // in the order they finished, so oldest expire first
	seq      uint64
	closed   bool

	notify chan struct{} // buffer 1: "a task may be ready"
	done   chan struct{} // closed by Close
}

type entry struct {
	task    domain.Task
	seq     uint64
	index   int       // in delayed, -1 elsewhere
	expires time.Time // set once finished
}

var _ ports.Broker = (*Broker)(nil)

// Options configure a Broker.
type Options struct {
	// QueueSize is the most pending tasks the broker holds; Enqueue
	// refuses more. Tasks coming back from a retry backoff are always
	// taken, even over the limit.
	QueueSize int
	// Retention is how long finished tasks can still be read.
	Retention time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// New returns an empty broker, or an error if the options are invalid.
func New(opts Options) (*Broker, error) {
	if opts.QueueSize < 1 {
		return nil, fmt.Errorf("queue size must be at least 1, got %d", opts.QueueSize)
	}
	if opts.Retention < 0 {
		return nil, fmt.Errorf("retention must not be negative, got %s", opts.Retention)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Broker{
		limit:     opts.QueueSize,
		retention: opts.Retention,
		now:       opts.Now,
		tasks:     make(map[uuid.UUID]*entry),
		notify:    make(chan struct{}, 1),
		done:      make(chan struct{}),
	}, nil
}

// Enqueue stores a new pending task; see ports.TaskQueue.
func (b *Broker) Enqueue(_ context.Context, task *domain.Task) error {
	if task.Status() != domain.StatusPending {
		return &domain.TransitionError{Action: "enqueue", From: task.Status()}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return domain.ErrShuttingDown
	}
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	if b.pending >= b.limit {
		b.mu.Unlock()
		return domain.ErrQueueFull
	}
	if _, dup := b.tasks[task.ID()]; dup {
		b.mu.Unlock()
		return fmt.Errorf("task %s is already stored: %w", task.ID(), domain.ErrInvalidInput)
	}
	e := &entry{task: *task, index: -1}
	b.tasks[task.ID()] = e
	b.pushReady(e)
	b.mu.Unlock()
	b.wake()
	return nil
}

// Dequeue waits for the next pending task and starts its attempt; see
// ports.TaskQueue.
func (b *Broker) Dequeue(ctx context.Context) (*domain.Task, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, domain.ErrShuttingDown
		}
		now := b.now()
		b.promoteDue(now)
		if e := b.popReady(); e != nil {
			if err := e.task.Start(now); err != nil {
				b.mu.Unlock()
				return nil, fmt.Errorf("memory broker: %w", err)
			}
			out := e.task
			more := b.pending > 0
			b.mu.Unlock()
			if more {
				b.wake() // pass the signal on to the next waiting worker
			}
			return &out, nil
		}
		var due <-chan time.Time
		var timer *time.Timer
		if len(b.delayed) > 0 {
			timer = time.NewTimer(b.delayed[0].task.NextAttemptAt().Sub(now))
			due = timer.C
		}
		b.mu.Unlock()

		select {
		case <-b.notify:
		case <-due:
		case <-b.done:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// Settle stores the outcome of a running attempt; see ports.TaskQueue.
func (b *Broker) Settle(_ context.Context, attempt int, task *domain.Task) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.tasks[task.ID()]
	if !ok || e.task.Status() != domain.StatusRunning || e.task.Attempts() != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, task.ID(), domain.ErrStaleAttempt)
	}
	now := b.now()
	e.task = *task
	switch task.Status() {
	case domain.StatusSucceeded, domain.StatusFailed:
		e.expires = now.Add(b.retention)
		b.finished.pushBack(e)
		b.expire(now)
	case domain.StatusRetrying:
		e.seq = b.nextSeq()
		heap.Push(&b.delayed, e)
		b.wake()
	case domain.StatusPending: // handed back: first in line again
		b.ready[task.Priority().Level()].pushFront(e)
		b.pending++
		b.wake()
	default:
		return &domain.TransitionError{Action: "settle", From: task.Status()}
	}
	return nil
}

// Get returns a copy of the task; see ports.TaskReader.
func (b *Broker) Get(_ context.Context, id uuid.UUID) (*domain.Task, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	e, ok := b.tasks[id]
	if !ok || !e.expires.IsZero() && !now.Before(e.expires) {
		return nil, domain.ErrTaskNotFound
	}
	out := e.task
	return &out, nil
}

// Stats counts the tasks the broker holds by status.
type Stats struct {
	Pending, Running, Retrying, Finished int
}

// Stats returns how many tasks are in each state now.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.promoteDue(b.now())
	s := Stats{Pending: b.pending, Retrying: len(b.delayed), Finished: b.finished.len()}
	s.Running = len(b.tasks) - s.Pending - s.Retrying - s.Finished
	return s
}

// Close stops the broker: waiting and later Dequeue and Enqueue calls get
// domain.ErrShuttingDown. It returns what was still held, which is
// dropped. Calling it again does nothing and returns the same counts.
func (b *Broker) Close() Stats {
	s := b.Stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	return s
}

// pushReady appends e to the back of its priority's FIFO.
func (b *Broker) pushReady(e *entry) {
	b.ready[e.task.Priority().Level()].pushBack(e)
	b.pending++
}

// popReady removes and returns the first task of the highest non-empty
// priority, or nil.
func (b *Broker) popReady() *entry {
	if b.pending == 0 {
		return nil
	}
	for level := domain.MaxPriority; level >= domain.MinPriority; level-- {
		if r := &b.ready[level]; r.len() > 0 {
			b.pending--
			return r.popFront()
		}
	}
	return nil
}

// promoteDue moves retrying tasks whose backoff is over to their FIFO.
func (b *Broker) promoteDue(now time.Time) {
	for len(b.delayed) > 0 && !b.delayed[0].task.NextAttemptAt().After(now) {
		e := heap.Pop(&b.delayed).(*entry)
		_ = e.task.Requeue(now) // only retrying tasks are in delayed
		b.pushReady(e)
	}
}

// expire forgets finished tasks whose retention is over. Entries finish in
// order, so it stops at the first one still kept.
func (b *Broker) expire(now time.Time) {
	for b.finished.len() > 0 && !now.Before(b.finished.front().expires) {
		e := b.finished.popFront()
		delete(b.tasks, e.task.ID())
	}
}

func (b *Broker) nextSeq() uint64 {
	b.seq++
	return b.seq
}

func (b *Broker) wake() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}
