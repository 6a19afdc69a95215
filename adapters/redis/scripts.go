package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// The scripts make every multi-key change atomic; they store and fence
// what the domain decided in Go, and decide nothing themselves beyond
// keeping each task in the set, the index and the counter of its status.
// Where a decision must be taken inside the script to be atomic (which
// pending task goes next, whether a type is under its limits), the
// script carries out the domain's rule (domain.Candidate.Outranks,
// domain.EffectiveLevel, domain.TypeLimits.Take) and a test holds the two
// to the same answers (TestScriptsFollowTheDomain).
//
// Every script takes the same KEYS (see keys.all) and the queue's tag
// "{PREFIX}:" as ARGV[1]; task records ("t:<id>"), list indexes
// ("idx:<status>:<type>") and the ready structure are built from the tag,
// so all keys of a queue share one Cluster slot. Type names cannot hold
// '|', so it separates the parts of those names.
//
// Where a task is kept, by status:
//   - pending: the ready structure, per type, priority and fairness key:
//     q|<type>|<priority>|<key> holds the key's tasks scored by sequence
//     number (FIFO); rr|<type>|<priority> is the round-robin of keys that
//     have tasks there, scored by turn; lv|<type> holds the priorities
//     that have a key in their round-robin. A key at its concurrency
//     limit leaves its round-robins and waits in blk|<key> until one of
//     its attempts ends. The counter pending counts them all, and ptypes
//     names the types that have any;
//   - scheduled, retrying: delayed, scored by due time (ms);
//   - running: running, scored by lease deadline (ms); the record's state
//     carries the attempt's token, which fences its outcome; krun counts
//     the running attempts of each fairness key;
//   - succeeded: finished; failed and cancelled: dead. Both scored by finish
//     time (ms), with members "id|status|type", so trimming them needs no
//     record (which may have expired).
//
// Every status but running also indexes the task in idx:<status>:<type>
// (all scores 0, so ids sort as strings: UUIDv7 strings sort by time), and
// the hash counts holds one counter per "status|type".
//
// Flow control keeps its shared state here too: paused (the paused
// types), buckets (each rate-limited type's token bucket, "tokens:ms"),
// cwait (types found at their concurrency limit: the end of one of their
// attempts wakes a fetcher) and the wake lists: wake|<type> for
// instances that run that type, wake for those that run every type.
//
// Numbers past 2^47 are passed to redis.call as strings formatted with
// %.0f, because Lua's default conversion keeps only 14 significant digits.
//
// Every script but enqueue is flagged allow-oom (on Redis 7 and later):
// they move existing tasks along and never grow memory by more than a
// few bytes, so a Redis at maxmemory still renews leases and records
// outcomes, while new submissions are refused.

// script is one Lua script: the helpers it uses (libs) and its body.
type script struct {
	name     string
	libs     string
	body     string
	allowOOM bool
}

// build returns s as a script to run by EVALSHA, for a server that does
// (Redis 7+) or does not support script flags.
func (s script) build(flags bool) *goredis.Script {
	if flags && s.allowOOM {
		return goredis.NewScript("#!lua flags=allow-oom\n" + s.libs + s.body)
	}
	return goredis.NewScript(s.libs + s.body)
}

// allScripts are the scripts the broker runs.
var allScripts = []*script{&enqueueScript, &dequeueScript, &settleScript, &updateScript, &deleteScript, &renewScript,
	&checkScript, &undoScript, &maintainScript, &statsScript, &repairScript, &convertV2Script}

// library is every script as one Redis function library (Redis 7+): its
// helpers are defined once, when the library loads, instead of on every
// call as an EVALSHA script defines them, which costs microseconds a
// call. Its name carries a hash of its code, so instances of different
// versions sharing a Redis each call their own.
type library struct {
	name, code string
}

func newLibrary() library {
	var body strings.Builder
	body.WriteString("\nlocal KEYS, ARGV, TAG, PENDING, RUNNING, DELAYED, FINISHED, DEAD, SEQ, WAKE, COUNTS\n")
	body.WriteString("local PTYPES, PAUSED, BUCKETS, KRUN, CWAIT, TOPS\nlocal touched = {}\n")
	body.WriteString(namesHelpers + preludeHelpers + waitingLib + promoteLib + flowLib)
	body.WriteString(`
local function setup(keys, args)
  KEYS, ARGV, TAG = keys, args, args[1]
  PENDING, RUNNING, DELAYED, FINISHED, DEAD, SEQ, WAKE, COUNTS = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8]
  PTYPES, PAUSED, BUCKETS, KRUN, CWAIT, TOPS = keys[9], keys[10], keys[11], keys[12], keys[13], keys[14]
  touched = {}
end
`)
	sum := sha1.Sum([]byte(body.String() + bodies()))
	name := "taskqueue_" + hex.EncodeToString(sum[:6])
	for _, s := range allScripts {
		flags := ""
		if s.allowOOM {
			flags = ", flags = {'allow-oom'}"
		}
		fmt.Fprintf(&body, "redis.register_function{function_name = '%s_%s'%s, callback = function(keys, args)\nsetup(keys, args)\n%s\nend}\n",
			name, s.name, flags, s.body)
	}
	return library{name: name, code: "#!lua name=" + name + "\n" + body.String()}
}

