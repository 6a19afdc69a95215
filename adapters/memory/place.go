package memory

import (
	"container/heap"
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

// Every change of a task's status goes through unplace (out of where its
// old status kept it), store and place (into where its new status belongs),
// so the FIFOs, the heap, the finished rings, the list indexes and the
// counters always agree. A running task is kept in the running map, which
// Dequeue fills and Settle and Update empty.

// place puts task i where its status belongs (at the front of its FIFO
// when front is set: a hand-back keeps its place), and indexes it. now
// starts a finished task's retention.
func (b *Broker) place(i slot, front bool, now time.Time) {
	e := b.slab.at(i)
	switch st := e.task.Status(); {
	case st == domain.StatusPending:
		e.tok = b.nextSeq()
		b.pushPending(i, front)
	case st == domain.StatusScheduled || st == domain.StatusRetrying:
		e.seq = b.nextSeq()
		heap.Push(&b.waiting, i)
	case st.Finished():
		keep, r := b.opts.Retention, &b.finished[succeededRing]
		if st.DeadLetter() {
			keep, r = b.opts.FailedRetention, &b.finished[deadRing]
		}
		e.expires = now.Add(keep).UnixNano()
		e.tok = b.nextSeq()
		r.pushBack(ref{i, e.tok})
	}
	b.lists.add(e.tq.lists, &e.task)
}

// unplace takes task i out of where its status keeps it and out of the
// indexes. A running task leaves the running map; its attempt is told by
// the caller if it no longer counts.
func (b *Broker) unplace(i slot) running {
	e := b.slab.at(i)
	b.lists.remove(e.tq.lists, &e.task)
	var r running
	switch st := e.task.Status(); {
	case st == domain.StatusPending:
		b.dropPending(e)
	case st == domain.StatusScheduled || st == domain.StatusRetrying:
		heap.Remove(&b.waiting, int(e.heapIndex))
	case st == domain.StatusRunning:
		r = b.running[e.task.ID()]
		delete(b.running, e.task.ID())
		if b.opts.KeyConcurrency > 0 && e.task.Key() != "" {
			b.endRun(e.task.Key())
		}
	case st.DeadLetter():
		b.stale(&b.finished[deadRing], e)
	case st.Finished():
		b.stale(&b.finished[succeededRing], e)
	}
	return r
}

// stale makes the live ref of e in r stale, and compacts r once stale refs
// outnumber live ones, so they cannot pile up.
func (b *Broker) stale(r *ring, e *entry) {
	e.tok = 0
	r.live--
	if stale := r.n - r.live; stale > r.live+minRing {
		r.compact(func(v ref) bool { return b.slab.at(v.slot).tok == v.tok })
	}
}

// store replaces task i's record with t, keeping the byte count true.
func (b *Broker) store(i slot, t *domain.Task) {
	e := b.slab.at(i)
	e.task = *t
	size := taskBytes(t) // a longer error or a result can grow it: never refused
	b.bytes += size - e.bytes
	e.bytes = size
}

// forget drops task i, which must already be unplaced.
func (b *Broker) forget(i slot) {
	e := b.slab.at(i)
	b.bytes -= e.bytes
	b.index.remove(e.task.ID())
	b.slab.release(i)
}

// endRun counts an attempt of key out, and lets the key's waiting tasks
// back into their round-robins if it was at its limit.
func (b *Broker) endRun(key string) {
	if n := b.keyRunning[key] - 1; n > 0 {
		b.keyRunning[key] = n
	} else {
		delete(b.keyRunning, key)
	}
	if len(b.blocked[key]) > 0 {
		b.unblock(key)
	}
}

// liveFront drops stale refs from the front of r and returns the task of
// the first live one.
func (b *Broker) liveFront(r *ring) (slot, bool) {
	for r.n > 0 {
		v := r.front()
		if b.slab.at(v.slot).tok == v.tok {
			return v.slot, true
		}
		r.popFront(false)
	}
	return 0, false
}

// waitingCount is what --queue-size bounds: scheduled, pending, retrying.
func (b *Broker) waitingCount() int { return b.pending + b.waiting.Len() }

// promoteDue makes scheduled and retrying tasks whose time has come
// pending, at the back of their priority's FIFO.
func (b *Broker) promoteDue(now time.Time) {
	for b.waiting.Len() > 0 && !b.waiting.due(0).After(now) {
		i := heap.Pop(&b.waiting).(slot)
		e := b.slab.at(i)
		b.lists.remove(e.tq.lists, &e.task)
		if e.task.Status() == domain.StatusScheduled {
			_ = e.task.Due(now)
		} else {
			_ = e.task.Requeue(now)
		}
		b.place(i, false, now)
	}
}

// expire forgets finished tasks whose retention is over, and the oldest
// ones past each ring's cap. Tasks finish in order, so it stops at the
// first one still kept.
func (b *Broker) expire(now time.Time) {
	nowNano := now.UnixNano()
	caps := [2]int{b.opts.MaxFinished, b.opts.MaxFailed}
	for k := range b.finished {
		r := &b.finished[k]
		for {
			i, ok := b.liveFront(r)
			if !ok {
				break
			}
			e := b.slab.at(i)
			if over := caps[k] > 0 && r.live > caps[k]; !over && nowNano < e.expires {
				break
			}
			b.dropFront(r, i)
		}
	}
}

// dropFront forgets the finished task i at the live front of r.
func (b *Broker) dropFront(r *ring, i slot) {
	r.popFront(true)
	e := b.slab.at(i)
	e.tok = 0
	b.lists.remove(e.tq.lists, &e.task)
	b.forget(i)
}

// makeRoom forgets finished tasks, succeeded ones first, oldest first,
// until size more bytes fit under the memory limit. It reports whether
// they fit.
func (b *Broker) makeRoom(size int64) bool {
	if b.opts.MemoryLimit == 0 {
		return true
	}
	for k := range b.finished {
		r := &b.finished[k]
		for b.bytes+size > b.opts.MemoryLimit {
			i, ok := b.liveFront(r)
			if !ok {
				break
			}
			b.dropFront(r, i)
		}
	}
	return b.bytes+size <= b.opts.MemoryLimit
}

func (b *Broker) nextSeq() uint64 {
	b.seq++
	return b.seq
}
