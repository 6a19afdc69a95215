package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts make every multi-key change atomic; they store and fence
// what the domain decided in Go, and decide nothing themselves beyond
// moving a task between sets. Task record keys are built inside the
// scripts from the prefix (ARGV) and an id; they share the hash tag of
// the declared keys, so all keys of a queue live in one Cluster slot.
//
// Scores in the ready set are (9 - priority) * 2^48 + seq: ZPOPMIN gives
// the highest priority first and, within it, the lowest sequence number:
// one global order for every instance. Numbers past 2^47 are passed to
// redis.call as strings formatted with %.0f, because Lua's default
// conversion keeps only 14 significant digits.
//
// A running attempt is its task's id in the running set, scored by the
// lease deadline, and the record's state says running with the attempt's
// token. The token, unique per attempt, is the fence: an outcome is
// stored only while the state still carries its token and says running.
//
// Every script but enqueue is flagged allow-oom (on Redis 7 and later):
// they move existing tasks along and never grow memory by more than a
// few bytes, so a Redis at maxmemory still renews leases and records
// outcomes, while new submissions are refused.

// script is one Lua script, built for the server's version.
type script struct {
	body     string
	allowOOM bool
}

// build returns s for a server that does (Redis 7+) or does not support
// script flags.
func (s script) build(flags bool) *goredis.Script {
	if flags && s.allowOOM {
		return goredis.NewScript("#!lua flags=allow-oom\n" + s.body)
	}
	return goredis.NewScript(s.body)
}

const scoreFn = `
local function score(pr, seq)
  return string.format('%.0f', (9 - tonumber(pr)) * 281474976710656 + seq)
end
`

// enqueueScript stores a new pending task unless the queue already holds
// its limit of tasks waiting to run (ready and delayed).
// KEYS: ready, delayed, seq, wake, task. ARGV: limit, data, state, id,
// priority. Returns 1 when stored, 0 when full, -1 when the id exists.
var enqueueScript = script{body: scoreFn + `
local pending = redis.call('ZCARD', KEYS[1])
if pending + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[5], 'd', ARGV[2], 's', ARGV[3])
redis.call('ZADD', KEYS[1], score(ARGV[5], seq), ARGV[4])
-- Idle fetchers sleep only when they found the ready set empty, so only
-- the first task into an empty set needs to wake one; dequeue passes the
-- wake-up on while tasks remain.
if pending == 0 then redis.call('LPUSH', KEYS[4], 1) end
return 1
`}

// promoteDue is shared by the dequeue and maintenance scripts: it moves up
// to limit retrying tasks whose due time (ms) has come to the back of
// their priority in the ready set; they were counted against the bound
// all along, so nothing refuses them.
const promoteDue = scoreFn + `
local function promote(ready, delayed, seq, wake, prefix, now_ms, now_ns, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local key = prefix .. id
    local raw = redis.call('HGET', key, 's')
    if raw then
      local st = cjson.decode(raw)
      st.s = 'pending'; st.n = nil; st.u = now_ns
      redis.call('HSET', key, 's', cjson.encode(st))
      redis.call('ZADD', ready, score(st.pr, redis.call('INCR', seq)), id)
    end
  end
  if #due > 0 and redis.call('LLEN', wake) < 64 then redis.call('LPUSH', wake, 1) end
  return #due
end
`

// dequeueScript promotes due retries, then starts up to count pending
// tasks: each one's state becomes running with its attempt number one
// higher, its token, lease deadline and instance, and it moves from the
// ready set to the running set, in one step.
// KEYS: ready, running, delayed, seq, wake.
// ARGV: prefix, now_ms, now_ns, lease_ms, count, token prefix, instance.
// Returns {ready left, earliest retry due ms or -1, id, data, state, ...}.
var dequeueScript = script{allowOOM: true, body: promoteDue + `
promote(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], 100)
local out = {0, -1}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[5]))
local deadline = string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = ARGV[1] .. id
  local fields = redis.call('HMGET', key, 'd', 's')
  if fields[1] and fields[2] then
    local st = cjson.decode(fields[2])
    st.ps = st.st; st.pu = st.u
    st.s = 'running'; st.a = st.a + 1; st.st = ARGV[3]; st.u = ARGV[3]; st.n = nil
    st.k = ARGV[6] .. ':' .. ((i + 1) / 2); st.l = deadline; st.i = ARGV[7]; st.q = popped[i + 1]
    local enc = cjson.encode(st)
    redis.call('HSET', key, 's', enc)
    redis.call('ZADD', KEYS[2], deadline, id)
    table.insert(out, id); table.insert(out, fields[1]); table.insert(out, enc)
  end
end
local left = redis.call('ZCARD', KEYS[1])
out[1] = left
if left > 0 and redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], 1) end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #first > 0 then out[2] = tonumber(first[2]) end
return out
`}