func bodies() string {
	var b strings.Builder
	for _, s := range allScripts {
		b.WriteString(s.body)
	}
	return b.String()
}

// op runs one script: as a function of the loaded library, or by EVALSHA
// (Redis before 7, or Options.NoFunctions).
type op struct {
	fn     string
	lib    library
	script *goredis.Script
}

// send queues or runs the script on c (a client or a pipeline).
func (o *op) send(ctx context.Context, c goredis.Cmdable, keys []string, args ...any) *goredis.Cmd {
	if o.fn != "" {
		return c.FCall(ctx, o.fn, keys, args...)
	}
	return o.script.EvalSha(ctx, c, keys, args...)
}

// Run runs the script on rdb, loading it (or the library) first if Redis
// lost it (a restart without persistence).
func (o *op) Run(ctx context.Context, rdb *goredis.Client, keys []string, args ...any) *goredis.Cmd {
	if o.fn == "" {
		return o.script.Run(ctx, rdb, keys, args...)
	}
	cmd := rdb.FCall(ctx, o.fn, keys, args...)
	if missing(cmd.Err()) {
		if err := rdb.FunctionLoadReplace(ctx, o.lib.code).Err(); err != nil {
			return cmd
		}
		cmd = rdb.FCall(ctx, o.fn, keys, args...)
	}
	return cmd
}

// missing reports whether err says Redis does not have the script or
// function called.
func missing(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "NOSCRIPT") || strings.Contains(err.Error(), "Function not found"))
}

// Every script runs its helpers' definitions on each call (Lua makes a
// closure of each), so a script takes only the parts it uses.

// names names the keys and builds the names of the per-task and per-type
// ones.
const names = namesBind + namesHelpers

// namesBind binds the keys of a script's call (in a library, setup does).
const namesBind = `
local TAG = ARGV[1]
local PENDING, RUNNING, DELAYED, FINISHED, DEAD, SEQ, WAKE, COUNTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local PTYPES, PAUSED, BUCKETS, KRUN, CWAIT, TOPS = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
-- touched holds the types whose next task may have changed; flush
-- brings their rank in tops up to date before the script returns.
local touched = {}
`

const namesHelpers = `
local BAND = 281474976710656
local function rec(id) return TAG .. 't:' .. id end
local function idx(st, ty) return TAG .. 'idx:' .. st .. ':' .. ty end
local function levels(ty) return TAG .. 'lv|' .. ty end
local function turns(ty, pr) return TAG .. 'rr|' .. ty .. '|' .. pr end
local function fifo(ty, pr, key) return TAG .. 'q|' .. ty .. '|' .. pr .. '|' .. key end
local function blocked(key) return TAG .. 'blk|' .. key end
local function num(x) return string.format('%.0f', x) end
`

// prelude is names plus what every script that moves tasks shares: where
// a task of each status is kept (place and unplace), the ready structure
// and the ranks in tops.
const prelude = names + preludeHelpers

