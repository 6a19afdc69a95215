package memory

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"slices"

	"github.com/google/btree"
	"github.com/google/uuid"

	"github.com/taskqueue/taskqueue/domain"
)

// lists indexes tasks for listing and counting: one ordered set of ids
// per (status, type), and counters by type and status. Running tasks are
// counted but not indexed: there are never more of them than workers, and
// the running map lists them.
type lists struct {
	byType map[string]*typeLists
}

// typeLists are the counters and indexes of one task type.
type typeLists struct {
	counts [domain.StatusCount]int64
	trees  [domain.StatusCount]*btree.BTreeG[uuid.UUID]
}

// idLess orders ids as their bytes do (UUIDv7: by time), comparing two
// big-endian words.
func idLess(a, b uuid.UUID) bool {
	ah, bh := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if ah != bh {
		return ah < bh
	}
	return binary.BigEndian.Uint64(a[8:]) < binary.BigEndian.Uint64(b[8:])
}

func newLists() lists { return lists{byType: map[string]*typeLists{}} }

func (l *lists) of(typ string) *typeLists {
	tl := l.byType[typ]
	if tl == nil {
		tl = &typeLists{}
		l.byType[typ] = tl
	}
	return tl
}

// add indexes and counts t, of the type whose lists tl are, under its
// current status.
func (l *lists) add(tl *typeLists, t *domain.Task) {
	st := t.Status()
	tl.counts[st]++
	if st == domain.StatusRunning {
		return
	}
	if tl.trees[st] == nil {
		tl.trees[st] = btree.NewG(32, idLess)
	}
	tl.trees[st].ReplaceOrInsert(t.ID())
}

// remove takes t out of the index and counters of its current status.
func (l *lists) remove(tl *typeLists, t *domain.Task) {
	st := t.Status()
	tl.counts[st]--
	if tree := tl.trees[st]; tree != nil && st != domain.StatusRunning {
		tree.Delete(t.ID())
	}
}

// source yields ids in descending order, below a cursor, in chunks.
type source struct {
	tree *btree.BTreeG[uuid.UUID]
	ids  []uuid.UUID // a fixed list (running tasks), descending
	buf  []uuid.UUID
	next uuid.UUID // ids below this are still to come; Nil: from the top
	done bool
	head uuid.UUID
}

// fill loads the next chunk of up to n ids; it reports whether head holds
// one.
func (s *source) fill(n int) bool {
	if len(s.buf) == 0 && !s.done {
		s.buf = s.buf[:0]
		if s.tree != nil {
			take := func(id uuid.UUID) bool {
				if s.next != uuid.Nil && id == s.next {
					return true // the cursor itself is not listed again
				}
				s.buf = append(s.buf, id)
				return len(s.buf) < n
			}
			if s.next == uuid.Nil {
				s.tree.Descend(take)
			} else {
				s.tree.DescendLessOrEqual(s.next, take)
			}
			if len(s.buf) < n {
				s.done = true
			}
		} else {
			for len(s.ids) > 0 && len(s.buf) < n {
				if s.next == uuid.Nil || idLess(s.ids[0], s.next) {
					s.buf = append(s.buf, s.ids[0])
				}
				s.ids = s.ids[1:]
			}
			s.done = len(s.ids) == 0
		}
		if len(s.buf) > 0 {
			s.next = s.buf[len(s.buf)-1]
		}
	}
	if len(s.buf) == 0 {
		return false
	}
	s.head = s.buf[0]
	return true
}

type sources []*source

func (h sources) Len() int           { return len(h) }
func (h sources) Less(i, j int) bool { return idLess(h[j].head, h[i].head) } // newest first
func (h sources) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sources) Push(x any)        { *h = append(*h, x.(*source)) }
func (h *sources) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}

// page merges the sources newest first and returns up to limit ids below
// after, and whether more may follow. Each source is read in chunks, so a
// page costs O(limit + sources) reads plus the log factors of the trees
// and of the merge.
func page(srcs []*source, after uuid.UUID, limit int) ([]uuid.UUID, bool) {
	chunk := max(8, limit/max(1, len(srcs))+1)
	h := make(sources, 0, len(srcs))
	for _, s := range srcs {
		s.next = after
		if s.fill(chunk) {
			h = append(h, s)
		}
	}
	heap.Init(&h)
	out := make([]uuid.UUID, 0, min(limit, 64))
	for h.Len() > 0 && len(out) < limit {
		s := h[0]
		out = append(out, s.head)
		s.buf = s.buf[1:]
		if s.fill(chunk) {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return out, h.Len() > 0
}

// sources returns the sources for a filter: every (status, type) tree it
// selects, and the running ids (newest first) when it selects running.
func (l *lists) sources(statuses []domain.Status, types []string, running []uuid.UUID) []*source {
	if len(statuses) == 0 {
		statuses = domain.Statuses()
	}
	var srcs []*source
	for _, st := range statuses {
		if st == domain.StatusRunning {
			ids := slices.Clone(running)
			slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(b[:], a[:]) })
			srcs = append(srcs, &source{ids: ids})
			continue
		}
		for typ, tl := range l.byType {
			if tree := tl.trees[st]; tree != nil && tree.Len() > 0 && (len(types) == 0 || slices.Contains(types, typ)) {
				srcs = append(srcs, &source{tree: tree})
			}
		}
	}
	return srcs
}
