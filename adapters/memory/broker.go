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
// tasks are forgotten after the retention period, past the MaxFinished
// cap, or oldest first when room is needed under the memory limit.
type Broker struct {
	limit       int
	memoryLimit int64
	retention   time.Duration
	maxFinished int
	now         func() time.Time

	mu       sync.Mutex
	slab     slab
	index    idIndex            // every task held
	running  map[uuid.UUID]slot // tasks with an attempt under way (few)
	ready    [domain.PriorityLevels]ring
	pending  int
	bytes    int64 // held tasks' taskBytes
	retrying retryHeap
	finished ring // in the order they finished, so the oldest go first
	seq      uint64
	closed   bool

	notify chan struct{} // buffer 1: "a task may be ready"
	done   chan struct{} // closed by Close
}

var _ ports.Broker = (*Broker)(nil)

// Options configure a Broker.
type Options struct {
	// QueueSize is the most tasks waiting to run (pending and retrying)
	// the broker holds; Enqueue refuses more with domain.ErrQueueFull. A
	// task that fails or is handed back is always taken, even over the
	// limit: it was counted while it ran.
	QueueSize int
	// MemoryLimit is the most bytes of tasks the broker holds (payloads,
	// types, errors and TaskOverhead per task). To make room for a new
	// task it forgets finished tasks, oldest first; if that is not enough
	// Enqueue refuses it with domain.ErrStorageFull. Zero means no limit.
	MemoryLimit int64
	// Retention is how long finished tasks can still be read.
	Retention time.Duration
	// MaxFinished caps how many finished tasks are kept, so memory stays
	// bounded however fast tasks finish; past it the oldest are forgotten
	// before their retention ends. Zero means no cap.
	MaxFinished int
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
	if opts.MaxFinished < 0 {
		return nil, fmt.Errorf("max finished must not be negative, got %d", opts.MaxFinished)
	}
	if opts.MemoryLimit < 0 {
		return nil, fmt.Errorf("memory limit must not be negative, got %d", opts.MemoryLimit)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Broker{
		limit:       opts.QueueSize,
		memoryLimit: opts.MemoryLimit,
		retention:   opts.Retention,
		maxFinished: opts.MaxFinished,
		now:         opts.Now,
		running:     make(map[uuid.UUID]slot),
		notify:      make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	b.retrying.slab = &b.slab
	return b, nil
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
	if b.pending+b.retrying.Len() >= b.limit {
		b.mu.Unlock()
		return domain.ErrQueueFull
	}
	size := taskBytes(task)
	if !b.makeRoom(size) {
		b.mu.Unlock()
		return fmt.Errorf("%w: a task of %d bytes does not fit in the memory limit of %d bytes (%d held by tasks waiting or running)",
			domain.ErrStorageFull, size, b.memoryLimit, b.bytes)
	}
	// Ids come from a UUIDv7 generator; a duplicate would replace the
	// index entry of the first.
	i := b.slab.alloc()
	e := b.slab.at(i)
	e.task, e.heapIndex, e.bytes = *task, -1, size
	b.bytes += size
	b.index.put(task.ID(), i)
	b.pushReady(i)
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
		if i, ok := b.popReady(); ok {
			e := b.slab.at(i)
			if err := e.task.Start(now); err != nil {
				b.mu.Unlock()
				return nil, fmt.Errorf("memory broker: %w", err)
			}
			b.running[e.task.ID()] = i
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
		if b.retrying.Len() > 0 {
			timer = time.NewTimer(b.retrying.due(0).Sub(now))
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
	i, ok := b.running[task.ID()]
	if !ok || b.slab.at(i).task.Attempts() != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, task.ID(), domain.ErrStaleAttempt)
	}
	status := task.Status()
	if status != domain.StatusSucceeded && status != domain.StatusFailed && status != domain.StatusRetrying && status != domain.StatusPending {
		return &domain.TransitionError{Action: "settle", From: status}
	}
	delete(b.running, task.ID())
	e := b.slab.at(i)
	e.task = *task
	size := taskBytes(task) // a longer error can grow it: never refused
	b.bytes += size - e.bytes
	e.bytes = size
	b.makeRoom(0)
	now := b.now()
	switch status {
	case domain.StatusSucceeded, domain.StatusFailed:
		e.expires = now.Add(b.retention).UnixNano()
		b.finished.pushBack(i)
		b.expire(now)
	case domain.StatusRetrying:
		e.seq = b.nextSeq()
		heap.Push(&b.retrying, i)
		b.wake()
	case domain.StatusPending: // handed back: first in line again
		b.ready[task.Priority().Level()].pushFront(i)
		b.pending++
		b.wake()
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
	i, ok := b.index.get(id)
	if !ok {
		return nil, domain.ErrTaskNotFound
	}
	out := b.slab.at(i).task
	return &out, nil
}

// Ping returns nil while the broker is open and domain.ErrShuttingDown
// after Close; see ports.Pinger.
func (b *Broker) Ping(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return domain.ErrShuttingDown
	}
	return nil
}

// Stats counts the tasks the broker holds by status, and the bytes they
// count against the memory limit.
type Stats struct {
	Pending, Running, Retrying, Finished int
	Bytes                                int64
}

// Stats returns how many tasks are in each state now.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.promoteDue(b.now())
	s := Stats{Pending: b.pending, Running: len(b.running), Retrying: b.retrying.Len(), Finished: b.finished.len(), Bytes: b.bytes}
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

// pushReady appends task i to the back of its priority's FIFO.
func (b *Broker) pushReady(i slot) {
	b.ready[b.slab.at(i).task.Priority().Level()].pushBack(i)
	b.pending++
}

// popReady removes and returns the first task of the highest non-empty
// priority, if there is one.
func (b *Broker) popReady() (slot, bool) {
	if b.pending == 0 {
		return 0, false
	}
	for level := domain.MaxPriority; level >= domain.MinPriority; level-- {
		if r := &b.ready[level]; r.len() > 0 {
			b.pending--
			return r.popFront(), true
		}
	}
	return 0, false
}

// promoteDue moves retrying tasks whose backoff is over to their FIFO.
func (b *Broker) promoteDue(now time.Time) {
	for b.retrying.Len() > 0 && !b.retrying.due(0).After(now) {
		i := heap.Pop(&b.retrying).(slot)
		_ = b.slab.at(i).task.Requeue(now) // only retrying tasks are in the heap
		b.pushReady(i)
	}
}

// expire forgets finished tasks whose retention is over, and the oldest
// ones past the MaxFinished cap. Tasks finish in order, so it stops at the
// first one still kept.
func (b *Broker) expire(now time.Time) {
	nowNano := now.UnixNano()
	for b.finished.len() > 0 {
		i := b.finished.front()
		e := b.slab.at(i)
		overCap := b.maxFinished > 0 && b.finished.len() > b.maxFinished
		if !overCap && nowNano < e.expires {
			return
		}
		b.forgetOldestFinished()
	}
}

// makeRoom forgets finished tasks, oldest first, until size more bytes fit
// under the memory limit. It reports whether they fit.
func (b *Broker) makeRoom(size int64) bool {
	if b.memoryLimit == 0 {
		return true
	}
	for b.bytes+size > b.memoryLimit && b.finished.len() > 0 {
		b.forgetOldestFinished()
	}
	return b.bytes+size <= b.memoryLimit
}

func (b *Broker) forgetOldestFinished() {
	i := b.finished.popFront()
	e := b.slab.at(i)
	b.bytes -= e.bytes
	b.index.remove(e.task.ID())
	b.slab.release(i)
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
