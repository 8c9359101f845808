"""The Lua scripts behind `RedisJobStore`: every status change is one atomic script.

Keys (P = the store's prefix, default "framecast:"):
  P job:<id>      hash: the Job's fields (None fields absent; `conditioning` as its JSON) + `seq`
                  (creation order) + `owner` (the worker holding the claim while in_progress)
  P history:<id>  list of JSON status changes {at (ms, Redis clock), status, worker, attempt, reason}
  P jobs          zset id -> seq (listing, newest first)
  P queue         zset id -> seq of queued jobs (claim order: oldest first)
  P leases        zset id -> deadline in ms (Redis clock) of in_progress jobs
  P counts        hash status -> number of jobs
  P seq           counter for `seq`

KEYS of every script: [queue, leases, counts, jobs, seq]; ARGV[1] is the prefix. Time is Redis'
own clock (TIME), so workers' clocks never have to agree. Scripts need Redis >= 5 (effects
replication is the default there, which lets a script write after reading TIME).
"""

from __future__ import annotations

_COMMON = """
local queue, leases, counts, jobs, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- move job `id` from status `old` to `new`, keeping queue, leases, counts and history in step
local function transition(id, key, old, new, worker, reason, now)
  redis.call('HSET', key, 'status', new)
  redis.call('HINCRBY', counts, old, -1)
  redis.call('HINCRBY', counts, new, 1)
  if old == 'in_progress' then
    redis.call('ZREM', leases, id)
    redis.call('HDEL', key, 'owner')
  elseif old == 'queued' then
    redis.call('ZREM', queue, id)
  end
  if new == 'queued' then
    redis.call('ZADD', queue, redis.call('HGET', key, 'seq'), id)
  end
  local entry = {at = now, status = new, worker = worker,
                 attempt = tonumber(redis.call('HGET', key, 'attempts') or '0')}
  if reason then entry['reason'] = reason end
  redis.call('RPUSH', prefix .. 'history:' .. id, cjson.encode(entry))
end

-- jobs whose claim was not renewed in time go back to the queue (or fail after max_attempts)
local function reap(now, max_attempts)
  local changed = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    local key = prefix .. 'job:' .. id
    local status = redis.call('HGET', key, 'status')
    if status == 'in_progress' then
      local owner = redis.call('HGET', key, 'owner') or '?'
      local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
      local why = 'worker ' .. owner .. ' stopped renewing its claim'
      if attempts >= max_attempts then
        local reason = 'interrupted ' .. attempts .. ' times (last: ' .. why .. ')'
        redis.call('HSET', key, 'error', reason)
        transition(id, key, status, 'failed', owner, reason, now)
      else
        redis.call('HSET', key, 'progress', '0')
        transition(id, key, status, 'queued', owner, why, now)
      end
      table.insert(changed, id)
    else
      redis.call('ZREM', leases, id)
    end
  end
  return changed
end
"""

# ARGV: prefix, id, then field/value pairs. Returns the job's seq.
CREATE = _COMMON + """
local id = ARGV[2]
local key = prefix .. 'job:' .. id
if redis.call('EXISTS', key) == 1 then return redis.error_reply('job ' .. id .. ' exists') end
local seq = redis.call('INCR', seqkey)
redis.call('HSET', key, 'seq', seq, unpack(ARGV, 3))
redis.call('ZADD', jobs, seq, id)
local status = redis.call('HGET', key, 'status')
redis.call('HINCRBY', counts, status, 1)
if status == 'queued' then redis.call('ZADD', queue, seq, id) end
redis.call('RPUSH', prefix .. 'history:' .. id, cjson.encode({at = now_ms(), status = status}))
return seq
"""

# ARGV: prefix, worker, lease_ms, max_attempts. Reaps expired claims, then claims the oldest
# queued job for `worker`. Returns its id, or false.
CLAIM = _COMMON + """
local worker, lease_ms, max_attempts = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
reap(now, max_attempts)
while true do
  local head = redis.call('ZRANGE', queue, 0, 0)
  if #head == 0 then return false end
  local id = head[1]
  local key = prefix .. 'job:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' then
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'progress', '0')
    transition(id, key, status, 'in_progress', worker, false, now)
    redis.call('HSET', key, 'owner', worker)
    redis.call('ZADD', leases, now + lease_ms, id)
    return id
  end
  redis.call('ZREM', queue, id)  -- stale entry (should not happen): drop it
end
"""

# ARGV: prefix, max_attempts. Returns the ids it re-queued or failed.
REAP = _COMMON + """
return reap(now_ms(), tonumber(ARGV[2]))
"""

# ARGV: prefix, id, worker, lease_ms. Renews the claim if `worker` still holds it: 1, else 0.
HEARTBEAT = _COMMON + """
local id, worker, lease_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local key = prefix .. 'job:' .. id
if redis.call('HGET', key, 'status') ~= 'in_progress' or redis.call('HGET', key, 'owner') ~= worker then
  return 0
end
redis.call('ZADD', leases, now_ms() + lease_ms, id)
return 1
"""

# ARGV: prefix, id, worker, claimant ("1": only while `worker` holds the claim), only_if
# (comma-separated statuses, "" = any), n_set, then n_set name/value pairs, then names to delete.
# Returns 1 when applied, 0 when the job is missing or the condition failed.
UPDATE = _COMMON + """
local id, worker, claimant, only_if, n_set = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local key = prefix .. 'job:' .. id
local old = redis.call('HGET', key, 'status')
if not old then return 0 end
if only_if ~= '' and not string.find(',' .. only_if .. ',', ',' .. old .. ',', 1, true) then return 0 end
if claimant == '1' and redis.call('HGET', key, 'owner') ~= worker then return 0 end
local new = nil
for i = 7, 6 + 2 * n_set, 2 do
  if ARGV[i] == 'status' then new = ARGV[i + 1]
  else redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
for i = 7 + 2 * n_set, #ARGV do redis.call('HDEL', key, ARGV[i]) end
if new and new ~= old then
  local reason = nil
  if new == 'failed' or new == 'cancelled' then reason = redis.call('HGET', key, 'error') end
  transition(id, key, old, new, worker, reason, now_ms())
end
return 1
"""

# ARGV: prefix, id. Removes the job from every key (record, history, queue, leases, listing,
# counts). Returns 1 when it existed, 0 otherwise.
DELETE = _COMMON + """
local id = ARGV[2]
local key = prefix .. 'job:' .. id
local status = redis.call('HGET', key, 'status')
if not status then return 0 end
redis.call('HINCRBY', counts, status, -1)
redis.call('ZREM', queue, id)
redis.call('ZREM', leases, id)
redis.call('ZREM', jobs, id)
redis.call('DEL', key, prefix .. 'history:' .. id)
return 1
"""

# ARGV: prefix, id, conditioning JSON. A hash written before conditioning was one field gets it, and
# loses the fields it replaces (prompt, seed, image); any other hash is left alone. Returns 1 if changed.
MIGRATE = _COMMON + """
local key = prefix .. 'job:' .. ARGV[2]
if redis.call('HEXISTS', key, 'prompt') == 0 or redis.call('HEXISTS', key, 'conditioning') == 1 then return 0 end
redis.call('HSET', key, 'conditioning', ARGV[3])
redis.call('HDEL', key, 'prompt', 'seed', 'image')
return 1
"""
