package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts make every multi-key change atomic; they store and fence
// what the domain decided in Go, and decide nothing themselves beyond
// keeping each task in the set, the index and the counter of its status.
//
// Every script takes the same KEYS (see keys.all) and the queue's tag
// "{PREFIX}:" as ARGV[1]; task records ("t:<id>") and list indexes
// ("idx:<status>:<type>") are built from the tag, so all keys of a queue
// share one Cluster slot.
//
// Where a task is kept, by status:
//   - pending: ready, scored (9 - priority) * 2^48 + seq: ZPOPMIN gives the
//     highest priority first and, within it, the lowest sequence number:
//     one global order for every instance;
//   - scheduled, retrying: delayed, scored by due time (ms);
//   - running: running, scored by lease deadline (ms); the record's state
//     carries the attempt's token, which fences its outcome;
//   - succeeded: finished; failed and cancelled: dead. Both scored by finish
//     time (ms), with members "id|status|type", so trimming them needs no
//     record (which may have expired).
//
// Every status but running also indexes the task in idx:<status>:<type>
// (all scores 0, so ids sort as strings: UUIDv7 strings sort by time), and
// the hash counts holds one counter per "status|type".
//
// Numbers past 2^47 are passed to redis.call as strings formatted with
// %.0f, because Lua's default conversion keeps only 14 significant digits.
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

// prelude names the keys and holds what every script shares: where a task
// of each status is kept (place and unplace), and promotion of due tasks.
const prelude = `
local TAG = ARGV[1]
local READY, RUNNING, DELAYED, FINISHED, DEAD, SEQ, WAKE, COUNTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local function rec(id) return TAG .. 't:' .. id end
local function idx(st, ty) return TAG .. 'idx:' .. st .. ':' .. ty end
local function score(pr, seq)
  return string.format('%.0f', (9 - tonumber(pr)) * 281474976710656 + seq)
end
local function wake()
  if redis.call('LLEN', WAKE) < 64 then redis.call('LPUSH', WAKE, 1) end
end
local function finished_set(st)
  if st == 'succeeded' then return FINISHED end
  return DEAD
end
-- unindex takes a task out of the index and counter of status st.
local function unindex(id, st, ty)
  if st ~= 'running' then redis.call('ZREM', idx(st, ty), id) end
  redis.call('HINCRBY', COUNTS, st .. '|' .. ty, -1)
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
local function unplace(id, st, ty)
  if st == 'pending' then redis.call('ZREM', READY, id)
  elseif st == 'scheduled' or st == 'retrying' then redis.call('ZREM', DELAYED, id)
  elseif st == 'running' then redis.call('ZREM', RUNNING, id)
  else
    redis.call('ZREM', finished_set(st), id .. '|' .. st .. '|' .. ty)
    redis.call('PERSIST', rec(id))
  end
  unindex(id, st, ty)
end
-- place puts a task into the set, index and counter of status st. at is
-- the score: for pending its old place ('' for the back of its priority),
-- for scheduled and retrying the due time, for running the lease
-- deadline, for a finished task the finish time; keep and cap are the
-- finished task's retention (ms; 0 drops it at once) and cap (0: none).
-- It returns false when the task was dropped.
local function place(id, st, ty, pr, at, keep, cap)
  if st == 'pending' then
    if at == '' then at = score(pr, redis.call('INCR', SEQ)) end
    redis.call('ZADD', READY, at, id)
  elseif st == 'scheduled' or st == 'retrying' then redis.call('ZADD', DELAYED, at, id)
  elseif st == 'running' then redis.call('ZADD', RUNNING, at, id)
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
  if st ~= 'running' then redis.call('ZADD', idx(st, ty), 0, id) end
  redis.call('HINCRBY', COUNTS, st .. '|' .. ty, 1)
  return true
end
-- place does not wake idle fetchers: the caller does when it makes tasks
-- pending (idle fetchers sleep only when they found ready empty).
-- promote makes up to limit scheduled and retrying tasks whose due time
-- (ms) has come pending, at the back of their priority; they were counted
-- against the bound all along, so nothing refuses them.
local function promote(now_ms, now_ns, limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local raw = redis.call('HGET', rec(id), 's')
    if raw then
      local st = cjson.decode(raw)
      unplace(id, st.s, st.ty)
      st.s = 'pending'; st.n = nil; st.u = now_ns
      redis.call('HSET', rec(id), 's', cjson.encode(st))
      place(id, 'pending', st.ty, st.pr, '', 0, 0)
    else
      redis.call('ZREM', DELAYED, id)
    end
  end
  if #due > 0 then wake() end
  return #due
end
`

