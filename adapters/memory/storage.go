package memory

import (
	"time"

	"github.com/taskqueue/taskqueue/domain"
)

// Tasks live in a slab of fixed-size chunks addressed by uint32 slots.
// The index, the FIFOs and the heap hold slots, not pointers, so the
// garbage collector has nothing to trace in them; a freed slot is reused
// first, so a new task lands in memory that is still in cache.

const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
)

type slot = uint32

type entry struct {
	task      domain.Task
	tq        *typeQueue // the task's type: its ready queues, indexes, counters
	seq       uint64     // orders tasks due at the same instant
	expires   int64      // unix nanoseconds; set once finished
	bytes     int64      // what the task counts against the memory limit
	tok       uint64     // matches the one FIFO reference that is live, if any
	heapIndex int32      // position in the waiting heap, -1 elsewhere
}

// TaskOverhead is what a task costs besides its payload, type, last error
// and result: its slab entry, index cell, queue slot and list-index node,
// rounded up (a pending task measures about 400 bytes; see
// TestPendingTaskMemory).
const TaskOverhead = 512

// taskBytes is what t counts against the memory limit.
func taskBytes(t *domain.Task) int64 {
	return TaskOverhead + int64(cap(t.Payload())+len(t.Type())+len(t.LastError())+cap(t.Result().Data))
}

type slab struct {
	chunks [][]entry
	free   []slot
	used   slot // slots handed out at least once
}

func (s *slab) alloc() slot {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	if int(s.used) == len(s.chunks)*chunkSize {
		s.chunks = append(s.chunks, make([]entry, chunkSize))
	}
	s.used++
	return s.used - 1
}

func (s *slab) at(i slot) *entry { return &s.chunks[i>>chunkBits][i&(chunkSize-1)] }

func (s *slab) release(i slot) {
	*s.at(i) = entry{}
	s.free = append(s.free, i)
}

// ref is a FIFO's reference to a task: live while the task's entry still
// carries the same token. A task taken out of a FIFO other than by its
// front (cancelled, deleted, retried) just changes its token; the stale
// reference is skipped when it reaches the front, and compacted away when
// stale ones outnumber live ones.
type ref struct {
	slot slot
	tok  uint64
}

// ring is a FIFO of refs that grows by doubling and shrinks when mostly
// empty. live counts the refs that are not stale.
type ring struct {
	buf  []ref
	head int
	n    int
	live int
}

const minRing = 64

func (r *ring) pushBack(v ref) {
	r.grow()
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
	r.live++
}

func (r *ring) pushFront(v ref) {
	r.grow()
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = v
	r.n++
	r.live++
}

func (r *ring) front() ref { return r.buf[r.head] }

// popFront removes the front ref; live says whether it was live.
func (r *ring) popFront(live bool) ref {
	v := r.buf[r.head]
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if live {
		r.live--
	}
	if len(r.buf) > minRing && r.n < len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return v
}

func (r *ring) grow() {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), minRing))
	}
}

// resize copies the FIFO into a buffer of size, a power of two.
func (r *ring) resize(size int) {
	buf := make([]ref, size)
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = buf, 0
}

// compact drops the refs for which live reports false, keeping order.
func (r *ring) compact(live func(ref) bool) {
	kept := 0
	for i := 0; i < r.n; i++ {
		v := r.buf[(r.head+i)&(len(r.buf)-1)]
		if live(v) {
			r.buf[(r.head+kept)&(len(r.buf)-1)] = v
			kept++
		}
	}
	r.n, r.live = kept, kept
}

// waitHeap orders the tasks that wait for a time (scheduled and retrying)
// by when they are due, then by the order they started waiting
// (container/heap is not stable).
type waitHeap struct {
	slab  *slab
	items []slot
}

func (h *waitHeap) due(i int) time.Time { return h.slab.at(h.items[i]).task.DueAt() }

func (h *waitHeap) Len() int { return len(h.items) }
func (h *waitHeap) Less(i, j int) bool {
	a, b := h.due(i), h.due(j)
	if !a.Equal(b) {
		return a.Before(b)
	}
	return h.slab.at(h.items[i]).seq < h.slab.at(h.items[j]).seq
}
func (h *waitHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.slab.at(h.items[i]).heapIndex = int32(i)
	h.slab.at(h.items[j]).heapIndex = int32(j)
}
func (h *waitHeap) Push(x any) {
	s := x.(slot)
	h.slab.at(s).heapIndex = int32(len(h.items))
	h.items = append(h.items, s)
}
func (h *waitHeap) Pop() any {
	s := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	h.slab.at(s).heapIndex = -1
	return s
}
