package memory

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
)

// TestIndexMatchesMap drives the index and a Go map with the same random
// puts, gets and removes (with a narrow key space, so probe runs collide,
// wrap around and shrink) and checks they always agree.
func TestIndexMatchesMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var x idIndex
	want := map[uuid.UUID]slot{}
	key := func() uuid.UUID {
		var id uuid.UUID
		binary.LittleEndian.PutUint64(id[8:], r.Uint64N(5000))
		return id
	}
	for op := 0; op < 400_000; op++ {
		id := key()
		switch r.IntN(5) {
		case 0, 1:
			s := slot(r.Uint32N(1 << 20))
			x.put(id, s)
			want[id] = s
		case 2, 3:
			x.remove(id)
			delete(want, id)
		default:
			got, ok := x.get(id)
			w, wok := want[id]
			if ok != wok || got != w {
				t.Fatalf("op %d: get = %d,%v; want %d,%v", op, got, ok, w, wok)
			}
		}
		if x.len() != len(want) {
			t.Fatalf("op %d: len %d; want %d", op, x.len(), len(want))
		}
		if op%50_000 == 0 { // drain sometimes so the table shrinks
			for id := range want {
				x.remove(id)
				delete(want, id)
			}
		}
	}
	for id, w := range want {
		if got, ok := x.get(id); !ok || got != w {
			t.Fatalf("final get %v = %d,%v; want %d", id, got, ok, w)
		}
	}
}
