package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// The first key layout (before schemaVersion 2) kept a task as one JSON
// string, its running attempts as members "id|token:n:start_ns" of the
// running set (the record itself stayed as it was before the attempt), and
// finished tasks in a list. migrateV1 rewrites such a queue in place, so an
// upgrade keeps every task. Stop the instances of the older version first:
// they cannot read what this writes.

// recordV1 is a task as the first layout stored it.
type recordV1 struct {
	Type       string `json:"t"`
	Payload    string `json:"p"`
	Priority   int    `json:"pr"`
	MaxRetries int    `json:"mr"`
	Status     string `json:"s"`
	Attempts   int    `json:"a"`
	LastError  string `json:"e,omitempty"`
	Created    string `json:"c"`
	Updated    string `json:"u"`
	Started    string `json:"st,omitempty"`
	Finished   string `json:"f,omitempty"`
	Next       string `json:"n,omitempty"`
}

// convertV1Script replaces one v1 record by its hash, keeping its TTL,
// indexes and counts it, and moves its running attempt, if any, to the new
// running member.
// ARGV: tag, id, data, state, pttl_ms, old running member (or empty),
// lease_ms, status, type, finish ms. Returns 1 when it converted it.
var convertV1Script = goredis.NewScript(prelude + `
-- (The first layout had no fairness keys and the second layout's ready
-- set; migrateV2 moves its pending tasks on.)
local id = ARGV[2]
if redis.call('TYPE', rec(id)).ok ~= 'string' then return 0 end
redis.call('DEL', rec(id))
redis.call('HSET', rec(id), 'd', ARGV[3], 's', ARGV[4])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', rec(id), ARGV[5]) end
local st, ty = ARGV[8], ARGV[9]
if ARGV[6] ~= '' then
  redis.call('ZREM', RUNNING, ARGV[6])
  redis.call('ZADD', RUNNING, ARGV[7], id)
elseif st == 'succeeded' or st == 'failed' or st == 'cancelled' then
  redis.call('ZADD', finished_set(st), ARGV[10], id .. '|' .. st .. '|' .. ty)
end
if st ~= 'running' then redis.call('ZADD', idx(st, ty), 0, id) end
redis.call('HINCRBY', COUNTS, st .. '|' .. ty, 1)
return 1
`)

// migrationLock takes the lock under which one instance converts a queue
// while others refuse to start, and returns its release.
func migrationLock(ctx context.Context, rdb *goredis.Client, k keys, instance string) (unlock func(), err error) {
	lock := k.schema + ":migrating"
	ok, err := rdb.SetNX(ctx, lock, instance, 10*time.Minute).Result()
	if err != nil {
		return nil, fmt.Errorf("migrate queue: %w", err)
	}
	if !ok {
		return nil, errors.New("another instance is converting this queue from the older key layout; start again when it is done")
	}
	return func() { rdb.Del(context.WithoutCancel(ctx), lock) }, nil
}

// migrateV1 rewrites a v1 queue in the current layout, under a lock so
// several instances starting at once migrate it once. It is safe to run
// again after an interruption: it converts only what is still in v1 form.
func migrateV1(ctx context.Context, rdb *goredis.Client, k keys, instance string, log logrus.FieldLogger) error {
	unlock, err := migrationLock(ctx, rdb, k, instance)
	if err != nil {
		return err
	}
	defer unlock()
	started := time.Now()
	// The first layout's finished list has the name of the new sorted set:
	// move it aside (the records say what finished), and drop it at the
	// end.
	oldFinished := k.finished + ":v1"
	if typ, err := rdb.Type(ctx, k.finished).Result(); err != nil {
		return fmt.Errorf("migrate queue: %w", err)
	} else if typ == "list" {
		if err := rdb.Rename(ctx, k.finished, oldFinished).Err(); err != nil {
			return fmt.Errorf("migrate queue: %w", err)
		}
	}

	// Running attempts: member "id|token:n:start_ns", scored by lease.
	members, err := rdb.ZRangeWithScores(ctx, k.running, 0, -1).Result()
	if err != nil {
		return fmt.Errorf("migrate queue: read running set: %w", err)
	}
	running := map[string]goredis.Z{}
	for _, m := range members {
		if member, _ := m.Member.(string); strings.Contains(member, "|") {
			id, _, _ := strings.Cut(member, "|")
			running[id] = m
		}
	}

	converted := 0
	iter := rdb.ScanType(ctx, 0, k.task+"*", 500, "string").Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		n, err := convertV1(ctx, rdb, k, key, running[strings.TrimPrefix(key, k.task)])
		if err != nil {
			return fmt.Errorf("migrate queue: %s: %w", key, err)
		}
		converted += n
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("migrate queue: scan records: %w", err)
	}
	if err := rdb.Del(ctx, oldFinished).Err(); err != nil {
		return fmt.Errorf("migrate queue: %w", err)
	}
	if err := rdb.Set(ctx, k.schema, "2", 0).Err(); err != nil {
		return fmt.Errorf("migrate queue: %w", err)
	}
	log.WithFields(logrus.Fields{"tasks": converted, "running": len(running), "took_ms": time.Since(started).Milliseconds()}).
		Warn("converted the queue from the older key layout; attempts that older instances were running are recovered when their leases run out")
	return nil
}