// enqueueScript stores new tasks, all or none, unless the queue cannot
// take them all under its limit of tasks waiting to run.
// ARGV: tag, limit, then per task: id, data, state, status, type,
// priority, due ms (scheduled) or ”.
// Returns 1 when stored, 0 when full, -1 when an id exists.
var enqueueScript = script{body: prelude + `
local n = (#ARGV - 2) / 7
local pending = redis.call('ZCARD', READY)
if pending + redis.call('ZCARD', DELAYED) + n > tonumber(ARGV[2]) then return 0 end
for i = 3, #ARGV, 7 do
  if redis.call('EXISTS', rec(ARGV[i])) == 1 then return -1 end
end
for i = 3, #ARGV, 7 do
  redis.call('HSET', rec(ARGV[i]), 'd', ARGV[i + 1], 's', ARGV[i + 2])
  local at = ''
  if ARGV[i + 3] == 'scheduled' then at = ARGV[i + 6] end
  place(ARGV[i], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], at, 0, 0)
end
-- Only the first task into an empty ready set needs to wake a fetcher;
-- dequeue passes the wake-up on while tasks remain.
if pending == 0 and redis.call('ZCARD', READY) > 0 then redis.call('LPUSH', WAKE, 1) end
return 1
`}

// dequeueScript promotes due tasks, then starts up to count pending tasks:
// each one's state becomes running with its attempt number one higher, its
// token, lease deadline and instance, and it moves from ready to running,
// in one step.
// ARGV: tag, now_ms, now_ns, lease_ms, count, token prefix, instance.
// Returns {ready left, earliest due ms or -1, id, data, state, ...}.
var dequeueScript = script{allowOOM: true, body: prelude + `
promote(ARGV[2], ARGV[3], 100)
local out = {0, -1}
local popped = redis.call('ZPOPMIN', READY, tonumber(ARGV[5]))
local deadline = string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[4]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local fields = redis.call('HMGET', rec(id), 'd', 's')
  if fields[1] and fields[2] then
    local st = cjson.decode(fields[2])
    unindex(id, 'pending', st.ty)
    st.ps = st.st; st.pu = st.u
    st.s = 'running'; st.a = st.a + 1; st.st = ARGV[3]; st.u = ARGV[3]; st.n = nil
    st.k = ARGV[6] .. ':' .. ((i + 1) / 2); st.l = deadline; st.i = ARGV[7]; st.q = popped[i + 1]
    local enc = cjson.encode(st)
    redis.call('HSET', rec(id), 's', enc)
    place(id, 'running', st.ty, st.pr, deadline, 0, 0)
    table.insert(out, id); table.insert(out, fields[1]); table.insert(out, enc)
  end
end
local left = redis.call('ZCARD', READY)
out[1] = left
if left > 0 and redis.call('LLEN', WAKE) == 0 then redis.call('LPUSH', WAKE, 1) end
local first = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
if #first > 0 then out[2] = tonumber(first[2]) end
return out
`}