const preludeHelpers = `
local function push_wake(k)
  if redis.call('LLEN', k) < 64 then redis.call('LPUSH', k, 1) end
end
-- wake tells idle fetchers that a task of type ty may be ready: those of
-- instances that run ty, and those of instances that run every type.
local function wake(ty)
  push_wake(WAKE .. '|' .. ty)
  push_wake(WAKE)
end
local function finished_set(st)
  if st == 'succeeded' then return FINISHED end
  return DEAD
end
-- index and unindex put a task into and out of the list index and the
-- counter of status st (running tasks are counted, not indexed).
local function index(id, st, ty)
  if st ~= 'running' then redis.call('ZADD', idx(st, ty), 0, id) end
  local n = redis.call('HINCRBY', COUNTS, st .. '|' .. ty, 1)
  if st == 'pending' and n == 1 then redis.call('SADD', PTYPES, ty) end
end
local function unindex(id, st, ty)
  if st ~= 'running' then redis.call('ZREM', idx(st, ty), id) end
  local n = redis.call('HINCRBY', COUNTS, st .. '|' .. ty, -1)
  if st == 'pending' and n <= 0 then redis.call('SREM', PTYPES, ty) end
end
-- enter gives key a turn in the round-robin of (ty, pr), at the back, or
-- at the front for a task handed back, unless it has one.
local function enter(ty, pr, key, front)
  local rr = turns(ty, pr)
  if redis.call('ZSCORE', rr, key) then return end
  local turn
  local first = front and redis.call('ZRANGE', rr, 0, 0, 'WITHSCORES') or {}
  if #first > 0 then turn = tonumber(first[2]) - 1 else turn = redis.call('INCR', SEQ) end
  if front or redis.call('EXISTS', rr) == 0 then touched[ty] = true end
  redis.call('ZADD', rr, num(turn), key)
  redis.call('ZADD', levels(ty), 9 - tonumber(pr), pr)
  wake(ty)
end
-- leave takes key out of the round-robin of (ty, pr): it has nothing
-- left there.
local function leave(ty, pr, key)
  touched[ty] = true
  local rr = turns(ty, pr)
  redis.call('ZREM', rr, key)
  if redis.call('EXISTS', rr) == 0 then redis.call('ZREM', levels(ty), pr) end
  if key ~= '' then redis.call('SREM', blocked(key), ty .. '|' .. pr) end
end
-- enqueue_ready puts a pending task into its key's FIFO: at seq (its old
-- place, when handed back: the key goes to the front of the round-robin)
-- or at the back ('').
local function enqueue_ready(id, ty, pr, key, seq)
  local front = seq ~= ''
  if front then
    seq = tonumber(seq) % BAND
    touched[ty] = true
  else
    seq = redis.call('INCR', SEQ)
  end
  if redis.call('ZADD', fifo(ty, pr, key), num(seq), id) == 1 then redis.call('INCR', PENDING) end
  if key == '' or redis.call('SISMEMBER', blocked(key), ty .. '|' .. pr) == 0 then enter(ty, pr, key, front) end
end
local function dequeue_ready(id, ty, pr, key)
  touched[ty] = true
  local q = fifo(ty, pr, key)
  if redis.call('ZREM', q, id) == 1 then redis.call('DECR', PENDING) end
  if redis.call('EXISTS', q) == 0 then leave(ty, pr, key) end
end
-- end_run counts an attempt of key out: the key's tasks that waited for
-- its concurrency limit take turns again (if it is still at its limit,
-- the next dequeue sets them aside again), and a type that waited for a
-- free slot wakes a fetcher.
local function end_run(ty, key)
  if key ~= '' then
    if redis.call('HINCRBY', KRUN, key, -1) <= 0 then redis.call('HDEL', KRUN, key) end
    local at = redis.call('SMEMBERS', blocked(key))
    if #at > 0 then
      table.sort(at)
      redis.call('DEL', blocked(key))
      for _, m in ipairs(at) do
        local t, p = string.match(m, '^(.*)|(%d)$')
        if t and redis.call('EXISTS', fifo(t, p, key)) == 1 then enter(t, p, key, false) end
      end
    end
  end
  if redis.call('SREM', CWAIT, ty) == 1 then wake(ty) end
end
-- refresh ranks type ty in tops by its next task (the oldest of the
-- front key at its highest level): (9 - level) * 2^48 + seq, the order
-- of domain.Candidate.Outranks without aging. A key at its limit may still
-- be at the front: the rank is never worse than the type's real next.
local function refresh(ty)
  while true do
    local top = redis.call('ZRANGE', levels(ty), 0, 0)
    if #top == 0 then break end
    local pr = top[1]
    local key = redis.call('ZRANGE', turns(ty, pr), 0, 0)
    if #key > 0 then
      local first = redis.call('ZRANGE', fifo(ty, pr, key[1]), 0, 0, 'WITHSCORES')
      if #first > 0 then
        redis.call('ZADD', TOPS, num((9 - tonumber(pr)) * BAND + tonumber(first[2])), ty)
        return
      end
      redis.call('ZREM', turns(ty, pr), key[1])
    end
    if redis.call('EXISTS', turns(ty, pr)) == 0 then redis.call('ZREM', levels(ty), pr) end
  end
  redis.call('ZREM', TOPS, ty)
end
local function flush()
  for ty in pairs(touched) do refresh(ty) end
  touched = {}
end
-- forget drops a finished task whose set member is m ("id|status|type"),
-- already out of its set.
local function forget(m)
  local id, st, ty = string.match(m, '^([^|]*)|([^|]*)|(.*)$')
  if id then
    redis.call('DEL', rec(id))
    unindex(id, st, ty)
  end
end
-- unplace takes a task out of the set, index and counter of status st.
local function unplace(id, st, ty, pr, key)
  if st == 'pending' then dequeue_ready(id, ty, pr, key)
  elseif st == 'scheduled' or st == 'retrying' then redis.call('ZREM', DELAYED, id)
  elseif st == 'running' then
    redis.call('ZREM', RUNNING, id)
    end_run(ty, key)
  else
    redis.call('ZREM', finished_set(st), id .. '|' .. st .. '|' .. ty)
    redis.call('PERSIST', rec(id))
  end
  unindex(id, st, ty)
end
-- place puts a task into the set, index and counter of status st. at is
-- for pending its old place in its key's FIFO ('' for the back), for
-- scheduled and retrying the due time, for running the lease deadline,
-- for a finished task the finish time; keep and cap are the finished
-- task's retention (ms; 0 drops it at once) and cap (0: none). It
-- returns false when the task was dropped.
local function place(id, st, ty, pr, key, at, keep, cap)
  if st == 'pending' then enqueue_ready(id, ty, pr, key, at)
  elseif st == 'scheduled' or st == 'retrying' then redis.call('ZADD', DELAYED, at, id)
  elseif st == 'running' then
    redis.call('ZADD', RUNNING, at, id)
    if key ~= '' then redis.call('HINCRBY', KRUN, key, 1) end
  else
    if tonumber(keep) <= 0 then
      redis.call('DEL', rec(id))
      return false
    end
    local set = finished_set(st)
    redis.call('PEXPIRE', rec(id), keep)
    redis.call('ZADD', set, at, id .. '|' .. st .. '|' .. ty)
    if tonumber(cap) > 0 then
      local over = redis.call('ZCARD', set) - tonumber(cap)
      if over > 0 then
        local old = redis.call('ZPOPMIN', set, over)
        for i = 1, #old, 2 do forget(old[i]) end
      end
    end
  end
  index(id, st, ty)
  return true
end
`