// convertV1 rewrites one v1 record; m is its running member, if it has
// one. It returns 1 when it converted the record, 0 when it was gone or
// already converted.
func convertV1(ctx context.Context, rdb *goredis.Client, k keys, key string, m goredis.Z) (int, error) {
	pipe := rdb.Pipeline()
	get := pipe.Get(ctx, key)
	ttl := pipe.PTTL(ctx, key)
	if _, err := pipe.Exec(ctx); errors.Is(err, goredis.Nil) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	var r recordV1
	if err := json.Unmarshal([]byte(get.Val()), &r); err != nil {
		return 0, fmt.Errorf("corrupt record: %w", err)
	}
	d := data{Type: r.Type, MaxRetries: r.MaxRetries, Created: r.Created}
	payload := []byte(r.Payload)
	raw := len(payload) > 0 && json.Valid(payload)
	if len(payload) > 0 && !raw {
		d.PayloadString = &r.Payload
	}
	head, err := json.Marshal(d)
	if err != nil {
		return 0, err
	}
	rawData := string(head)
	if raw {
		rawData = string(head[:len(head)-1]) + `,"p":` + r.Payload + "}"
	}
	// The first layout counted no retries: each failed attempt before the
	// last used one.
	retries := r.Attempts
	switch r.Status {
	case "succeeded":
		retries--
	case "failed":
		retries = r.MaxRetries
	}
	st := state{
		Type: r.Type, Priority: r.Priority, Status: r.Status, Attempts: r.Attempts, Retries: min(max(retries, 0), r.MaxRetries),
		LastError: r.LastError, Updated: r.Updated, Started: r.Started, Finished: r.Finished, Next: r.Next,
	}
	member, leaseMs := "", ""
	if old, _ := m.Member.(string); old != "" {
		// The record held the state before the running attempt; the member
		// held the attempt. No instance of this version holds it: it is
		// recovered as a failed attempt when its lease runs out.
		startNs := old[strings.LastIndexByte(old, ':')+1:]
		member, leaseMs = old, strconv.FormatFloat(m.Score, 'f', 0, 64)
		st.PrevStarted, st.PrevUpdated = st.Started, st.Updated
		st.Status, st.Attempts, st.Started, st.Updated, st.Next = "running", r.Attempts+1, startNs, startNs, ""
		st.Token, st.Lease, st.Instance = "v1:"+old[strings.IndexByte(old, '|')+1:], leaseMs, "an instance of the older version"
		st.Score = strconv.FormatFloat(float64(9-r.Priority)*(1<<48), 'f', 0, 64)
	}
	rawState, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	finishedMs := "0"
	if f := fromNanos(r.Finished); !f.IsZero() {
		finishedMs = ms(f)
	}
	return convertV1Script.Run(ctx, rdb, k.all(), k.tag, strings.TrimPrefix(key, k.task), rawData, string(rawState),
		ttl.Val().Milliseconds(), member, leaseMs, st.Status, r.Type, finishedMs).Int()
}

// The second layout kept every pending task in one sorted set, {PREFIX}:ready,
// scored (9 - priority) * 2^48 + seq. migrateV2 moves them, in order, into
// the ready structure (see scripts.go), under the same lock as migrateV1.
// An attempt that an instance of the second layout started keeps its
// place in that score; place takes the sequence number out of it.
func migrateV2(ctx context.Context, rdb *goredis.Client, k keys, sc scripts, instance string, log logrus.FieldLogger) error {
	unlock, err := migrationLock(ctx, rdb, k, instance)
	if err != nil {
		return err
	}
	defer unlock()
	started := time.Now()
	moved, _ := rdb.ZCard(ctx, k.readyV2).Result()
	for {
		left, err := sc.convertV2.Run(ctx, rdb, k.all(), k.tag, k.readyV2).Int64()
		if err != nil {
			return fmt.Errorf("migrate queue: move pending tasks: %w", err)
		}
		if left == 0 {
			break
		}
	}
	if err := rdb.Set(ctx, k.schema, schemaVersion, 0).Err(); err != nil {
		return fmt.Errorf("migrate queue: %w", err)
	}
	log.WithFields(logrus.Fields{"pending": moved, "took_ms": time.Since(started).Milliseconds()}).
		Warn("converted the queue to the key layout with per-type queues and fairness keys")
	return nil
}
