-- fail: record a handler's error; retry the job (now, or later through the scheduled
-- set) while attempts are left, else dead-letter it with its reason.
-- KEYS[1] worker processing list   KEYS[2] events stream   KEYS[3] scheduled zset
-- KEYS[4] dead-letter list   KEYS[5] wake list
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] job id   ARGV[4] fencing token
-- ARGV[5] error text   ARGV[6] traceback (truncated)   ARGV[7] '1' if retryable
-- ARGV[8] retry delay ms (0: back to the lane at once)   ARGV[9] reason when not retryable
-- ARGV[10] run time ms   ARGV[11] max attempts of the task's policy (0: the job's own)
-- Returns 'retried:<due ms or 0>', 'dead:<reason>' or 'stale:<reason>'.
local processing, stream, scheduled, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, worker, id, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local err, tb, retryable, delay = ARGV[5], ARGV[6], ARGV[7] == '1', tonumber(ARGV[8])
local now = now_ms()
local jobkey = prefix .. 'job:' .. id

local why = stale_reason(jobkey, worker, token)
if why then return reject(stream, now, jobkey, id, worker, token, why, 'fail') end

redis.call('LREM', processing, 1, id)
local failures = redis.call('HINCRBY', jobkey, 'failures', 1)
local job = redis.call('HMGET', jobkey, 'lane', 'task', 'attempts', 'max_attempts')
local lane, task, attempt = job[1], job[2], job[3]
redis.call('HSET', jobkey, 'state', 'failed', 'last_error', err, 'traceback', tb)
emit_job(stream, now, 'failed', jobkey, id, {'from', 'active', 'to', 'failed',
  'lane', lane, 'task', task, 'attempt', attempt, 'worker', worker, 'token', token,
  'error', err, 'attrs', cjson.encode({run_ms = ARGV[10], failures = tostring(failures)})})

local reason = nil
local max_attempts = tonumber(ARGV[11])
if max_attempts <= 0 then max_attempts = tonumber(job[4]) end
if not retryable then
  reason = ARGV[9]
elseif failures >= max_attempts then
  reason = 'retries_exhausted'
end

if reason then
  redis.call('RPUSH', dead, id)
  redis.call('HSET', jobkey, 'state', 'dead', 'dead_reason', reason, 'dead_ms', now)
  emit_job(stream, now, 'dead_lettered', jobkey, id, {'from', 'failed', 'to', 'dead',
    'lane', lane, 'task', task, 'attempt', attempt, 'reason', reason, 'error', err})
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
emit_job(stream, now, 'retried', jobkey, id, {'from', 'failed',
  'to', due > 0 and 'scheduled' or 'ready', 'lane', lane, 'task', task,
  'attempt', attempt, 'due', due > 0 and due or false,
  'attrs', cjson.encode({delay_ms = tostring(delay)})})
wake(KEYS[5])
return 'retried:' .. due
