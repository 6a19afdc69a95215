package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/taskqueue/taskqueue/domain"
	"github.com/taskqueue/taskqueue/ports"
)

// maxConflicts bounds the compare-and-set retries of one Update: each
// conflict means another change landed first.
const maxConflicts = 20

// Update applies change to a task atomically: it reads the task, lets
// change decide, and stores the result only if the task is still as it
// was read (else it reads again); see ports.TaskAdmin.
func (b *Broker) Update(ctx context.Context, id uuid.UUID, change func(*domain.Task) error) (*domain.Task, error) {
	for i := 0; i < maxConflicts; i++ {
		task, raw, err := b.read(ctx, id)
		if err != nil {
			return nil, err
		}
		old := task.Status()
		if err := change(task); err != nil {
			return nil, err
		}
		s, err := encodeState(task, "")
		if err != nil {
			return nil, err
		}
		st := task.Status()
		at := ""
		switch {
		case st == domain.StatusScheduled || st == domain.StatusRetrying:
			at = ms(task.DueAt())
		case st.Finished():
			at = ms(task.FinishedAt())
		case st == domain.StatusRunning:
			return nil, fmt.Errorf("update task %s: a change cannot start an attempt", id)
		}
		keep, limit := b.retention(st)
		res, err := b.scripts.update.Run(ctx, b.rdb, b.keys.all(), b.keys.tag, id.String(), raw, s, old.String(), st.String(),
			task.Type(), task.Priority().Level(), at, keep, limit, b.opts.QueueSize).Text()
		if err != nil {
			return nil, classify(err)
		}
		switch res {
		case "ok":
			if st == domain.StatusPending {
				b.kickMaintain()
			}
			return task, nil
		case "gone":
			return nil, domain.ErrTaskNotFound
		case "full":
			return nil, domain.ErrQueueFull
		}
	}
	return nil, fmt.Errorf("update task %s: it kept changing under %d tries: %w", id, maxConflicts, domain.ErrUnavailable)
}

// UpdateMany applies change to matching tasks, newest first; see
// ports.TaskAdmin. It lists a page, then updates its tasks one by one.
func (b *Broker) UpdateMany(ctx context.Context, filter ports.ListFilter, limit int, change func(*domain.Task) error) (int, error) {
	changed := 0
	after := uuid.Nil
	for changed < limit {
		page, err := b.List(ctx, filter, after, min(limit-changed, ports.MaxListLimit))
		if err != nil {
			return changed, err
		}
		for _, t := range page.Tasks {
			switch _, err := b.Update(ctx, t.ID(), change); {
			case err == nil:
				changed++
			case errors.Is(err, domain.ErrQueueFull), errors.Is(err, domain.ErrUnavailable):
				return changed, err
			}
		}
		if page.Next == uuid.Nil {
			break
		}
		after = page.Next
	}
	return changed, nil
}

// Delete removes a task if check accepts it, compare-and-set like Update;
// see ports.TaskAdmin.
func (b *Broker) Delete(ctx context.Context, id uuid.UUID, check func(*domain.Task) error) error {
	for i := 0; i < maxConflicts; i++ {
		task, raw, err := b.read(ctx, id)
		if err != nil {
			return err
		}
		if err := check(task); err != nil {
			return err
		}
		res, err := b.scripts.del.Run(ctx, b.rdb, b.keys.all(), b.keys.tag, id.String(), raw, task.Status().String(), task.Type()).Text()
		if err != nil {
			return classify(err)
		}
		switch res {
		case "ok":
			return nil
		case "gone":
			return domain.ErrTaskNotFound
		}
	}
	return fmt.Errorf("delete task %s: it kept changing under %d tries: %w", id, maxConflicts, domain.ErrUnavailable)
}

// List returns a page of tasks, newest first; see ports.TaskReader. Each
// (status, type) index is read in chunks with ZREVRANGEBYLEX and the
// chunks are merged; the page's records come in one pipelined HMGET each.
func (b *Broker) List(ctx context.Context, filter ports.ListFilter, after uuid.UUID, limit int) (ports.ListPage, error) {
	statuses := filter.Statuses
	if len(statuses) == 0 {
		statuses = domain.Statuses()
	}
	types := filter.Types
	if len(types) == 0 {
		var err error
		if types, err = b.knownTypes(ctx); err != nil {
			return ports.ListPage{}, err
		}
	}
	var srcs []*lexSource
	for _, st := range statuses {
		if st == domain.StatusRunning {
			ids, err := b.runningIDs(ctx, types)
			if err != nil {
				return ports.ListPage{}, err
			}
			srcs = append(srcs, &lexSource{fixed: ids})
			continue
		}
		for _, typ := range types {
			srcs = append(srcs, &lexSource{key: b.keys.tag + "idx:" + st.String() + ":" + typ})
		}
	}
	ids, more, err := mergeNewest(ctx, b.rdb, srcs, after, limit)
	if err != nil {
		return ports.ListPage{}, classify(err)
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, b.keys.task+id, "d", "s", "r")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return ports.ListPage{}, classify(err)
	}
	out := ports.ListPage{Tasks: make([]*domain.Task, 0, len(ids))}
	for i, raw := range ids {
		vals := cmds[i].Val()
		if len(vals) < 3 {
			continue
		}
		d, _ := vals[0].(string)
		s, _ := vals[1].(string)
		r, _ := vals[2].(string)
		id, err := uuid.Parse(raw)
		if err != nil || d == "" || s == "" {
			continue // expired since it was indexed; trimmed within a second
		}
		t, _, err := decodeRecord(id, d, s, r)
		if err != nil {
			return ports.ListPage{}, err
		}
		out.Tasks = append(out.Tasks, t)
	}
	if more && len(ids) > 0 {
		out.Next = uuid.MustParse(ids[len(ids)-1])
	}
	return out, nil
}

