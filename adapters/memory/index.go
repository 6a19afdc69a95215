package memory

import (
	"encoding/binary"

	"github.com/google/uuid"
)

// idIndex maps task ids to slots. It is an open-addressing table with
// linear probing and backward-shift deletion: a probe usually stays in one
// cache line and deletions leave no tombstones, so inserts and deletes cost
// about one cache miss however many tasks are held. The Go map it replaces
// slowed the whole broker by half at a million queued tasks (see
// BenchmarkEnqueueDequeue). Cells hold no pointers, so the garbage
// collector does not scan the table.
type idIndex struct {
	cells []cell
	n     int
	mask  uint64
}

// cell is empty when slot1 is 0; otherwise it holds slot1-1.
type cell struct {
	id    uuid.UUID
	slot1 uint32
}

const minIndex = 1024

func (x *idIndex) len() int { return x.n }

// home is where id's probe starts. UUIDv7 ids end in random bits, but the
// mix keeps any ids (tests use fixed ones) spread out.
func (x *idIndex) home(id *uuid.UUID) uint64 {
	h := binary.LittleEndian.Uint64(id[8:]) ^ binary.LittleEndian.Uint64(id[:8])*0x9E3779B97F4A7C15
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	return (h ^ h>>32) & x.mask
}

// put adds or replaces the slot for id.
func (x *idIndex) put(id uuid.UUID, s slot) {
	if 2*(x.n+1) > len(x.cells) {
		x.rehash(max(2*len(x.cells), minIndex))
	}
	i := x.home(&id)
	for x.cells[i].slot1 != 0 {
		if x.cells[i].id == id {
			x.cells[i].slot1 = s + 1
			return
		}
		i = (i + 1) & x.mask
	}
	x.cells[i] = cell{id: id, slot1: s + 1}
	x.n++
}

// get returns id's slot, if held.
func (x *idIndex) get(id uuid.UUID) (slot, bool) {
	if x.n == 0 {
		return 0, false
	}
	for i := x.home(&id); x.cells[i].slot1 != 0; i = (i + 1) & x.mask {
		if x.cells[i].id == id {
			return x.cells[i].slot1 - 1, true
		}
	}
	return 0, false
}

// remove deletes id if held, shifting later cells of the same probe run
// back so no tombstone is left.
func (x *idIndex) remove(id uuid.UUID) {
	if x.n == 0 {
		return
	}
	i := x.home(&id)
	for ; x.cells[i].id != id; i = (i + 1) & x.mask {
		if x.cells[i].slot1 == 0 {
			return
		}
	}
	if x.cells[i].slot1 == 0 {
		return
	}
	for j := (i + 1) & x.mask; x.cells[j].slot1 != 0; j = (j + 1) & x.mask {
		// Move cell j back into the hole at i unless its home lies
		// cyclically in (i, j], where it would no longer be found.
		k := x.home(&x.cells[j].id)
		if (j-k)&x.mask >= (j-i)&x.mask {
			x.cells[i] = x.cells[j]
			i = j
		}
	}
	x.cells[i] = cell{}
	x.n--
	if len(x.cells) > minIndex && 8*x.n < len(x.cells) {
		x.rehash(len(x.cells) / 2)
	}
}

// rehash moves every cell into a table of size cells, a power of two.
func (x *idIndex) rehash(size int) {
	old := x.cells
	x.cells = make([]cell, size)
	x.mask = uint64(size - 1)
	for _, c := range old {
		if c.slot1 != 0 {
			i := x.home(&c.id)
			for x.cells[i].slot1 != 0 {
				i = (i + 1) & x.mask
			}
			x.cells[i] = c
		}
	}
}
