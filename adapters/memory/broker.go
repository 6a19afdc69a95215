// Package memory is a broker kept in the process's memory: fast, bounded,
// and gone when the process exits.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// Broker is an in-memory ports.Broker. Pending tasks wait in one FIFO per
// priority (priorities are a closed set of ten), so taking the next task
// costs the same at any queue length; scheduled and retrying tasks wait in
// a heap by due time and join the back of their priority's FIFO when due.
// Finished tasks are forgotten after their retention (succeeded and dead
// letters each have their own), past their cap, or oldest first when room
// is needed under the memory limit. Every task but a running one is also
// in an ordered index per (status, type), for listing, and counted.
type Broker struct {
	opts Options
	now  func() time.Time

	mu       sync.Mutex
	slab     slab
	index    idIndex // every task held
	running  map[uuid.UUID]running
	types    map[string]*typeQueue // the ready structure; see ready.go
	typeList []*typeQueue          // the same, to range over in order
	pending  int                   // pending tasks of every type
	waiting  waitHeap              // scheduled and retrying, by due time
	finished [2]ring               // succeeded; failed and cancelled (dead letters)
	lists    lists
	idem     idemKeys
	// keyRunning counts the running attempts of each fairness key;
	// blocked lists where the keys at their limit wait.
	keyRunning map[string]int
	blocked    map[string][]blockedAt
	bytes      int64 // held tasks' taskBytes
	seq        uint64
	closed     bool

	notify chan struct{} // buffer 1: "a task may be ready"
	done   chan struct{} // closed by Close
}

// running is an attempt under way.
type running struct {
	slot      slot
	cancelled chan struct{} // closed if the task leaves running meanwhile
}

const (
	succeededRing = 0
	deadRing      = 1
)

var _ ports.Broker = (*Broker)(nil)

