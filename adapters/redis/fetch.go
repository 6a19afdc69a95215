package redis

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// waiter is one Dequeue call waiting for a task.
type waiter struct {
	mu   sync.Mutex
	ch   chan *domain.Task // buffer 1
	gone bool
}

// deliver hands t to w unless w has left; it reports whether it did.
func (w *waiter) deliver(t *domain.Task) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return false
	}
	w.ch <- t
	return true
}

// leave marks w gone and returns a task delivered meanwhile, if any.
func (w *waiter) leave() *domain.Task {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gone = true
	select {
	case t := <-w.ch:
		return t
	default:
		return nil
	}
}

func (w *waiter) left() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gone
}

// Dequeue waits for the next task in the global order and starts its
// attempt; see ports.TaskQueue. One fetcher per instance serves all its
// waiting workers with one script call, and sleeps on a Redis list that
// every submission pushes to, so an idle instance does not poll.
func (b *Broker) Dequeue(ctx context.Context) (ports.Attempt, error) {
	if b.closed.Load() {
		return ports.Attempt{}, domain.ErrShuttingDown
	}
	w := &waiter{ch: make(chan *domain.Task, 1)}
	select {
	case b.waiters <- w:
	case <-ctx.Done():
		return ports.Attempt{}, ctx.Err()
	case <-b.stop:
		return ports.Attempt{}, domain.ErrShuttingDown
	}
	var err error
	select {
	case t := <-w.ch:
		b.mu.Lock()
		h, ok := b.held[t.ID()]
		b.mu.Unlock()
		if !ok { // cancelled between the fetch and now
			h.cancelled = make(chan struct{})
			close(h.cancelled)
		}
		return ports.Attempt{Task: t, Cancelled: h.cancelled, Ready: h.ready}, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-b.stop:
		err = domain.ErrShuttingDown
	}
	if t := w.leave(); t != nil {
		b.unfetch(t)
	}
	return ports.Attempt{}, err
}

// fetchResult is one dequeue call's answer for the waiters it served.
type fetchResult struct {
	waiters []*waiter
	tasks   []*domain.Task
	nextDue time.Time
	err     error
}

// fetchLoop serves waiting Dequeue calls until Close. Up to maxFetches
// dequeue calls run at once, each for workers already waiting, so a busy
// instance is not held to one round trip at a time; tasks are never
// fetched ahead of a waiting worker, which keeps the global order.
func (b *Broker) fetchLoop() {
	defer b.loops.Done()
	results := make(chan fetchResult, maxFetches)
	var waiting []*waiter
	inflight := 0
	empty := false // the last answer found nothing ready
	var nextDue time.Time
	failing := false
	backoff := 100 * time.Millisecond
	for {
		if len(waiting) == 0 && inflight == 0 {
			select {
			case w := <-b.waiters:
				waiting = append(waiting, w)
			case <-b.stop:
				return
			}
		}
	gather:
		for {
			select {
			case w := <-b.waiters:
				waiting = append(waiting, w)
			default:
				break gather
			}
		}
		waiting = slices.DeleteFunc(waiting, (*waiter).left)

		if len(waiting) > 0 && inflight < maxFetches && !empty {
			// Each batch gets its own array: batches in flight must not share
			// one with waiting, or appends to one overwrite the other.
			batch := slices.Clone(waiting[:min(len(waiting), fetchBatch)])
			waiting = slices.Delete(waiting, 0, len(batch))
			inflight++
			go func() {
				tasks, due, err := b.fetch(len(batch))
				results <- fetchResult{waiters: batch, tasks: tasks, nextDue: due, err: err}
			}()
			continue
		}
		if empty && inflight == 0 && len(waiting) > 0 {
			b.waitForWork(nextDue)
			empty = false
			continue
		}
		select {
		case r := <-results:
			inflight--
			leftover := b.deliver(r)
			waiting = append(leftover[:len(leftover):len(leftover)], waiting...) // they have waited longest
			switch {
			case r.err != nil:
				if !failing {
					b.log.WithError(r.err).Warn("cannot take tasks from Redis; retrying with backoff")
					failing = true
				}
				if !b.sleep(backoff) {
					b.drainFetches(results, inflight)
					return
				}
				backoff = min(2*backoff, 5*time.Second)
			case failing:
				b.log.Info("taking tasks from Redis again")
				failing, backoff = false, 100*time.Millisecond
				b.kickMaintain() // put back what lost replies started, now
			}
			if r.err == nil && len(r.tasks) < len(r.waiters) {
				empty, nextDue = true, r.nextDue
			}
		case w := <-b.waiters:
			waiting = append(waiting, w)
		case <-b.stop:
			b.drainFetches(results, inflight)
			return
		}
	}
}

// deliver gives r's tasks to r's waiters in order, hands back tasks whose
// waiter left, and returns the waiters that got nothing.
func (b *Broker) deliver(r fetchResult) []*waiter {
	waiters := r.waiters
	for _, t := range r.tasks {
		delivered := false
		for len(waiters) > 0 && !delivered {
			delivered = waiters[0].deliver(t)
			waiters = waiters[1:]
		}
		if !delivered {
			b.unfetch(t)
		}
	}
	return waiters
}

// drainFetches waits for the dequeue calls still running at Close and
// hands back what they took.
func (b *Broker) drainFetches(results chan fetchResult, inflight int) {
	for ; inflight > 0; inflight-- {
		r := <-results
		for _, t := range r.tasks {
			b.unfetch(t)
		}
	}
}

