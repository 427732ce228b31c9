-- claim: promote due scheduled jobs, then hand up to N ready jobs to one worker,
-- choosing lanes by weight; each claim gets a fencing token and a `claimed` event.
-- KEYS[1] worker heartbeat   KEYS[2] worker processing list   KEYS[3] events stream
-- KEYS[4] meta hash   KEYS[5] scheduled zset   KEYS[6] wake list
-- KEYS[7..] lane lists, in priority order
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] how many jobs at most
-- ARGV[4] lane schedule: comma-separated 1-based lane indices, one per weight unit
-- ARGV[5] max backlog   ARGV[6] max backlog age ms   ARGV[7] promotion batch size
-- Returns {status, next_due_ms, job fields...} where status is 'ok', 'lost' (no
-- heartbeat: the worker was reaped), 'paused' or 'bp' (ledger backpressure; then the
-- next two values are backlog and age), and each job adds 8 values:
--   id, task, lane, payload, attempt, token, max_attempts, trace
local hb, processing, stream, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local scheduled, wake_key = KEYS[5], KEYS[6]
local prefix, worker, want = ARGV[1], ARGV[2], tonumber(ARGV[3])

if redis.call('EXISTS', hb) == 0 then return {'lost', 0} end
if redis.call('HGET', meta, 'paused') == '1' then return {'paused', 0} end
local now = now_ms()
local bp = over_backlog(stream, now, tonumber(ARGV[5]), tonumber(ARGV[6]))
if bp then return {'bp', bp[1], bp[2]} end

-- Promote what is due, a bounded batch per call, each with its event.
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(due) do
  redis.call('ZREM', scheduled, id)
  local jobkey = prefix .. 'job:' .. id
  local lane = redis.call('HGET', jobkey, 'lane')
  if lane then
    redis.call('RPUSH', prefix .. 'lane:' .. lane, id)
    redis.call('HSET', jobkey, 'state', 'ready')
    redis.call('HDEL', jobkey, 'due_ms')
    emit_job(stream, now, 'promoted', jobkey, id, {'from', 'scheduled', 'to', 'ready',
      'lane', lane})
  else
    emit(stream, now, 'purged', {'job', id, 'reason', 'job_record_missing'})
  end
end

local schedule = {}
for idx in string.gmatch(ARGV[4], '%d+') do schedule[#schedule + 1] = tonumber(idx) end
local rr = tonumber(redis.call('HGET', meta, 'rr') or '0')
local nlanes = #KEYS - 6

local function pop_next()
  local preferred = schedule[(rr % #schedule) + 1]
  local id = redis.call('LPOP', KEYS[6 + preferred])
  if id then return id end
  for i = 1, nlanes do
    if i ~= preferred then
      id = redis.call('LPOP', KEYS[6 + i])
      if id then return id end
    end
  end
  return nil
end

local out = {'ok', 0}
local claimed = 0
while claimed < want do
  local id = pop_next()
  if not id then break end
  rr = rr + 1
  local jobkey = prefix .. 'job:' .. id
  local job = redis.call('HMGET', jobkey, 'task', 'lane', 'payload', 'max_attempts', 'trace')
  if not job[1] then
    emit(stream, now, 'purged', {'job', id, 'reason', 'job_record_missing'})
  else
    local attempt = redis.call('HINCRBY', jobkey, 'attempts', 1)
    local token = redis.call('HINCRBY', jobkey, 'token', 1)
    redis.call('HSET', jobkey, 'state', 'active', 'worker', worker, 'claimed_ms', now)
    redis.call('RPUSH', processing, id)
    emit_job(stream, now, 'claimed', jobkey, id, {'from', 'ready', 'to', 'active',
      'lane', job[2], 'task', job[1], 'attempt', attempt, 'worker', worker, 'token', token})
    out[#out + 1] = id
    out[#out + 1] = job[1]
    out[#out + 1] = job[2]
    out[#out + 1] = job[3]
    out[#out + 1] = attempt
    out[#out + 1] = token
    out[#out + 1] = job[4]
    out[#out + 1] = job[5] or ''
    claimed = claimed + 1
  end
end
redis.call('HSET', meta, 'rr', rr)

if claimed < want then
  -- Every lane is empty: any wake token left refers to work already taken.
  redis.call('DEL', wake_key)
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if first[2] then out[2] = first[2] end
end
return out