// knownTypes returns the types the counters know of (every type a task
// was ever stored with), from the counters' field names.
func (b *Broker) knownTypes(ctx context.Context) ([]string, error) {
	fields, err := b.rdb.HKeys(ctx, b.keys.counts).Result()
	if err != nil {
		return nil, classify(err)
	}
	seen := map[string]bool{}
	var types []string
	for _, f := range fields {
		if _, typ, ok := strings.Cut(f, "|"); ok && !seen[typ] {
			seen[typ] = true
			types = append(types, typ)
		}
	}
	return types, nil
}

// runningIDs returns the running tasks of the given types, newest first:
// there are never more than the workers of every instance.
func (b *Broker) runningIDs(ctx context.Context, types []string) ([]string, error) {
	ids, err := b.rdb.ZRange(ctx, b.keys.running, 0, -1).Result()
	if err != nil {
		return nil, classify(err)
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*goredis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, b.keys.task+id, "s")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, classify(err)
	}
	var out []string
	for i, id := range ids {
		var st state
		if json.Unmarshal([]byte(cmds[i].Val()), &st) == nil && st.Status == domain.StatusRunning.String() && slices.Contains(types, st.Type) {
			out = append(out, id)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, nil
}

// lexSource yields ids newest first from one index (or a fixed list).
type lexSource struct {
	key   string
	fixed []string
	buf   []string
	next  string // ids below this are still to come; "" from the top
	done  bool
}

// mergeNewest merges the sources newest first and returns up to limit ids
// below after, and whether more may follow. Each index is read in chunks
// (one pipelined round trip per round of refills).
func mergeNewest(ctx context.Context, rdb *goredis.Client, srcs []*lexSource, after uuid.UUID, limit int) ([]string, bool, error) {
	chunk := int64(max(8, limit/max(1, len(srcs))+1))
	start := ""
	if after != uuid.Nil {
		start = after.String()
	}
	for _, s := range srcs {
		s.next = start
		if s.fixed != nil {
			for _, id := range s.fixed {
				if start == "" || id < start {
					s.buf = append(s.buf, id)
				}
			}
			s.done = true
		}
	}
	refill := func() error {
		pipe := rdb.Pipeline()
		cmds := map[*lexSource]*goredis.StringSliceCmd{}
		for _, s := range srcs {
			if len(s.buf) == 0 && !s.done {
				max := "+"
				if s.next != "" {
					max = "(" + s.next
				}
				cmds[s] = pipe.ZRevRangeByLex(ctx, s.key, &goredis.ZRangeBy{Max: max, Min: "-", Count: chunk})
			}
		}
		if len(cmds) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
		for s, c := range cmds {
			s.buf = c.Val()
			s.done = int64(len(s.buf)) < chunk
			if len(s.buf) > 0 {
				s.next = s.buf[len(s.buf)-1]
			}
		}
		return nil
	}
	out := make([]string, 0, min(limit, 64))
	for len(out) < limit {
		if err := refill(); err != nil {
			return nil, false, err
		}
		var best *lexSource
		for _, s := range srcs {
			if len(s.buf) > 0 && (best == nil || s.buf[0] > best.buf[0]) {
				best = s
			}
		}
		if best == nil {
			return out, false, nil
		}
		out = append(out, best.buf[0])
		best.buf = best.buf[1:]
	}
	if err := refill(); err != nil {
		return nil, false, err
	}
	for _, s := range srcs {
		if len(s.buf) > 0 {
			return out, true, nil
		}
	}
	return out, false, nil
}

// Stats returns the counters; see ports.StatsReader. One script call reads
// the counters and the longest-waiting task of each priority.
func (b *Broker) Stats(ctx context.Context) (ports.Stats, error) {
	res, err := b.scripts.stats.Run(ctx, b.rdb, b.keys.all(), b.keys.tag).Slice()
	if err != nil {
		return ports.Stats{}, classify(err)
	}
	st := ports.Stats{ByType: map[string]map[domain.Status]int64{}}
	if len(res) == 0 {
		return st, nil
	}
	flat, _ := res[0].([]any)
	for i := 0; i+1 < len(flat); i += 2 {
		field, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		name, typ, ok := strings.Cut(field, "|")
		n, _ := strconv.ParseInt(val, 10, 64)
		status, err := domain.ParseStatus(name)
		if !ok || err != nil || n <= 0 {
			continue
		}
		if st.ByType[typ] == nil {
			st.ByType[typ] = map[domain.Status]int64{}
		}
		st.ByType[typ][status] = n
	}
	for _, v := range res[1:] {
		var s state
		raw, _ := v.(string)
		if json.Unmarshal([]byte(raw), &s) != nil {
			continue
		}
		st.NotePending(s.Type, fromNanos(s.Updated))
	}
	return st, nil
}

// idempotency records are stored as JSON under {PREFIX}:idem:<key>.
type idemRecord struct {
	Fingerprint string `json:"f"`
	Done        bool   `json:"d,omitempty"`
	Response    []byte `json:"r,omitempty"`
	Reserved    int64  `json:"at"` // Unix ms
}

// Reserve claims an idempotency key with SET NX; see
// ports.IdempotencyStore.
func (b *Broker) Reserve(ctx context.Context, key, fingerprint string, hold time.Duration) (ports.IdempotencyRecord, bool, error) {
	raw, err := json.Marshal(idemRecord{Fingerprint: fingerprint, Reserved: b.opts.Now().UnixMilli()})
	if err != nil {
		return ports.IdempotencyRecord{}, false, err
	}
	for i := 0; i < 3; i++ {
		ok, err := b.rdb.SetNX(ctx, b.keys.idem+key, raw, hold).Result()
		if err != nil {
			return ports.IdempotencyRecord{}, false, classify(err)
		}
		if ok {
			return ports.IdempotencyRecord{Fingerprint: fingerprint}, true, nil
		}
		got, err := b.rdb.Get(ctx, b.keys.idem+key).Bytes()
		if errors.Is(err, goredis.Nil) {
			continue // expired in between: try to claim it again
		}
		if err != nil {
			return ports.IdempotencyRecord{}, false, classify(err)
		}
		var rec idemRecord
		if err := json.Unmarshal(got, &rec); err != nil {
			return ports.IdempotencyRecord{}, false, fmt.Errorf("idempotency key %q: corrupt record: %w", key, err)
		}
		return ports.IdempotencyRecord{Fingerprint: rec.Fingerprint, Done: rec.Done, Response: rec.Response}, false, nil
	}
	return ports.IdempotencyRecord{}, false, fmt.Errorf("idempotency key %q kept changing: %w", key, domain.ErrUnavailable)
}

// Complete stores the response under a reserved key, kept until ttl after
// the reservation; see ports.IdempotencyStore.
func (b *Broker) Complete(ctx context.Context, key string, rec ports.IdempotencyRecord, ttl time.Duration) error {
	got, err := b.rdb.Get(ctx, b.keys.idem+key).Bytes()
	if err != nil {
		return classify(err)
	}
	var held idemRecord
	if err := json.Unmarshal(got, &held); err != nil {
		return err
	}
	left := time.UnixMilli(held.Reserved).Add(ttl).Sub(b.opts.Now())
	if left <= 0 {
		return b.rdb.Del(ctx, b.keys.idem+key).Err()
	}
	raw, err := json.Marshal(idemRecord{Fingerprint: rec.Fingerprint, Done: true, Response: rec.Response, Reserved: held.Reserved})
	if err != nil {
		return err
	}
	if err := b.rdb.Set(ctx, b.keys.idem+key, raw, left).Err(); err != nil {
		return classify(err)
	}
	return nil
}

// Release frees a reserved key; see ports.IdempotencyStore.
func (b *Broker) Release(ctx context.Context, key string) error {
	if err := b.rdb.Del(ctx, b.keys.idem+key).Err(); err != nil {
		return classify(err)
	}
	return nil
}

// Pause stops new attempts of typ on every instance; see ports.TypeAdmin.
func (b *Broker) Pause(ctx context.Context, typ string) error {
	if err := b.rdb.SAdd(ctx, b.keys.paused, typ).Err(); err != nil {
		return classify(err)
	}
	return nil
}

// Resume lets attempts of typ start again and wakes the instances that
// run it; see ports.TypeAdmin.
func (b *Broker) Resume(ctx context.Context, typ string) error {
	pipe := b.rdb.TxPipeline()
	pipe.SRem(ctx, b.keys.paused, typ)
	for _, k := range []string{b.keys.wakeOf(typ), b.keys.wake} {
		pipe.LPush(ctx, k, 1)
		pipe.LTrim(ctx, k, 0, 63)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return classify(err)
	}
	return nil
}

// Paused returns the paused types, sorted; see ports.TypeAdmin.
func (b *Broker) Paused(ctx context.Context) ([]string, error) {
	out, err := b.rdb.SMembers(ctx, b.keys.paused).Result()
	if err != nil {
		return nil, classify(err)
	}
	sort.Strings(out)
	return out, nil
}
