package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts keep every multi-step change atomic. Task record keys are
// built inside the scripts from the prefix (ARGV) and an id; they share
// the hash tag of the declared keys, so all keys of a queue live in one
// Cluster slot.
//
// Scores in the ready set are (9 - priority) * 2^48 + seq: ZPOPMIN gives
// the highest priority first and, within it, the lowest sequence number —
// one global order for every instance. Numbers past 2^47 must be passed
// to redis.call as strings formatted with %.0f: Lua's default conversion
// keeps only 14 significant digits.

// enqueueScript stores a new pending task unless the ready set is full.
// KEYS: ready, seq, wake, task. ARGV: limit, record JSON, id, priority.
// Returns 1 when stored, 0 when full, -1 when the id exists.
var enqueueScript = goredis.NewScript(`
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local seq = redis.call('INCR', KEYS[2])
local score = string.format('%.0f', (9 - tonumber(ARGV[4])) * 281474976710656 + seq)
redis.call('SET', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[1], score, ARGV[3])
if redis.call('LLEN', KEYS[3]) < 64 then redis.call('LPUSH', KEYS[3], 1) end
return 1
`)

// promoteDue is shared by the dequeue and maintenance scripts: it moves up
// to ARGV limit retrying tasks whose due time (ms) has come to the back of
// their priority in the ready set. Retries are taken even when the ready
// set is at its limit: the bound refuses only new submissions.
const promoteDue = `
local function promote(ready, delayed, seq, wake, prefix, now_ms, now_ns, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local key = prefix .. id
    local raw = redis.call('GET', key)
    if raw then
      local r = cjson.decode(raw)
      local s = redis.call('INCR', seq)
      local score = string.format('%.0f', (9 - r.pr) * 281474976710656 + s)
      r.s = 'pending'; r.n = nil; r.u = now_ns
      redis.call('SET', key, cjson.encode(r))
      redis.call('ZADD', ready, score, id)
    end
  end
  if #due > 0 and redis.call('LLEN', wake) < 64 then redis.call('LPUSH', wake, 1) end
  return #due
end
`

// dequeueScript promotes due retries, then starts up to ARGV count pending
// tasks: each becomes running with its attempt count one higher, a lease
// until now + lease, and a lease token, all in one step.
// KEYS: ready, running, lease, delayed, seq, wake.
// ARGV: prefix, now_ms, now_ns, lease_ms, count, token prefix.
// Returns {ready left, earliest retry due ms or -1, id, token, record, ...}.
var dequeueScript = goredis.NewScript(promoteDue + `
promote(KEYS[1], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[3], 100)
local out = {0, -1}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[5]))
local deadline = string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = ARGV[1] .. id
  local raw = redis.call('GET', key)
  if raw then
    local r = cjson.decode(raw)
    r.s = 'running'; r.a = r.a + 1; r.st = ARGV[3]; r.u = ARGV[3]; r.q = popped[i + 1]
    local rec = cjson.encode(r)
    redis.call('SET', key, rec)
    local token = ARGV[6] .. ':' .. ((i + 1) / 2)
    redis.call('HSET', KEYS[3], id, token)
    redis.call('ZADD', KEYS[2], deadline, id)
    table.insert(out, id); table.insert(out, token); table.insert(out, rec)
  end
end
local left = redis.call('ZCARD', KEYS[1])
out[1] = left
if left > 0 and redis.call('LLEN', KEYS[6]) == 0 then redis.call('LPUSH', KEYS[6], 1) end
local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #first > 0 then out[2] = tonumber(first[2]) end
return out
`)

// settleScript stores the outcome of an attempt if its lease token is
// still the task's. With ARGV expired_ms set it also requires the lease to
// have run out by then (recovery of a dead instance's task).
// KEYS: running, lease, delayed, ready, finished, wake.
// ARGV: prefix, id, token, record, kind, score_or_due, retention_ms,
//
//	max_finished, now_ms, expired_ms.
//
// kind is 'finished', 'retry' (score_or_due is the due time in ms) or
// 'pending' (handed back: score_or_due is its old ready score).
// Returns 1 when stored, 0 when the token is stale.
var settleScript = goredis.NewScript(`
local id = ARGV[2]
local current = redis.call('HGET', KEYS[2], id)
if (current or '') ~= ARGV[3] then return 0 end
if ARGV[10] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[1], id)
  if lease and tonumber(lease) > tonumber(ARGV[10]) then return 0 end
end
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[1], id)
local key = ARGV[1] .. id
local kind = ARGV[5]
if kind == 'finished' then
  local keep = tonumber(ARGV[7])
  if keep > 0 then
    redis.call('SET', key, ARGV[4], 'PX', keep)
    redis.call('ZADD', KEYS[5], ARGV[9], id)
    local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[8])
    if tonumber(ARGV[8]) > 0 and over > 0 then
      local old = redis.call('ZPOPMIN', KEYS[5], over)
      for i = 1, #old, 2 do redis.call('DEL', ARGV[1] .. old[i]) end
    end
  else
    redis.call('DEL', key)
  end
elseif kind == 'retry' then
  redis.call('SET', key, ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[6], id)
  if redis.call('LLEN', KEYS[6]) < 64 then redis.call('LPUSH', KEYS[6], 1) end
else
  redis.call('SET', key, ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[6], id)
  if redis.call('LLEN', KEYS[6]) < 64 then redis.call('LPUSH', KEYS[6], 1) end
end
return 1
`)

// renewScript extends the leases this instance still holds.
// KEYS: running, lease. ARGV: deadline_ms, id, token, id, token, ...
// Returns the ids whose lease was lost.
var renewScript = goredis.NewScript(`
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
`)

// maintainScript promotes due retries, forgets finished-set entries older
// than the retention, and returns up to 100 ids whose lease has expired.
// KEYS: ready, running, delayed, seq, wake, finished.
// ARGV: prefix, now_ms, now_ns, retention_ms.
var maintainScript = goredis.NewScript(promoteDue + `
promote(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', string.format('%.0f', tonumber(ARGV[2]) - tonumber(ARGV[4])))
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 100)
`)

// repairScript gives a running task that has no lease an expired one, so
// the normal recovery takes it. KEYS: running, lease. ARGV: prefix, id.
// Returns 1 when repaired.
var repairScript = goredis.NewScript(`
local raw = redis.call('GET', ARGV[1] .. ARGV[2])
if not raw or redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
if cjson.decode(raw).s ~= 'running' then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
if not redis.call('HGET', KEYS[2], ARGV[2]) then redis.call('HSET', KEYS[2], ARGV[2], '') end
return 1
`)
