package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts keep every multi-step change atomic. Task record keys are
// built inside the scripts from the prefix (ARGV) and an id; they share
// the hash tag of the declared keys, so all keys of a queue live in one
// Cluster slot.
//
// Scores in the ready set are (9 - priority) * 2^48 + seq: ZPOPMIN gives
// the highest priority first and, within it, the lowest sequence number:
// one global order for every instance. Numbers past 2^47 are passed to
// redis.call as strings formatted with %.0f, because Lua's default
// conversion keeps only 14 significant digits.
//
// A running attempt is a member "id|token" of the running set, scored by
// its lease deadline; the token is unique per dequeue and ends with the
// attempt's start time. Holding that member is what running means: the
// stored record keeps the task's state from before the attempt, and
// readers add the running attempt on top (see runningView). So starting
// an attempt never rewrites the record, and removing the member is the
// fence: whoever removes it first settles the attempt.

// enqueueScript stores a new pending task unless the ready set is full.
// KEYS: ready, seq, wake, task. ARGV: limit, record JSON, id, priority.
// Returns 1 when stored, 0 when full, -1 when the id exists.
var enqueueScript = goredis.NewScript(`
local pending = redis.call('ZCARD', KEYS[1])
if pending >= tonumber(ARGV[1]) then return 0 end
if not redis.call('SET', KEYS[4], ARGV[2], 'NX') then return -1 end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', (9 - tonumber(ARGV[4])) * 281474976710656 + seq), ARGV[3])
-- Idle fetchers sleep only when they found the ready set empty, so only
-- the first task into an empty set needs to wake one; dequeue passes the
-- wake-up on while tasks remain.
if pending == 0 then redis.call('LPUSH', KEYS[3], 1) end
return 1
`)

// promoteDue is shared by the dequeue and maintenance scripts: it moves up
// to limit retrying tasks whose due time (ms) has come to the back of
// their priority in the ready set, even past the pending limit (the bound
// refuses only new submissions).
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
      r.s = 'pending'; r.n = nil; r.u = now_ns
      redis.call('SET', key, cjson.encode(r))
      redis.call('ZADD', ready, string.format('%.0f', (9 - r.pr) * 281474976710656 + s), id)
    end
  end
  if #due > 0 and redis.call('LLEN', wake) < 64 then redis.call('LPUSH', wake, 1) end
  return #due
end
`

// dequeueScript promotes due retries, then starts up to ARGV count pending
// tasks: each one's running member (lease until now + lease) replaces its
// place in the ready set in the same step.
// KEYS: ready, running, delayed, seq, wake.
// ARGV: prefix, now_ms, now_ns, lease_ms, count, token prefix.
// Returns {ready left, earliest retry due ms or -1, member, score, record, ...}.
var dequeueScript = goredis.NewScript(promoteDue + `
promote(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], 100)
local out = {0, -1}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[5]))
local deadline = string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then
    local member = id .. '|' .. ARGV[6] .. ':' .. ((i + 1) / 2) .. ':' .. ARGV[3]
    redis.call('ZADD', KEYS[2], deadline, member)
    table.insert(out, member); table.insert(out, popped[i + 1]); table.insert(out, raw)
  end
end
local left = redis.call('ZCARD', KEYS[1])
out[1] = left
if left > 0 and redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], 1) end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #first > 0 then out[2] = tonumber(first[2]) end
return out
`)

// settleScript stores the outcome of an attempt if its running member is
// still there, removing it. With ARGV expired_ms set it also requires the
// lease to have run out by then (recovery of a dead instance's task).
// KEYS: running, delayed, ready, finished, wake.
// ARGV: prefix, id, member, record, kind, score_or_due, retention_ms,
//
//	max_finished, expired_ms.
//
// kind is 'finished', 'retry' (score_or_due is the due time in ms) or
// 'pending' (handed back: score_or_due is its old ready score).
// Returns 1 when stored, 0 when the attempt is no longer current.
var settleScript = goredis.NewScript(`
if ARGV[9] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if not lease or tonumber(lease) > tonumber(ARGV[9]) then return 0 end
end
if redis.call('ZREM', KEYS[1], ARGV[3]) == 0 then return 0 end
local id = ARGV[2]
local key = ARGV[1] .. id
local kind = ARGV[5]
if kind == 'finished' then
  local keep, cap = tonumber(ARGV[7]), tonumber(ARGV[8])
  if keep <= 0 then
    redis.call('DEL', key)
    return 1
  end
  redis.call('SET', key, ARGV[4], 'PX', keep)
  if cap > 0 then
    local over = redis.call('LPUSH', KEYS[4], id) - cap
    if over > 0 then
      for _, old in ipairs(redis.call('RPOP', KEYS[4], over)) do redis.call('DEL', ARGV[1] .. old) end
    end
  end
  return 1
end
redis.call('SET', key, ARGV[4])
if kind == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[6], id)
else
  redis.call('ZADD', KEYS[3], ARGV[6], id)
end
if redis.call('LLEN', KEYS[5]) < 64 then redis.call('LPUSH', KEYS[5], 1) end
return 1
`)

// renewScript extends the leases this instance still holds.
// KEYS: running. ARGV: deadline_ms, member, member, ...
// Returns the members whose lease was lost.
var renewScript = goredis.NewScript(`
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
`)

// maintainScript promotes due retries and returns up to 100 running
// members whose lease has expired.
// KEYS: ready, running, delayed, seq, wake. ARGV: prefix, now_ms, now_ns.
var maintainScript = goredis.NewScript(promoteDue + `
promote(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], 1000)
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 100)
`)

// findRunning is shared by the get and repair scripts: it returns the
// running member of task id, or nil. It scans the running set, which holds
// one member per attempt under way.
const findRunning = `
local function find_running(running, id)
  local prefix = id .. '|'
  for _, m in ipairs(redis.call('ZRANGE', running, 0, -1)) do
    if string.sub(m, 1, #prefix) == prefix then return m end
  end
  return nil
end
`

// getScript returns a task's record and its running member, if any.
// KEYS: running, task. ARGV: id.
var getScript = goredis.NewScript(findRunning + `
local raw = redis.call('GET', KEYS[2])
if not raw then return false end
return {raw, find_running(KEYS[1], ARGV[1]) or ''}
`)

// repairScript puts a task that no set holds back where its record says it
// belongs. A record stored as running with no lease (an older writer, a
// manual edit) gets an expired lease, so recovery fails that attempt.
// KEYS: ready, running, delayed, seq, wake, task. ARGV: id, now_ns.
// Returns 1 when it repaired something.
var repairScript = goredis.NewScript(findRunning + `
local raw = redis.call('GET', KEYS[6])
if not raw or find_running(KEYS[2], ARGV[1]) then return 0 end
local r = cjson.decode(raw)
if r.s == 'pending' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local s = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[1], string.format('%.0f', (9 - r.pr) * 281474976710656 + s), ARGV[1])
  redis.call('LPUSH', KEYS[5], 1)
  return 1
elseif r.s == 'retrying' and not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('ZADD', KEYS[3], string.format('%.0f', math.floor(tonumber(r.n or '0') / 1000000)), ARGV[1])
  return 1
elseif r.s == 'running' then
  redis.call('ZADD', KEYS[2], 0, ARGV[1] .. '|repaired:0:' .. (r.st or ARGV[2]))
  return 1
end
return 0
`)
