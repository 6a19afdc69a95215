package memory

// ring is a FIFO of entries that grows by doubling and shrinks when it is
// mostly empty, so a drained burst gives its memory back.
type ring struct {
	buf  []*entry
	head int
	n    int
}

const minRing = 64

func (r *ring) len() int { return r.n }

func (r *ring) pushBack(e *entry) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), minRing))
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = e
	r.n++
}

func (r *ring) pushFront(e *entry) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), minRing))
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = e
	r.n++
}

func (r *ring) front() *entry { return r.buf[r.head] }

func (r *ring) popFront() *entry {
	e := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if len(r.buf) > minRing && r.n < len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return e
}

// resize copies the entries into a buffer of size (a power of two).
func (r *ring) resize(size int) {
	buf := make([]*entry, size)
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = buf, 0
}