// waitingLib counts the tasks the queue size bounds.
const waitingLib = `
-- waiting counts the tasks waiting to run, which the queue size bounds.
local function waiting()
  return tonumber(redis.call('GET', PENDING) or '0') + redis.call('ZCARD', DELAYED)
end
`

// promoteLib makes due tasks pending.
const promoteLib = `
-- promote makes up to limit scheduled and retrying tasks whose due time
-- (ms) has come pending, at the back of their key's FIFO; they were
-- counted against the bound all along, so nothing refuses them.
local function promote(now_ms, now_ns, limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local raw = redis.call('HGET', rec(id), 's')
    if raw then
      local st = cjson.decode(raw)
      unplace(id, st.s, st.ty, st.pr, st.fk or '')
      st.s = 'pending'; st.n = nil; st.u = now_ns
      redis.call('HSET', rec(id), 's', cjson.encode(st))
      place(id, 'pending', st.ty, st.pr, st.fk or '', '', 0, 0)
    else
      redis.call('ZREM', DELAYED, id)
    end
  end
  return #due
end
`

// flowLib holds the domain's flow-control rules, as the dequeue script
// carries them out.
const flowLib = `
-- take is domain.TypeLimits.Take on the bucket of type ty (rate tokens
-- per period_ms, holding up to rate): it reports whether a token is
-- there, takes it when commit is set, and otherwise says in how many ms
-- one will be.
local function take(ty, rate, period_ms, now_ms, commit)
  local tokens = rate
  local raw = redis.call('HGET', BUCKETS, ty)
  if raw then
    local t, at = string.match(raw, '^([^:]*):(.*)$')
    tokens = math.min(rate, tonumber(t) + math.max(0, now_ms - tonumber(at)) * rate / period_ms)
  end
  if tokens >= 1 then
    if commit then redis.call('HSET', BUCKETS, ty, string.format('%.17g', tokens - 1) .. ':' .. num(now_ms)) end
    return true, 0
  end
  return false, math.max(1, math.ceil((1 - tokens) * period_ms / rate))
end
-- effective is domain.EffectiveLevel: one level up per aging_ms waited.
local function effective(level, waited_ms, aging_ms)
  if aging_ms <= 0 or waited_ms < aging_ms then return level end
  return math.min(9, level + math.min(math.floor(waited_ms / aging_ms), 9))
end
-- outranks is domain.Candidate.Outranks on candidates that carry their
-- effective level (eff) and sequence number (seq).
local function outranks(c, o)
  if c.eff ~= o.eff then return c.eff > o.eff end
  return c.seq < o.seq
end
`

// enqueueScript stores new tasks, all or none, unless the queue cannot
// take them all under its limit of tasks waiting to run.
// ARGV: tag, limit, then per task: id, data, state, status, type,
// priority, due ms (scheduled) or ”, fairness key.
// Returns 1 when stored, 0 when full, -1 when an id exists.
var enqueueScript = script{name: "enqueue", libs: prelude + waitingLib, body: `
local n = (#ARGV - 2) / 8
if waiting() + n > tonumber(ARGV[2]) then return 0 end
for i = 3, #ARGV, 8 do
  if redis.call('EXISTS', rec(ARGV[i])) == 1 then return -1 end
end
for i = 3, #ARGV, 8 do
  redis.call('HSET', rec(ARGV[i]), 'd', ARGV[i + 1], 's', ARGV[i + 2])
  local at = ''
  if ARGV[i + 3] == 'scheduled' then at = ARGV[i + 6] end
  place(ARGV[i], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 7], at, 0, 0)
end
flush()
return 1
`}

