package memory

import (
	"slices"
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

// The ready structure: per task type, per priority level, a round-robin
// of fairness keys, each key a FIFO of its pending tasks. Taking the next
// task looks only at the heads of the types this instance may start now
// (it runs them, they are not paused, under their limits): for each, the
// front key's oldest task at each non-empty level, ranked by
// domain.Candidate.Outranks. So the cost of a dequeue grows with the
// types, not with the keys or the tasks.

// typeQueue is one task type's pending tasks and its flow-control state.
type typeQueue struct {
	name    string
	lists   *typeLists
	levels  [domain.PriorityLevels]levelQueue
	pending int
	runs    bool // this instance runs it
	paused  bool
	limits  domain.TypeLimits
	bucket  domain.TokenBucket
	// next caches the type's next task while strict order holds (no
	// aging): recomputed when dirty (a task of the type came or went) or
	// when the task is no longer live or its key is at its limit.
	next  cached
	dirty bool
}

type cached struct {
	ok    bool
	slot  slot
	tok   uint64
	kq    *keyQueue
	level int
}

// levelQueue is the round-robin of keys with pending tasks at one level.
type levelQueue struct {
	noKey *keyQueue // the queue of tasks without a key, kept at hand
	keys  map[string]*keyQueue
	rr    []*keyQueue // a FIFO of keys: rr[head:] then wrapped
	head  int
	n     int
}

// keyQueue is one key's pending tasks at one level, oldest first.
type keyQueue struct {
	key     string
	fifo    ring
	inRR    bool
	blocked bool // at the key's concurrency limit: out of the round-robin
}

// blockedAt names a level a blocked key waits in.
type blockedAt struct {
	tq    *typeQueue
	level int
}

func (b *Broker) typeQueue(name string) *typeQueue {
	tq := b.types[name]
	if tq == nil {
		tq = &typeQueue{name: name, lists: b.lists.of(name), runs: b.runs(name), limits: b.opts.Limits[name]}
		b.types[name] = tq
		b.typeList = append(b.typeList, tq)
	}
	return tq
}

// runs reports whether this instance starts attempts of the given type.
func (b *Broker) runs(name string) bool {
	if b.opts.Types == nil {
		return true
	}
	return slices.Contains(b.opts.Types, name)
}

// pushPending puts pending task i at the back (or front) of its key's
// FIFO at its level, and its key into the round-robin if it is not there.
func (b *Broker) pushPending(i slot, front bool) {
	e := b.slab.at(i)
	tq := e.tq
	lq := &tq.levels[e.task.Priority().Level()]
	kq := lq.keyQueue(e.task.Key())
	if front {
		kq.fifo.pushFront(ref{i, e.tok})
	} else {
		kq.fifo.pushBack(ref{i, e.tok})
	}
	if !kq.inRR && !kq.blocked {
		lq.push(kq, front)
	}
	tq.pending++
	tq.dirty = true
	b.pending++
}

// dropPending takes a pending task out of its key's FIFO without a scan:
// its ref goes stale (the caller clears the entry's token).
func (b *Broker) dropPending(e *entry) {
	tq := e.tq
	lq := &tq.levels[e.task.Priority().Level()]
	kq := lq.noKey
	if e.task.Key() != "" {
		kq = lq.keys[e.task.Key()]
	}
	tq.pending--
	tq.dirty = true
	b.pending--
	if kq != nil {
		b.stale(&kq.fifo, e)
	}
}

// keyQueue returns the queue of key at this level, made if missing.
func (lq *levelQueue) keyQueue(key string) *keyQueue {
	if key == "" {
		if lq.noKey == nil {
			lq.noKey = &keyQueue{}
		}
		return lq.noKey
	}
	if lq.keys == nil {
		lq.keys = map[string]*keyQueue{}
	}
	kq := lq.keys[key]
	if kq == nil {
		kq = &keyQueue{key: key}
		lq.keys[key] = kq
	}
	return kq
}

func (lq *levelQueue) push(kq *keyQueue, front bool) {
	if lq.n == len(lq.rr) {
		grown := make([]*keyQueue, max(8, 2*len(lq.rr)))
		for i := 0; i < lq.n; i++ {
			grown[i] = lq.rr[(lq.head+i)%len(lq.rr)]
		}
		lq.rr, lq.head = grown, 0
	}
	if front {
		lq.head = (lq.head - 1 + len(lq.rr)) % len(lq.rr)
		lq.rr[lq.head] = kq
	} else {
		lq.rr[(lq.head+lq.n)%len(lq.rr)] = kq
	}
	lq.n++
	kq.inRR = true
}

// forget drops a key with nothing live left (its stale refs go with it),
// so keys do not pile up; the no-key queue, which most tasks use, stays
// and keeps its buffer.
func (lq *levelQueue) forget(kq *keyQueue) {
	if kq != lq.noKey {
		delete(lq.keys, kq.key)
	}
}

func (lq *levelQueue) pop() *keyQueue {
	kq := lq.rr[lq.head]
	lq.rr[lq.head] = nil
	lq.head = (lq.head + 1) % len(lq.rr)
	lq.n--
	kq.inRR = false
	return kq
}

// front returns the key whose turn it is at this level and its oldest
// live task, dropping keys that have nothing live left and moving keys at
// their concurrency limit out of the round-robin.
func (b *Broker) front(tq *typeQueue, level int) (*keyQueue, slot, bool) {
	lq := &tq.levels[level]
	for lq.n > 0 {
		kq := lq.rr[lq.head]
		i, ok := b.liveFront(&kq.fifo)
		switch {
		case !ok:
			lq.pop()
			lq.forget(kq)

		case b.keyFull(kq.key):
			lq.pop()
			kq.blocked = true
			b.blocked[kq.key] = append(b.blocked[kq.key], blockedAt{tq, level})
		default:
			return kq, i, true
		}
	}
	return nil, 0, false
}

// keyFull reports whether key is at its concurrency limit. Tasks without
// a key take turns as one key but are not capped.
func (b *Broker) keyFull(key string) bool {
	return b.opts.KeyConcurrency > 0 && key != "" && b.keyRunning[key] >= b.opts.KeyConcurrency
}

// unblock puts key's waiting tasks back into their round-robins once one
// of its attempts ended.
func (b *Broker) unblock(key string) {
	if b.keyFull(key) {
		return
	}
	for _, at := range b.blocked[key] {
		lq := &at.tq.levels[at.level]
		if kq := lq.keys[key]; kq != nil && kq.blocked {
			at.tq.dirty = true
			kq.blocked = false
			if !kq.inRR {
				lq.push(kq, false)
			}
		}
	}
	delete(b.blocked, key)
}

// eligible reports whether the instance may start an attempt of tq now;
// when the rate limit is what stops it, wait says for how long.
func (b *Broker) eligible(tq *typeQueue, now time.Time) (ok bool, wait time.Duration) {
	if !tq.runs || tq.paused || tq.pending == 0 {
		return false, 0
	}
	if c := tq.limits.Concurrency; c > 0 && tq.lists.counts[domain.StatusRunning] >= int64(c) {
		return false, 0
	}
	if tq.limits.Rate > 0 {
		if _, ok, wait := tq.limits.Take(tq.bucket, now); !ok {
			return false, wait
		}
	}
	return true, 0
}

// popNext removes and returns the pending task that goes next among the
// types this instance may start now, taking a rate token for it. When
// none may start, wait is how long until a rate limit gives a token (0
// for no such wait).
func (b *Broker) popNext(now time.Time) (i slot, ok bool, wait time.Duration) {
	var best domain.Candidate
	var bestTQ *typeQueue
	var bestKQ *keyQueue
	var bestLevel int
	for _, tq := range b.typeList {
		can, w := b.eligible(tq, now)
		if !can {
			if w > 0 && (wait == 0 || w < wait) {
				wait = w
			}
			continue
		}
		if b.opts.Aging <= 0 {
			// Strict order: the type's best is its highest level's front.
			n := b.nextOf(tq)
			if !n.ok {
				continue
			}
			c := domain.Candidate{Level: n.level, Seq: n.tok}
			if bestTQ == nil || c.Outranks(best, now, 0) {
				best, bestTQ, bestKQ, bestLevel, i = c, tq, n.kq, n.level, n.slot
			}
			continue
		}
		for level := domain.MaxPriority; level >= domain.MinPriority; level-- {
			kq, s, found := b.front(tq, level)
			if !found {
				continue
			}
			e := b.slab.at(s)
			c := domain.Candidate{Level: level, Seq: e.tok, PendingSince: e.task.UpdatedAt()}
			if bestTQ == nil || c.Outranks(best, now, b.opts.Aging) {
				best, bestTQ, bestKQ, bestLevel, i = c, tq, kq, level, s
			}
		}
	}
	if bestTQ == nil {
		return 0, false, wait
	}
	if bestTQ.limits.Rate > 0 {
		bestTQ.bucket, _, _ = bestTQ.limits.Take(bestTQ.bucket, now)
	}
	bestKQ.fifo.popFront(true)
	lq := &bestTQ.levels[bestLevel]
	switch {
	case bestKQ.fifo.live == 0:
		lq.pop()
		lq.forget(bestKQ)
	case lq.n > 1: // the key had its turn: to the back
		lq.pop()
		lq.push(bestKQ, false)
	}
	b.slab.at(i).tok = 0
	bestTQ.pending--
	bestTQ.dirty = true
	b.pending--
	return i, true, 0
}

// nextOf returns the cached next task of tq (strict order), recomputing
// it when it may have changed.
func (b *Broker) nextOf(tq *typeQueue) cached {
	n := tq.next
	if !tq.dirty && n.ok && b.slab.at(n.slot).tok == n.tok && !n.kq.blocked && !b.keyFull(n.kq.key) {
		return n
	}
	n = cached{}
	for level := domain.MaxPriority; level >= domain.MinPriority; level-- {
		if kq, s, found := b.front(tq, level); found {
			n = cached{ok: true, slot: s, tok: b.slab.at(s).tok, kq: kq, level: level}
			break
		}
	}
	tq.next, tq.dirty = n, false
	return n
}