// Options configure a Broker.
type Options struct {
	// QueueSize is the most tasks waiting to run (scheduled, pending and
	// retrying) the broker holds; Enqueue refuses more with
	// domain.ErrQueueFull. A task that fails or is handed back is always
	// taken, even over the limit: it was counted while it ran.
	QueueSize int
	// MemoryLimit is the most bytes of tasks the broker holds (payloads,
	// types, errors, results and TaskOverhead per task). To make room for
	// new tasks it forgets finished tasks, oldest first; if that is not
	// enough Enqueue refuses them with domain.ErrStorageFull. Zero means
	// no limit.
	MemoryLimit int64
	// Retention is how long succeeded tasks can still be read, and
	// MaxFinished how many are kept (past it the oldest are forgotten
	// early; zero means no cap).
	Retention   time.Duration
	MaxFinished int
	// FailedRetention and MaxFailed are the same for dead letters (failed
	// and cancelled tasks), so a flood of successes does not push them
	// out. FailedRetention defaults to Retention.
	FailedRetention time.Duration
	MaxFailed       int
	// MaxIdempotencyKeys bounds the idempotency keys kept;
	// DefaultMaxIdempotencyKeys when zero.
	MaxIdempotencyKeys int
	// Types are the task types whose attempts this broker starts (the
	// instance has their handlers); nil means every type. Tasks of other
	// types wait.
	Types []string
	// Limits bound each type's attempts (concurrency and rate).
	Limits map[string]domain.TypeLimits
	// KeyConcurrency caps the running attempts of any one fairness key;
	// zero means no cap.
	KeyConcurrency int
	// Aging makes a pending task count one priority level higher per
	// Aging waited (see domain.EffectiveLevel); zero is strict order.
	Aging time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// New returns an empty broker, or an error if the options are invalid.
func New(opts Options) (*Broker, error) {
	switch {
	case opts.QueueSize < 1:
		return nil, fmt.Errorf("queue size must be at least 1, got %d", opts.QueueSize)
	case opts.Retention < 0 || opts.FailedRetention < 0:
		return nil, fmt.Errorf("retention must not be negative, got %s and %s", opts.Retention, opts.FailedRetention)
	case opts.MaxFinished < 0 || opts.MaxFailed < 0:
		return nil, fmt.Errorf("max finished must not be negative, got %d and %d", opts.MaxFinished, opts.MaxFailed)
	case opts.MemoryLimit < 0:
		return nil, fmt.Errorf("memory limit must not be negative, got %d", opts.MemoryLimit)
	}
	if opts.FailedRetention == 0 {
		opts.FailedRetention = opts.Retention
	}
	if opts.MaxIdempotencyKeys <= 0 {
		opts.MaxIdempotencyKeys = DefaultMaxIdempotencyKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Broker{
		opts:       opts,
		now:        opts.Now,
		running:    make(map[uuid.UUID]running),
		types:      make(map[string]*typeQueue),
		keyRunning: make(map[string]int),
		blocked:    make(map[string][]blockedAt),
		lists:      newLists(),
		idem:       newIdemKeys(opts.MaxIdempotencyKeys),
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	b.waiting.slab = &b.slab
	return b, nil
}

// Enqueue stores new tasks, all or none; see ports.TaskQueue.
func (b *Broker) Enqueue(_ context.Context, tasks ...*domain.Task) error {
	size := int64(0)
	for _, t := range tasks {
		if s := t.Status(); s != domain.StatusPending && s != domain.StatusScheduled {
			return &domain.TransitionError{Action: "enqueue", From: s}
		}
		size += taskBytes(t)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return domain.ErrShuttingDown
	}
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	if b.waitingCount()+len(tasks) > b.opts.QueueSize {
		b.mu.Unlock()
		return domain.ErrQueueFull
	}
	if !b.makeRoom(size) {
		b.mu.Unlock()
		return fmt.Errorf("%w: %d bytes of tasks do not fit in the memory limit of %d bytes (%d held by tasks waiting or running)",
			domain.ErrStorageFull, size, b.opts.MemoryLimit, b.bytes)
	}
	for _, t := range tasks {
		// Ids come from a UUIDv7 generator; a duplicate would replace the
		// index entry of the first.
		i := b.slab.alloc()
		e := b.slab.at(i)
		e.task, e.heapIndex, e.bytes, e.tq = *t, -1, taskBytes(t), b.typeQueue(t.Type())
		b.bytes += e.bytes
		b.index.put(t.ID(), i)
		b.place(i, false, now)
	}
	b.mu.Unlock()
	b.wake()
	return nil
}

// Dequeue waits for the next pending task and starts its attempt; see
// ports.TaskQueue.
func (b *Broker) Dequeue(ctx context.Context) (ports.Attempt, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return ports.Attempt{}, domain.ErrShuttingDown
		}
		now := b.now()
		b.promoteDue(now)
		i, ok, rateWait := b.popNext(now)
		if ok {
			e := b.slab.at(i)
			b.lists.remove(e.tq.lists, &e.task)
			ready := e.task.UpdatedAt()
			if err := e.task.Start(now); err != nil {
				b.lists.add(e.tq.lists, &e.task)
				b.mu.Unlock()
				return ports.Attempt{}, fmt.Errorf("memory broker: %w", err)
			}
			r := running{slot: i, cancelled: make(chan struct{})}
			b.running[e.task.ID()] = r
			if b.opts.KeyConcurrency > 0 && e.task.Key() != "" {
				b.keyRunning[e.task.Key()]++
			}
			b.lists.add(e.tq.lists, &e.task)
			out := e.task
			more := b.pending > 0
			b.mu.Unlock()
			if more {
				b.wake() // pass the signal on to the next waiting worker
			}
			return ports.Attempt{Task: &out, Cancelled: r.cancelled, Ready: ready}, nil
		}
		var due <-chan time.Time
		var timer *time.Timer
		wait := rateWait
		if b.waiting.Len() > 0 {
			if d := b.waiting.due(0).Sub(now); wait == 0 || d < wait {
				wait = max(d, 0)
			}
		}
		if wait > 0 || b.waiting.Len() > 0 {
			timer = time.NewTimer(wait)
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
			return ports.Attempt{}, err
		}
	}
}

// Settle stores the outcome of a running attempt; see ports.TaskQueue.
func (b *Broker) Settle(_ context.Context, attempt int, task *domain.Task) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.running[task.ID()]
	if !ok || b.slab.at(r.slot).task.Attempts() != attempt {
		return fmt.Errorf("settle attempt %d of task %s: %w", attempt, task.ID(), domain.ErrStaleAttempt)
	}
	switch task.Status() {
	case domain.StatusSucceeded, domain.StatusFailed, domain.StatusRetrying, domain.StatusPending:
	default:
		return &domain.TransitionError{Action: "settle", From: task.Status()}
	}
	now := b.now()
	b.unplace(r.slot)
	b.store(r.slot, task)
	b.place(r.slot, task.Status() == domain.StatusPending, now) // handed back: first in line again
	b.makeRoom(0)
	b.expire(now)
	b.wake() // a concurrency slot is free again
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

// List returns a page of tasks, newest first; see ports.TaskReader.
func (b *Broker) List(_ context.Context, filter ports.ListFilter, after uuid.UUID, limit int) (ports.ListPage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	var runningIDs []uuid.UUID
	for id, r := range b.running {
		if len(filter.Types) == 0 || slices.Contains(filter.Types, b.slab.at(r.slot).task.Type()) {
			runningIDs = append(runningIDs, id)
		}
	}
	ids, more := page(b.lists.sources(filter.Statuses, filter.Types, runningIDs), after, limit)
	out := ports.ListPage{Tasks: make([]*domain.Task, 0, len(ids))}
	for _, id := range ids {
		if i, ok := b.index.get(id); ok {
			t := b.slab.at(i).task
			out.Tasks = append(out.Tasks, &t)
		}
	}
	if more && len(ids) > 0 {
		out.Next = ids[len(ids)-1]
	}
	return out, nil
}

// Update applies change to a task atomically; see ports.TaskAdmin.
func (b *Broker) Update(_ context.Context, id uuid.UUID, change func(*domain.Task) error) (*domain.Task, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	out, err := b.update(id, change, now)
	if err != nil {
		return nil, err
	}
	if out.Status() == domain.StatusPending {
		b.wake()
	}
	return out, nil
}

// update is Update under the lock.
func (b *Broker) update(id uuid.UUID, change func(*domain.Task) error, now time.Time) (*domain.Task, error) {
	i, ok := b.index.get(id)
	if !ok {
		return nil, domain.ErrTaskNotFound
	}
	e := b.slab.at(i)
	next := e.task
	if err := change(&next); err != nil {
		return nil, err
	}
	if next.Status().Waiting() && !e.task.Status().Waiting() && b.waitingCount() >= b.opts.QueueSize {
		return nil, domain.ErrQueueFull
	}
	r := b.unplace(i)
	if r.cancelled != nil {
		close(r.cancelled) // the attempt no longer counts: stop it
	}
	b.store(i, &next)
	b.place(i, false, now)
	b.makeRoom(0)
	out := next
	return &out, nil
}

// UpdateMany applies change to matching tasks; see ports.TaskAdmin.
func (b *Broker) UpdateMany(_ context.Context, filter ports.ListFilter, limit int, change func(*domain.Task) error) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	changed := 0
	// The ids are gathered first: changing a task moves it between the
	// indexes being read.
	ids, _ := page(b.lists.sources(filter.Statuses, filter.Types, nil), uuid.Nil, limit)
	for _, id := range ids {
		switch _, err := b.update(id, change, now); {
		case err == nil:
			changed++
		case errors.Is(err, domain.ErrQueueFull):
			return changed, err
		}
	}
	if changed > 0 {
		b.wake()
	}
	return changed, nil
}