// dequeueScript promotes due tasks, then starts up to count pending tasks,
// each time the one that goes next (domain.Candidate.Outranks) among the
// heads of the types this instance may start now: it runs them, they are
// not paused, under their concurrency limit and with a rate token, and
// the front key of the round-robin is under the key limit. Each task's
// state becomes running with its attempt number one higher, its token,
// lease deadline and instance, and it moves from its FIFO to running, in
// one step. A key that had its turn goes to the back of its round-robin.
// ARGV: tag, now_ms, now_ns, lease_ms, count, token prefix, instance,
// aging_ms (0: strict order), key limit (0: none), 'only' (the types
// listed) or 'all' (every type with pending tasks), then per type: name,
// concurrency, rate, period_ms (0 for no limit).
// Returns {started, earliest due ms or -1, id, data, state, ...}: the
// earliest time a delayed task is due or a rate token comes.
var dequeueScript = script{name: "dequeue", allowOOM: true, libs: prelude + promoteLib + flowLib, body: `
local now_ms = tonumber(ARGV[2])
promote(ARGV[2], ARGV[3], 100)
flush()
local count, aging, keylimit = tonumber(ARGV[5]), tonumber(ARGV[8]), tonumber(ARGV[9])
local limits, types = {}, {}
for i = 11, #ARGV, 4 do
  limits[ARGV[i]] = {c = tonumber(ARGV[i + 1]), r = tonumber(ARGV[i + 2]), p = tonumber(ARGV[i + 3])}
  table.insert(types, ARGV[i])
end
if ARGV[10] == 'all' then
  types = redis.call('SMEMBERS', PTYPES)
  table.sort(types)
end
local rate_wait = -1
local paused = {}
for _, ty in ipairs(redis.call('SMEMBERS', PAUSED)) do paused[ty] = true end
-- limits_of returns the limits of ty, or nil when it has none.
local function limits_of(ty)
  local l = limits[ty]
  if l and (l.c > 0 or l.r > 0) then return l end
  return nil
end
-- eligible reports whether an attempt of ty may start now.
local function eligible(ty)
  if paused[ty] then return false end
  local l = limits_of(ty)
  if not l then return true end
  if redis.call('EXISTS', levels(ty)) == 0 then return false end
  if l.c > 0 and tonumber(redis.call('HGET', COUNTS, 'running|' .. ty) or '0') >= l.c then
    redis.call('SADD', CWAIT, ty)
    return false
  end
  if l.r > 0 then
    local ok, w = take(ty, l.r, l.p, now_ms, false)
    if not ok then
      if rate_wait < 0 or w < rate_wait then rate_wait = w end
      return false
    end
  end
  return true
end
-- head returns the task whose turn it is at (ty, pr): the oldest of the
-- front key of the round-robin. Keys at their limit leave the round-robin.
local function head(ty, pr)
  local rr = turns(ty, pr)
  while true do
    local front = redis.call('ZRANGE', rr, 0, 0)
    if #front == 0 then
      redis.call('ZREM', levels(ty), pr)
      return nil
    end
    local key = front[1]
    if keylimit > 0 and key ~= '' and tonumber(redis.call('HGET', KRUN, key) or '0') >= keylimit then
      redis.call('ZREM', rr, key)
      redis.call('SADD', blocked(key), ty .. '|' .. pr)
      touched[ty] = true
    else
      local first = redis.call('ZRANGE', fifo(ty, pr, key), 0, 0, 'WITHSCORES')
      if #first > 0 then
        return {ty = ty, pr = pr, key = key, id = first[1], seq = tonumber(first[2]), eff = tonumber(pr)}
      end
      redis.call('ZREM', rr, key)
    end
    if redis.call('EXISTS', rr) == 0 then redis.call('ZREM', levels(ty), pr) end
  end
end
-- candidate returns the task of ty that goes next, or false.
local function candidate(ty)
  if not eligible(ty) then return false end
  if aging <= 0 then
    while true do
      local top = redis.call('ZRANGE', levels(ty), 0, 0)
      if #top == 0 then return false end
      local c = head(ty, top[1])
      if c then return c end
    end
  end
  local best = false
  for _, pr in ipairs(redis.call('ZRANGE', levels(ty), 0, -1)) do
    local c = head(ty, pr)
    if c then
      local raw = redis.call('HGET', rec(c.id), 's')
      local since = raw and tonumber(cjson.decode(raw).u) or 0
      c.eff = effective(c.eff, now_ms - since / 1000000, aging)
      if not best or outranks(c, best) then best = c end
    end
  end
  return best
end
-- The types to look at, in order: without aging, those this instance
-- runs as tops ranks them, each with the rank of its next task, which
-- the type's real next task never beats; they are looked at (opened)
-- only while they may beat the best task found so far. With aging,
-- every type, opened at once.
local order, bound = {}, {}
if aging <= 0 then
  local ranked = redis.call('ZRANGE', TOPS, 0, -1, 'WITHSCORES')
  for i = 1, #ranked, 2 do
    if ARGV[10] == 'all' or limits[ranked[i]] then
      table.insert(order, ranked[i]); table.insert(bound, tonumber(ranked[i + 1]))
    end
  end
else
  order = types
end
local function rank(c) return (9 - c.eff) * BAND + c.seq end
local cands, opened = {}, 0
local function open_next()
  opened = opened + 1
  cands[opened] = candidate(order[opened])
end
if aging > 0 then
  while opened < #order do open_next() end
end
local deadline = num(now_ms + tonumber(ARGV[4]))
local out = {0, -1}
local started = 0
-- pick sets bi and ri to the best and the runner-up opened candidates.
local bi, ri
local function pick()
  bi, ri = nil, nil
  for i = 1, opened do
    local c = cands[i]
    if c then
      if not bi or outranks(c, cands[bi]) then
        ri = bi; bi = i
      elseif not ri or outranks(c, cands[ri]) then
        ri = i
      end
    end
  end
end
while started < count do
  -- The next task is the best candidate's; the runner-up (or the bound of
  -- the next type not yet opened) bounds how many more it may take at once.
  pick()
  while opened < #order and (not bi or bound[opened + 1] < rank(cands[bi])) do
    open_next()
    pick()
  end
  if not bi then break end
  local c = cands[bi]
  local q, rr = fifo(c.ty, c.pr, c.key), turns(c.ty, c.pr)
  local ids, seqs = {c.id}, {c.seq}
  -- A key alone in its round-robin, of a type without limits, with no
  -- key limit on it and strict order, takes its next tasks in one go: as
  -- many as are wanted that still go before every other type's next.
  local single = aging <= 0 and not limits_of(c.ty) and (keylimit <= 0 or c.key == '') and redis.call('ZCARD', rr) == 1
  if single and count - started > 1 then
    local limit = nil
    if ri then limit = rank(cands[ri]) end
    if opened < #order and (not limit or bound[opened + 1] < limit) then limit = bound[opened + 1] end
    local upto = '+inf'
    if limit and limit - (9 - c.eff) * BAND < BAND then upto = '(' .. num(limit - (9 - c.eff) * BAND) end
    local more = redis.call('ZRANGEBYSCORE', q, '(' .. num(c.seq), upto, 'WITHSCORES', 'LIMIT', 0, count - started - 1)
    for i = 1, #more, 2 do
      table.insert(ids, more[i]); table.insert(seqs, tonumber(more[i + 1]))
    end
  end
  redis.call('ZREM', q, unpack(ids))
  redis.call('DECRBY', PENDING, #ids)
  touched[c.ty] = true
  local left = redis.call('EXISTS', q) == 1
  if not left then
    leave(c.ty, c.pr, c.key)
  elseif not single then
    redis.call('ZADD', rr, redis.call('INCR', SEQ), c.key)
  end
  local l = limits[c.ty]
  for j, id in ipairs(ids) do
    local fields = redis.call('HMGET', rec(id), 'd', 's')
    if fields[1] and fields[2] then
      local st = cjson.decode(fields[2])
      unindex(id, 'pending', st.ty)
      st.ps = st.st; st.pu = st.u
      st.s = 'running'; st.a = st.a + 1; st.st = ARGV[3]; st.u = ARGV[3]; st.n = nil
      st.k = ARGV[6] .. ':' .. (started + 1); st.l = deadline; st.i = ARGV[7]; st.q = num(seqs[j])
      local enc = cjson.encode(st)
      redis.call('HSET', rec(id), 's', enc)
      place(id, 'running', st.ty, st.pr, c.key, deadline, 0, 0)
      if l and l.r > 0 then take(c.ty, l.r, l.p, now_ms, true) end
      table.insert(out, id); table.insert(out, fields[1]); table.insert(out, enc)
      started = started + 1
    end
  end
  if single and left then
    -- Same key, same level, nothing else changed: its next task is next.
    local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    cands[bi] = {ty = c.ty, pr = c.pr, key = c.key, id = first[1], seq = tonumber(first[2]), eff = c.eff}
  elseif aging <= 0 and not limits_of(c.ty) and redis.call('EXISTS', rr) == 1 then
    -- Other keys wait at this level, still the type's highest: the next
    -- key's turn (or, should every key be at its limit, a fresh look).
    cands[bi] = head(c.ty, c.pr) or candidate(c.ty)
  else
    cands[bi] = candidate(c.ty)
  end
  if keylimit > 0 and c.key ~= '' then
    for i = 1, opened do
      local o = cands[i]
      if o and i ~= bi and o.key == c.key then cands[i] = candidate(o.ty) end
    end
  end
end
out[1] = started
-- Pass the wake-up on: tasks this call could not take may be another
-- instance's to take.
if started == count then
  for i = 1, opened do
    if cands[i] then wake(cands[i].ty) end
  end
  if opened < #order then wake(order[opened + 1]) end
end
-- A type's candidate is its next task: rank it without looking again.
if aging <= 0 then
  for i = 1, opened do
    local c = cands[i]
    if c and touched[c.ty] then
      redis.call('ZADD', TOPS, num(rank(c)), c.ty)
      touched[c.ty] = nil
    end
  end
end
flush()
local first = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
local due = -1
if #first > 0 then due = tonumber(first[2]) end
if rate_wait >= 0 and (due < 0 or now_ms + rate_wait < due) then due = now_ms + rate_wait end
out[2] = due
return out
`}

