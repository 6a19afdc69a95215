package memory

import (
	"container/list"
	"context"
	"time"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// DefaultMaxIdempotencyKeys bounds the idempotency keys kept: past it the
// oldest are forgotten before their time.
const DefaultMaxIdempotencyKeys = 100_000

// idemKeys holds idempotency keys in the order they were first reserved,
// which is the order they expire in (all keep the same TTL), so expiry
// and the cap both take from the front.
type idemKeys struct {
	max   int
	byKey map[string]*list.Element
	order *list.List // of *idemEntry
}

type idemEntry struct {
	key      string
	rec      ports.IdempotencyRecord
	reserved time.Time
	expires  time.Time
}

func newIdemKeys(max int) idemKeys {
	return idemKeys{max: max, byKey: map[string]*list.Element{}, order: list.New()}
}

// expire forgets keys past their time from the front, and the oldest past
// the cap. A reservation that outlived its hold expires on lookup.
func (k *idemKeys) expire(now time.Time) {
	for e := k.order.Front(); e != nil; e = k.order.Front() {
		ent := e.Value.(*idemEntry)
		if k.order.Len() <= k.max && now.Before(ent.expires) {
			return
		}
		k.drop(e)
	}
}

func (k *idemKeys) drop(e *list.Element) {
	delete(k.byKey, e.Value.(*idemEntry).key)
	k.order.Remove(e)
}

// Reserve claims an idempotency key; see ports.IdempotencyStore.
func (b *Broker) Reserve(_ context.Context, key, fingerprint string, hold time.Duration) (ports.IdempotencyRecord, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ports.IdempotencyRecord{}, false, domain.ErrShuttingDown
	}
	now := b.now()
	b.idem.expire(now)
	if e, ok := b.idem.byKey[key]; ok {
		ent := e.Value.(*idemEntry)
		if now.Before(ent.expires) {
			return ent.rec, false, nil
		}
		b.idem.drop(e)
	}
	ent := &idemEntry{key: key, rec: ports.IdempotencyRecord{Fingerprint: fingerprint}, reserved: now, expires: now.Add(hold)}
	b.idem.byKey[key] = b.idem.order.PushBack(ent)
	b.idem.expire(now)
	return ent.rec, true, nil
}

// Complete stores the response under a reserved key; see
// ports.IdempotencyStore.
func (b *Broker) Complete(_ context.Context, key string, rec ports.IdempotencyRecord, ttl time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.idem.byKey[key]; ok {
		ent := e.Value.(*idemEntry)
		ent.rec, ent.expires = rec, ent.reserved.Add(ttl)
	}
	return nil
}

// Release frees a reserved key; see ports.IdempotencyStore.
func (b *Broker) Release(_ context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.idem.byKey[key]; ok && !e.Value.(*idemEntry).rec.Done {
		b.idem.drop(e)
	}
	return nil
}