// settleScript stores the outcome of an attempt if the task's state still
// carries the attempt's token and says running. With ARGV expired_ms set
// it also requires the lease to have run out by then (recovery of a dead
// instance's task).
// KEYS: running, delayed, ready, finished, wake.
// ARGV: prefix, id, token, state, kind, score_or_due, retention_ms,
//
//	max_finished, expired_ms, now_ms.
//
// kind is 'finished', 'retry' (score_or_due is the due time in ms) or
// 'pending' (handed back: score_or_due is its old ready score).
// Returns 1 when stored, 2 when this attempt's owner already stored it
// (a retry after a lost reply), 0 when the attempt is no longer current.
var settleScript = script{allowOOM: true, body: `
local id = ARGV[2]
local key = ARGV[1] .. id
local raw = redis.call('HGET', key, 's')
if not raw then return 0 end
local cur = cjson.decode(raw)
if cur.k ~= ARGV[3] then return 0 end
if cur.s ~= 'running' then return 2 end
if ARGV[9] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[1], id)
  if lease and tonumber(lease) > tonumber(ARGV[9]) then return 0 end
end
redis.call('ZREM', KEYS[1], id)
redis.call('HSET', key, 's', ARGV[4])
local kind = ARGV[5]
if kind == 'finished' then
  local keep, cap = tonumber(ARGV[7]), tonumber(ARGV[8])
  if keep <= 0 then
    redis.call('DEL', key)
    return 1
  end
  redis.call('PEXPIRE', key, keep)
  redis.call('ZADD', KEYS[4], ARGV[10], id)
  if cap > 0 then
    local over = redis.call('ZCARD', KEYS[4]) - cap
    if over > 0 then
      local old = redis.call('ZPOPMIN', KEYS[4], over)
      for i = 1, #old, 2 do redis.call('DEL', ARGV[1] .. old[i]) end
    end
  end
  return 1
end
if kind == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[6], id)
else
  redis.call('ZADD', KEYS[3], ARGV[6], id)
end
if redis.call('LLEN', KEYS[5]) < 64 then redis.call('LPUSH', KEYS[5], 1) end
return 1
`}

// renewScript extends the leases of attempts this instance still runs and
// writes the new deadline into their state.
// KEYS: running. ARGV: prefix, deadline_ms, id, token, id, token, ...
// Returns the ids whose attempt is no longer this instance's (recovered
// elsewhere); an attempt its owner already settled is not lost.
var renewScript = script{allowOOM: true, body: `
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = ARGV[1] .. id
  local raw = redis.call('HGET', key, 's')
  local st = raw and cjson.decode(raw)
  if st and st.k == token then
    if st.s == 'running' then
      redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
      st.l = ARGV[2]
      redis.call('HSET', key, 's', cjson.encode(st))
    end
  else
    table.insert(lost, id)
  end
end
return lost
`}

// undoScript puts back attempts that were started but never given to a
// handler, as if they had never started: the attempt count, start and
// update times go back, and the task returns to its old place in the
// ready set. It takes either (id, token) pairs, or token prefixes of
// dequeue calls whose reply was lost (then it looks through the running
// set, which only happens after an outage).
// KEYS: running, ready, wake. ARGV: prefix, 'ids' or 'prefixes', ...
// Returns how many attempts it put back.
var undoScript = script{allowOOM: true, body: `
local prefix = ARGV[1]
local function undo(id, st)
  st.s = 'pending'; st.a = st.a - 1; st.st = st.ps; st.u = st.pu
  local q = st.q
  st.ps = nil; st.pu = nil; st.k = nil; st.l = nil; st.i = nil; st.q = nil
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', prefix .. id, 's', cjson.encode(st))
  redis.call('ZADD', KEYS[2], q, id)
end
local function running_state(id)
  local raw = redis.call('HGET', prefix .. id, 's')
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
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local st = running_state(id)
    if st then
      for i = 3, #ARGV do
        if string.sub(st.k, 1, #ARGV[i]) == ARGV[i] then undo(id, st); n = n + 1; break end
      end
    end
  end
end
if n > 0 then redis.call('LPUSH', KEYS[3], 1) end
return n
`}

// maintainScript promotes due retries, forgets finished tasks whose
// retention has passed (their records have expired; this trims the
// finished index by time), and returns up to 100 running tasks whose
// lease has expired.
// KEYS: ready, running, delayed, seq, wake, finished.
// ARGV: prefix, now_ms, now_ns, retention_ms.
var maintainScript = script{allowOOM: true, body: promoteDue + `
promote(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], 1000)
local keep = tonumber(ARGV[4])
if keep > 0 then
  local cutoff = string.format('%.0f', tonumber(ARGV[2]) - keep)
  local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', cutoff, 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do redis.call('DEL', ARGV[1] .. id) end
  if #old > 0 then redis.call('ZREM', KEYS[6], unpack(old)) end
end
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 100)
`}

// repairScript puts a task that no set holds back where its state says it
// belongs. A running task with no lease gets an expired one, so recovery
// fails that attempt under the retry policy.
// KEYS: ready, running, delayed, seq, wake. ARGV: prefix, id.
// Returns 1 when it repaired something.
var repairScript = script{allowOOM: true, body: scoreFn + `
local id = ARGV[2]
local raw = redis.call('HGET', ARGV[1] .. id, 's')
if not raw then return 0 end
for i = 1, 3 do
  if redis.call('ZSCORE', KEYS[i], id) then return 0 end
end
local st = cjson.decode(raw)
if st.s == 'pending' then
  redis.call('ZADD', KEYS[1], score(st.pr, redis.call('INCR', KEYS[4])), id)
  redis.call('LPUSH', KEYS[5], 1)
  return 1
elseif st.s == 'retrying' then
  redis.call('ZADD', KEYS[3], string.format('%.0f', math.floor(tonumber(st.n or '0') / 1000000)), id)
  return 1
elseif st.s == 'running' then
  redis.call('ZADD', KEYS[2], 0, id)
  return 1
end
return 0
`}