// settleScript stores the outcome of an attempt if the task's state still
// carries the attempt's token and says running. With expired_ms set it
// also requires the lease to have run out by then (recovery of a dead
// instance's task).
// ARGV: tag, id, token, state, status, at, keep, cap, expired_ms, result.
// at is the due time (retrying), the old place in its key's FIFO
// (pending: handed back) or the finish time; keep and cap as for place;
// result, when not empty, is stored in the record's field r (a task that
// runs again has none: updateScript removes it).
// Returns 1 when stored, 2 when this attempt's owner already stored it
// (a retry after a lost reply), 0 when the attempt is no longer current.
var settleScript = script{name: "settle", allowOOM: true, libs: prelude, body: `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 0 end
local cur = cjson.decode(raw)
if cur.k ~= ARGV[3] then return 0 end
if cur.s ~= 'running' then return 2 end
if ARGV[9] ~= '' then
  local lease = redis.call('ZSCORE', RUNNING, id)
  if lease and tonumber(lease) > tonumber(ARGV[9]) then return 0 end
end
unplace(id, 'running', cur.ty, cur.pr, cur.fk or '')
redis.call('HSET', rec(id), 's', ARGV[4])
if ARGV[10] ~= '' then redis.call('HSET', rec(id), 'r', ARGV[10]) end
place(id, ARGV[5], cur.ty, cur.pr, cur.fk or '', ARGV[6], ARGV[7], ARGV[8])
flush()
return 1
`}

