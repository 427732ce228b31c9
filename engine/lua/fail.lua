-- fail: record a handler's error; retry the job (now, or later through the scheduled
-- set) while attempts are left, else dead-letter it with its reason.
-- KEYS[1] worker processing list   KEYS[2] events stream   KEYS[3] scheduled zset
-- KEYS[4] dead-letter list   KEYS[5] wake list
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] job id   ARGV[4] fencing token
-- ARGV[5] error text   ARGV[6] traceback (truncated)   ARGV[7] '1' if retryable
-- ARGV[8] retry delay ms (0: back to the lane at once)   ARGV[9] reason when not retryable
-- ARGV[10] run time ms   ARGV[11] max attempts of the task's policy (0: the job's own)
-- ARGV[12] '1' to count this as a failure, '0' for a retry that is not one (the job's
-- idempotency record is held by a live worker)   ARGV[13] idempotency key ('' for none):
-- a record this claim holds is released so that a retry may run
-- Returns 'retried:<due ms or 0>', 'dead:<reason>' or 'stale:<reason>'.
local processing, stream, scheduled, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, worker, id, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local err, tb, retryable, delay = ARGV[5], ARGV[6], ARGV[7] == '1', tonumber(ARGV[8])
local now = now_ms()
local jobkey = prefix .. 'job:' .. id

local why = stale_reason(jobkey, worker, token)
if why then return reject(stream, now, jobkey, id, worker, token, why, 'fail') end

redis.call('LREM', processing, 1, id)
if ARGV[13] ~= '' then
  local rec = prefix .. 'idem:run:' .. ARGV[13]
  local cur = redis.call('HMGET', rec, 'state', 'job', 'token')
  if cur[1] == 'running' and cur[2] == id and cur[3] == token then redis.call('DEL', rec) end
end
local counted = ARGV[12] ~= '0'
local failures = tonumber(redis.call('HGET', jobkey, 'failures') or '0')
if counted then failures = redis.call('HINCRBY', jobkey, 'failures', 1) end
local job = redis.call('HMGET', jobkey, 'lane', 'task', 'attempts', 'max_attempts')
local lane, task, attempt = job[1], job[2], job[3]
local from = 'active'
if counted then
  redis.call('HSET', jobkey, 'state', 'failed', 'last_error', err, 'traceback', tb)
  emit_job(stream, now, 'failed', jobkey, id, {'from', 'active', 'to', 'failed',
    'lane', lane, 'task', task, 'attempt', attempt, 'worker', worker, 'token', token,
    'error', err, 'attrs', cjson.encode({run_ms = ARGV[10], failures = tostring(failures)})})
  from = 'failed'
end

local reason = nil
local max_attempts = tonumber(ARGV[11])
if max_attempts <= 0 then max_attempts = tonumber(job[4]) end
if not retryable then
  reason = ARGV[9]
elseif counted and failures >= max_attempts then
  reason = 'retries_exhausted'
end

if reason then
  redis.call('RPUSH', dead, id)
  redis.call('HSET', jobkey, 'state', 'dead', 'dead_reason', reason, 'dead_ms', now)
  emit_job(stream, now, 'dead_lettered', jobkey, id, {'from', from, 'to', 'dead',
    'lane', lane, 'task', task, 'attempt', attempt, 'reason', reason, 'error', err,
    'attrs', cjson.encode({max_attempts = tostring(max_attempts)})})
  return 'dead:' .. reason
end

local due = 0
if delay > 0 then
  due = now + delay
  redis.call('ZADD', scheduled, due, id)
  redis.call('HSET', jobkey, 'state', 'scheduled', 'due_ms', due)
else
  redis.call('RPUSH', prefix .. 'lane:' .. lane, id)
  redis.call('HSET', jobkey, 'state', 'ready')
end
redis.call('HDEL', jobkey, 'worker')
emit_job(stream, now, 'retried', jobkey, id, {'from', from,
  'to', due > 0 and 'scheduled' or 'ready', 'lane', lane, 'task', task,
  'attempt', attempt, 'due', due > 0 and due or false,
  'reason', (not counted) and ARGV[9] or false, 'error', (not counted) and err or false,
  'attrs', cjson.encode({delay_ms = tostring(delay)})})
wake(KEYS[5])
return 'retried:' .. due