// settleScript stores the outcome of an attempt if the task's state still
// carries the attempt's token and says running. With expired_ms set it
// also requires the lease to have run out by then (recovery of a dead
// instance's task).
// ARGV: tag, id, token, state, status, at, keep, cap, expired_ms, result.
// at is the due time (retrying), the old ready score (pending: handed
// back) or the finish time; keep and cap as for place; result, when not
// empty, is stored in the record's field r (a task that runs again has
// none: updateScript removes it).
// Returns 1 when stored, 2 when this attempt's owner already stored it
// (a retry after a lost reply), 0 when the attempt is no longer current.
var settleScript = script{allowOOM: true, body: prelude + `
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
unplace(id, 'running', cur.ty)
redis.call('HSET', rec(id), 's', ARGV[4])
if ARGV[10] ~= '' then redis.call('HSET', rec(id), 'r', ARGV[10]) end
place(id, ARGV[5], cur.ty, cur.pr, ARGV[6], ARGV[7], ARGV[8])
if ARGV[5] ~= 'succeeded' and ARGV[5] ~= 'failed' then wake() end
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
var updateScript = script{allowOOM: true, body: prelude + `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 'gone' end
if raw ~= ARGV[3] then return 'conflict' end
local waiting = {scheduled = true, pending = true, retrying = true}
if waiting[ARGV[6]] and not waiting[ARGV[5]] then
  if redis.call('ZCARD', READY) + redis.call('ZCARD', DELAYED) >= tonumber(ARGV[12]) then return 'full' end
end
unplace(id, ARGV[5], ARGV[7])
redis.call('HSET', rec(id), 's', ARGV[4])
if ARGV[6] ~= 'succeeded' then redis.call('HDEL', rec(id), 'r') end
place(id, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
if ARGV[6] == 'pending' then wake() end
return 'ok'
`}

// deleteScript removes a task if its state is still exactly the one the
// caller read. ARGV: tag, id, expected state, status, type.
// Returns 'ok', 'conflict' or 'gone'.
var deleteScript = script{allowOOM: true, body: prelude + `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 'gone' end
if raw ~= ARGV[3] then return 'conflict' end
unplace(id, ARGV[4], ARGV[5])
redis.call('DEL', rec(id))
return 'ok'
`}

// renewScript extends the leases of attempts this instance still runs and
// writes the new deadline into their state.
// ARGV: tag, deadline_ms, id, token, id, token, ...
// Returns the ids whose attempt is no longer this instance's (recovered
// elsewhere, or cancelled); an attempt its owner already settled is not
// among them.
var renewScript = script{allowOOM: true, body: prelude + `
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
var checkScript = script{allowOOM: true, body: prelude + `
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
// update times go back, and the task returns to its old place in the
// ready set. It takes either (id, token) pairs, or token prefixes of
// dequeue calls whose reply was lost (then it looks through the running
// set, which only happens after an outage).
// ARGV: tag, 'ids' or 'prefixes', ... Returns how many it put back.
var undoScript = script{allowOOM: true, body: prelude + `
local function undo(id, st)
  local q = st.q
  unplace(id, 'running', st.ty)
  st.s = 'pending'; st.a = st.a - 1; st.st = st.ps; st.u = st.pu
  st.ps = nil; st.pu = nil; st.k = nil; st.l = nil; st.i = nil; st.q = nil
  redis.call('HSET', rec(id), 's', cjson.encode(st))
  place(id, 'pending', st.ty, st.pr, q, 0, 0)
  wake()
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
return n
`}

// maintainScript promotes due tasks, forgets finished tasks whose
// retention has passed (their records expire at the same time; this trims
// the finished indexes and counters), and returns up to 100 running tasks
// whose lease has expired.
// ARGV: tag, now_ms, now_ns, retention_ms, failed_retention_ms.
var maintainScript = script{allowOOM: true, body: prelude + `
promote(ARGV[2], ARGV[3], 1000)
for k, set in ipairs({FINISHED, DEAD}) do
  local keep = tonumber(ARGV[3 + k])
  local cutoff = string.format('%.0f', tonumber(ARGV[2]) - keep)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', set, m)
    forget(m)
  end
end
return redis.call('ZRANGEBYSCORE', RUNNING, '-inf', ARGV[2], 'LIMIT', 0, 100)
`}

// statsScript returns the counters and, per priority, the state of the
// task that has waited longest in ready (the lowest score of its band).
// ARGV: tag. Returns {counts (flat field, value, ...), state, state, ...}.
var statsScript = script{allowOOM: true, body: prelude + `
local out = {redis.call('HGETALL', COUNTS)}
for p = 0, 9 do
  local low = string.format('%.0f', (9 - p) * 281474976710656)
  local high = '(' .. string.format('%.0f', (10 - p) * 281474976710656)
  local first = redis.call('ZRANGEBYSCORE', READY, low, high, 'LIMIT', 0, 1)
  if #first > 0 then
    local raw = redis.call('HGET', rec(first[1]), 's')
    if raw then table.insert(out, raw) end
  end
end
return out
`}

// repairScript puts a task that no set holds back where its state says it
// belongs, index included (its counter is left as it is). A running task
// with no lease gets an expired one, so recovery fails that attempt under
// the retry policy.
// ARGV: tag, id. Returns 1 when it repaired something.
var repairScript = script{allowOOM: true, body: prelude + `
local id = ARGV[2]
local raw = redis.call('HGET', rec(id), 's')
if not raw then return 0 end
for _, set in ipairs({READY, DELAYED, RUNNING}) do
  if redis.call('ZSCORE', set, id) then return 0 end
end
local st = cjson.decode(raw)
if st.s == 'pending' then
  redis.call('ZADD', READY, score(st.pr, redis.call('INCR', SEQ)), id)
  wake()
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
return 1
`}