// updateScript replaces a task's state if it is still exactly the one the
// caller read (compare and set), and moves the task from the set of its
// old status to the one of its new status. A task that comes to wait to
// run is refused when the queue is full.
// ARGV: tag, id, expected state, state, old status, new status, type,
// priority, at, keep, cap, limit.
// Returns 'ok', 'conflict' (changed meanwhile: read again), 'gone' or
// 'full'.
var updateScript = script{name: "update", allowOOM: true, libs: prelude + waitingLib, body: `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 'gone' end
if raw ~= ARGV[3] then return 'conflict' end
local key = cjson.decode(raw).fk or ''
local waits = {scheduled = true, pending = true, retrying = true}
if waits[ARGV[6]] and not waits[ARGV[5]] then
  if waiting() >= tonumber(ARGV[12]) then return 'full' end
end
unplace(id, ARGV[5], ARGV[7], ARGV[8], key)
redis.call('HSET', rec(id), 's', ARGV[4])
if ARGV[6] ~= 'succeeded' then redis.call('HDEL', rec(id), 'r') end
place(id, ARGV[6], ARGV[7], ARGV[8], key, ARGV[9], ARGV[10], ARGV[11])
flush()
return 'ok'
`}

// deleteScript removes a task if its state is still exactly the one the
// caller read. ARGV: tag, id, expected state, status, type.
// Returns 'ok', 'conflict' or 'gone'.
var deleteScript = script{name: "delete", allowOOM: true, libs: prelude, body: `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 'gone' end
if raw ~= ARGV[3] then return 'conflict' end
local st = cjson.decode(raw)
unplace(id, ARGV[4], ARGV[5], st.pr, st.fk or '')
redis.call('DEL', rec(id))
flush()
return 'ok'
`}

// renewScript extends the leases of attempts this instance still runs and
// writes the new deadline into their state.
// ARGV: tag, deadline_ms, id, token, id, token, ...
// Returns the ids whose attempt is no longer this instance's (recovered
// elsewhere, or cancelled); an attempt its owner already settled is not
// among them.
var renewScript = script{name: "renew", allowOOM: true, libs: names, body: `
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', rec(id), 's')
  local st = raw and cjson.decode(raw)
  if st and st.k == token then
    if st.s == 'running' then
      redis.call('ZADD', RUNNING, 'XX', ARGV[2], id)
      st.l = ARGV[2]
      redis.call('HSET', rec(id), 's', cjson.encode(st))
    end
  else
    table.insert(lost, id)
  end
end
return lost
`}

// checkScript reads, without writing, which of this instance's attempts
// no longer count: their task was cancelled or taken over.
// ARGV: tag, id, token, id, token, ... Returns those ids.
var checkScript = script{name: "check", allowOOM: true, libs: names, body: `
local gone = {}
for i = 2, #ARGV, 2 do
  local raw = redis.call('HGET', rec(ARGV[i]), 's')
  local st = raw and cjson.decode(raw)
  if not st or st.k ~= ARGV[i + 1] then table.insert(gone, ARGV[i]) end
end
return gone
`}

// undoScript puts back attempts that were started but never given to a
// handler, as if they had never started: the attempt count, start and
// update times go back, and the task returns to its old place in its
// key's FIFO, its key to the front of the round-robin. It takes either
// (id, token) pairs, or token prefixes of dequeue calls whose reply was
// lost (then it looks through the running set, which only happens after
// an outage).
// ARGV: tag, 'ids' or 'prefixes', ... Returns how many it put back.
var undoScript = script{name: "undo", allowOOM: true, libs: prelude, body: `
local function undo(id, st)
  local q = st.q
  unplace(id, 'running', st.ty, st.pr, st.fk or '')
  st.s = 'pending'; st.a = st.a - 1; st.st = st.ps; st.u = st.pu
  st.ps = nil; st.pu = nil; st.k = nil; st.l = nil; st.i = nil; st.q = nil
  redis.call('HSET', rec(id), 's', cjson.encode(st))
  place(id, 'pending', st.ty, st.pr, st.fk or '', q, 0, 0)
end
local function running_state(id)
  local raw = redis.call('HGET', rec(id), 's')
  if not raw then return nil end
  local st = cjson.decode(raw)
  if st.s ~= 'running' or not st.k or not st.q then return nil end
  return st
end
local n = 0
if ARGV[2] == 'ids' then
  for i = 3, #ARGV, 2 do
    local st = running_state(ARGV[i])
    if st and st.k == ARGV[i + 1] then undo(ARGV[i], st); n = n + 1 end
  end
else
  for _, id in ipairs(redis.call('ZRANGE', RUNNING, 0, -1)) do
    local st = running_state(id)
    if st then
      for i = 3, #ARGV do
        if string.sub(st.k, 1, #ARGV[i]) == ARGV[i] then undo(id, st); n = n + 1; break end
      end
    end
  end
end
flush()
return n
`}