// fetch starts up to n attempts in one script call.
func (b *Broker) fetch(n int) ([]*domain.Task, time.Time, error) {
	ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
	defer cancel()
	now := b.opts.Now()
	tokens := b.tokens + ":" + strconv.FormatUint(b.fetchN.Add(1), 36)
	// Through the shared pipelines: a fetch then often rides in the same
	// round trip as the completions of the workers it is fetching for.
	args := append([]any{b.keys.tag, ms(now), strconv.FormatInt(now.UnixNano(), 10), b.opts.Lease.Milliseconds(), n, tokens, b.opts.Instance},
		b.flowArgs...)
	val, err := b.run(ctx, b.scripts.dequeue, b.keys.all(), args...)
	if err != nil {
		if errors.Is(err, domain.ErrUnavailable) && !replied(err) {
			// The call was sent and may have run, its reply lost: remember
			// its tokens, so the attempts it started are put back, not left
			// to expire and cost a retry. (A call never sent returns ctx's
			// error or ErrShuttingDown.)
			b.mu.Lock()
			b.lost = append(b.lost, tokens+":")
			if len(b.lost) > maxLost {
				b.lost = b.lost[len(b.lost)-maxLost:]
			}
			b.mu.Unlock()
		}
		return nil, time.Time{}, err
	}
	res, ok := val.([]any)
	if !ok || len(res) < 2 {
		return nil, time.Time{}, fmt.Errorf("dequeue script returned %T", val)
	}
	var nextDue time.Time
	if due, _ := res[1].(int64); due >= 0 {
		nextDue = time.UnixMilli(due)
	}
	var tasks []*domain.Task
	for i := 2; i+2 < len(res); i += 3 {
		rawID, _ := res[i].(string)
		d, _ := res[i+1].(string)
		s, _ := res[i+2].(string)
		id, err := uuid.Parse(rawID)
		if err != nil {
			b.log.WithField("member", rawID).Error("ready set holds an id that is not a UUID; leaving it to lease recovery")
			continue
		}
		t, st, err := decodeRecord(id, d, s, "")
		if err != nil {
			b.log.WithError(err).Error("cannot read a task record; leaving it to lease recovery")
			continue
		}
		b.mu.Lock()
		b.held[id] = lease{token: st.Token, attempt: t.Attempts(), score: st.Score, deadline: fromMillis(st.Lease), cancelled: make(chan struct{}), ready: fromNanos(st.PrevUpdated)}
		b.mu.Unlock()
		tasks = append(tasks, t)
	}
	return tasks, nextDue, nil
}

// flowArgs returns the dequeue script's flow-control arguments and the
// wake lists an idle fetcher of an instance with these options waits on.
func flowArgs(opts Options, k keys) (args []any, wake []string) {
	args = []any{opts.Aging.Milliseconds(), opts.KeyConcurrency}
	limit := func(typ string) []any {
		l := opts.Limits[typ]
		return []any{typ, l.Concurrency, l.Rate, l.Period.Milliseconds()}
	}
	if opts.Types == nil {
		args = append(args, "all")
		for _, typ := range slices.Sorted(maps.Keys(opts.Limits)) {
			args = append(args, limit(typ)...)
		}
		return args, []string{k.wake}
	}
	args = append(args, "only")
	for _, typ := range opts.Types {
		args = append(args, limit(typ)...)
		wake = append(wake, k.wakeOf(typ))
	}
	return args, wake
}

// waitForWork blocks on the wake lists until a submission (or hand-back,
// or promotion) pushes to it, the next retry is due, a second passes, or
// Close. Only an instance with idle workers waits here, so it never takes
// a wake-up another instance needs.
func (b *Broker) waitForWork(nextDue time.Time) {
	timeout := time.Second
	if !nextDue.IsZero() {
		timeout = min(timeout, max(time.Until(nextDue), 5*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(b.ctx, timeout+opTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-done:
		}
	}()
	defer close(done)
	var err error
	switch {
	case timeout >= time.Second:
		err = b.blocker.BLPop(ctx, timeout, b.wakeKeys...).Err()
	case b.subSecondBlock:
		// go-redis rounds BLPOP timeouts under a second up to one: a rate
		// limit's next token or a retry due sooner would wait that long.
		args := make([]any, 0, len(b.wakeKeys)+2)
		args = append(args, "blpop")
		for _, k := range b.wakeKeys {
			args = append(args, k)
		}
		args = append(args, strconv.FormatFloat(timeout.Seconds(), 'f', 3, 64))
		err = b.blocker.Do(ctx, args...).Err()
	default:
		if !b.sleep(timeout) {
			return
		}
	}
	if err != nil && !errors.Is(err, goredis.Nil) && b.ctx.Err() == nil {
		select {
		case <-b.stop:
		case <-time.After(100 * time.Millisecond): // Redis trouble: fetch reports it
		}
	}
}

// unfetch puts back a task whose attempt was started but never given to
// a worker, as if it had never started: same place, same attempt count.
func (b *Broker) unfetch(t *domain.Task) {
	b.mu.Lock()
	h, ok := b.held[t.ID()]
	b.mu.Unlock()
	if !ok {
		return
	}
	defer b.release(t.ID(), h.token)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.run(ctx, b.scripts.undo, b.keys.all(), b.keys.tag, "ids", t.ID().String(), h.token); err != nil {
		b.log.WithError(err).WithField("task_id", t.ID()).Warn("cannot put back an undelivered task; its lease will expire and it will be recovered")
	}
}

// sleep waits d or until Close; it reports false on Close.
func (b *Broker) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-b.stop:
		return false
	}
}