// Delete removes a task if check accepts it; see ports.TaskAdmin.
func (b *Broker) Delete(_ context.Context, id uuid.UUID, check func(*domain.Task) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expire(b.now())
	i, ok := b.index.get(id)
	if !ok {
		return domain.ErrTaskNotFound
	}
	if err := check(&b.slab.at(i).task); err != nil {
		return err
	}
	b.unplace(i)
	b.forget(i)
	return nil
}

// Stats returns the counters; see ports.StatsReader.
func (b *Broker) Stats(context.Context) (ports.Stats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.promoteDue(now)
	b.expire(now)
	st := ports.Stats{ByType: make(map[string]map[domain.Status]int64, len(b.lists.byType))}
	for typ, tl := range b.lists.byType {
		m := map[domain.Status]int64{}
		for s, n := range tl.counts {
			if n > 0 {
				m[domain.Status(s)] = n
			}
		}
		if len(m) > 0 {
			st.ByType[typ] = m
		}
	}
	for _, tq := range b.types {
		for level := range tq.levels {
			if _, i, ok := b.front(tq, level); ok {
				st.NotePending(tq.name, b.slab.at(i).task.UpdatedAt())
			}
		}
	}
	return st, nil
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

// Counts says how many tasks the broker holds in each state, and the
// bytes they count against the memory limit.
type Counts struct {
	Scheduled, Pending, Running, Retrying, Finished int
	Bytes                                           int64
}

// Counts returns how many tasks are in each state now.
func (b *Broker) Counts() Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.promoteDue(b.now())
	c := Counts{Pending: b.pending, Running: len(b.running), Finished: b.finished[0].live + b.finished[1].live, Bytes: b.bytes}
	for _, i := range b.waiting.items {
		if b.slab.at(i).task.Status() == domain.StatusScheduled {
			c.Scheduled++
		} else {
			c.Retrying++
		}
	}
	return c
}

// Close stops the broker: waiting and later Dequeue and Enqueue calls get
// domain.ErrShuttingDown. It returns what was still held, which is
// dropped. Calling it again does nothing and returns the same counts.
func (b *Broker) Close() Counts {
	c := b.Counts()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	return c
}

func (b *Broker) wake() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// Pause stops new attempts of typ; see ports.TypeAdmin.
func (b *Broker) Pause(_ context.Context, typ string) error {
	b.mu.Lock()
	b.typeQueue(typ).paused = true
	b.mu.Unlock()
	return nil
}

// Resume lets attempts of typ start again; see ports.TypeAdmin.
func (b *Broker) Resume(_ context.Context, typ string) error {
	b.mu.Lock()
	b.typeQueue(typ).paused = false
	b.mu.Unlock()
	b.wake()
	return nil
}

// Paused returns the paused types; see ports.TypeAdmin.
func (b *Broker) Paused(context.Context) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for name, tq := range b.types {
		if tq.paused {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}