// maintainScript promotes due tasks, forgets finished tasks whose
// retention has passed (their records expire at the same time; this trims
// the finished indexes and counters), and returns up to 100 running tasks
// whose lease has expired.
// ARGV: tag, now_ms, now_ns, retention_ms, failed_retention_ms.
var maintainScript = script{name: "maintain", allowOOM: true, libs: prelude + promoteLib, body: `
promote(ARGV[2], ARGV[3], 1000)
for k, set in ipairs({FINISHED, DEAD}) do
  local keep = tonumber(ARGV[3 + k])
  local cutoff = string.format('%.0f', tonumber(ARGV[2]) - keep)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', set, m)
    forget(m)
  end
end
-- Re-rank every type with pending tasks: tops is kept up to date by
-- every script; this mends it within a tick should it ever drift.
for _, ty in ipairs(redis.call('SMEMBERS', PTYPES)) do touched[ty] = true end
flush()
return redis.call('ZRANGEBYSCORE', RUNNING, '-inf', ARGV[2], 'LIMIT', 0, 100)
`}

// statsScript returns the counters and the state of each task next in
// line: per type with pending tasks, per priority, the oldest task of the
// key whose turn it is.
// ARGV: tag. Returns {counts (flat field, value, ...), state, state, ...}.
var statsScript = script{name: "stats", allowOOM: true, libs: names, body: `
local out = {redis.call('HGETALL', COUNTS)}
for _, ty in ipairs(redis.call('SMEMBERS', PTYPES)) do
  for _, pr in ipairs(redis.call('ZRANGE', levels(ty), 0, -1)) do
    local key = redis.call('ZRANGE', turns(ty, pr), 0, 0)
    if #key > 0 then
      local first = redis.call('ZRANGE', fifo(ty, pr, key[1]), 0, 0)
      local raw = #first > 0 and redis.call('HGET', rec(first[1]), 's')
      if raw then table.insert(out, raw) end
    end
  end
end
return out
`}

// repairScript puts a task that no set holds back where its state says it
// belongs, index included (its counters are left as they are). A running task
// with no lease gets an expired one, so recovery fails that attempt under
// the retry policy.
// ARGV: tag, id. Returns 1 when it repaired something.
var repairScript = script{name: "repair", allowOOM: true, libs: prelude, body: `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 0 end
local st = cjson.decode(raw)
local key = st.fk or ''
if redis.call('ZSCORE', fifo(st.ty, st.pr, key), id) then return 0 end
for _, set in ipairs({DELAYED, RUNNING}) do
  if redis.call('ZSCORE', set, id) then return 0 end
end
if st.s == 'pending' then
  enqueue_ready(id, st.ty, st.pr, key, '')
  redis.call('DECR', PENDING) -- it counted all along
elseif st.s == 'retrying' then
  redis.call('ZADD', DELAYED, string.format('%.0f', math.floor(tonumber(st.n or '0') / 1000000)), id)
elseif st.s == 'scheduled' then
  redis.call('ZADD', DELAYED, string.format('%.0f', math.floor(tonumber(st.ra or '0') / 1000000)), id)
elseif st.s == 'running' then
  redis.call('ZADD', RUNNING, 0, id)
  return 1
else
  return 0
end
redis.call('ZADD', idx(st.s, st.ty), 0, id)
flush()
return 1
`}

// convertV2Script moves up to 500 pending tasks from the second layout's
// one ready set (scored (9 - priority) * 2^48 + seq) into the ready
// structure, in order; they are indexed and counted already.
// ARGV: tag, old ready key. Returns how many are left to move.
var convertV2Script = script{name: "convertV2", allowOOM: true, libs: prelude, body: `
local popped = redis.call('ZPOPMIN', ARGV[2], 500)
for i = 1, #popped, 2 do
  local id = popped[i]
  local raw = redis.call('HGET', rec(id), 's')
  if raw then
    local st = cjson.decode(raw)
    enqueue_ready(id, st.ty, st.pr, st.fk or '', popped[i + 1])
    redis.call('SADD', PTYPES, st.ty)
  end
end
flush()
return redis.call('ZCARD', ARGV[2])
`}
