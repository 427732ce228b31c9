-- enqueue: put one or more new jobs in their lanes, or in the scheduled set when due
-- later, each with its `enqueued` or `scheduled` event.
-- KEYS[1] events stream   KEYS[2] scheduled zset   KEYS[3] wake list   KEYS[4] meta hash
-- KEYS[5..] lane lists, in the configured lane order
-- ARGV[1] key prefix   ARGV[2] max backlog   ARGV[3] max backlog age ms
-- ARGV[4] max lane length (0: none)   ARGV[5] max queue length (0: none)
-- ARGV[6] idempotency record retention ms   ARGV[7] number of jobs, then 10 values per job:
--   id, task, lane index (1-based), payload, max attempts, max crashes,
--   delay ms, due at ms (0: none), trace id, idempotency key ('' for none)
-- Returns {'bp', backlog, age_ms} when the ledger backlog refuses the batch, else one
-- status per job: 'ok', 'exists', 'dup:<first job id>', 'lane_full:<length>' or
-- 'queue_full:<length>'. The first full status ends the batch: what was enqueued is
-- always a prefix, and the caller may send the rest again later.
local stream, scheduled, wake_key = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local now = now_ms()

local bp = over_backlog(stream, now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if bp then return {'bp', bp[1], bp[2]} end

local max_lane, max_queue = tonumber(ARGV[4]), tonumber(ARGV[5])
local queue_len = 0
if max_queue > 0 then
  queue_len = redis.call('ZCARD', scheduled)
  for i = 5, #KEYS do queue_len = queue_len + redis.call('LLEN', KEYS[i]) end
end

local out, woke = {}, false
local idem_ttl = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
for j = 0, n - 1 do
  local b = 8 + j * 10
  local id, task, lane_i, payload = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local delay, due_at, trace = tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]), ARGV[b + 8]
  local lane_key = KEYS[4 + lane_i]
  local lane = string.sub(lane_key, #prefix + 6)
  local jobkey = prefix .. 'job:' .. id
  local lane_len = 0
  if max_lane > 0 then lane_len = redis.call('LLEN', lane_key) end
  local idem_key = ARGV[b + 9]
  local first = false
  if idem_key ~= '' then first = redis.call('GET', prefix .. 'idem:enqueue:' .. idem_key) end

  if first then
    emit(stream, now, 'deduplicated', {'job', first, 'task', task, 'reason', 'duplicate_enqueue',
      'attrs', cjson.encode({op = 'enqueue', key = idem_key, refused_job = id})})
    out[#out + 1] = 'dup:' .. first
  elseif redis.call('EXISTS', jobkey) == 1 then
    out[#out + 1] = 'exists'
  elseif max_queue > 0 and queue_len >= max_queue then
    out[#out + 1] = 'queue_full:' .. queue_len
    break
  elseif max_lane > 0 and lane_len >= max_lane then
    out[#out + 1] = 'lane_full:' .. lane_len
    break
  else
    local due = 0
    if delay > 0 then due = now + delay elseif due_at > now then due = due_at end
    local state = 'ready'
    if due > 0 then state = 'scheduled' end
    redis.call('HSET', jobkey, 'id', id, 'task', task, 'lane', lane, 'payload', payload,
      'state', state, 'attempts', 0, 'failures', 0, 'crashes', 0,
      'max_attempts', ARGV[b + 4], 'max_crashes', ARGV[b + 5], 'created_ms', now)
    if trace ~= '' then redis.call('HSET', jobkey, 'trace', trace) end
    if idem_key ~= '' then
      redis.call('SET', prefix .. 'idem:enqueue:' .. idem_key, id, 'PX', idem_ttl)
      redis.call('HSET', jobkey, 'idem_key', idem_key)
    end
    local etype = 'enqueued'
    if due > 0 then
      redis.call('HSET', jobkey, 'due_ms', due)
      redis.call('ZADD', scheduled, due, id)
      etype = 'scheduled'
    else
      redis.call('RPUSH', lane_key, id)
      woke = true
    end
    emit_job(stream, now, etype, jobkey, id, {'to', state, 'lane', lane, 'task', task,
      'payload', payload, 'due', due > 0 and due or false, 'trace', trace,
      'attrs', cjson.encode({max_attempts = ARGV[b + 4], max_crashes = ARGV[b + 5]})})
    queue_len = queue_len + 1
    out[#out + 1] = 'ok'
  end
end
if woke then wake(wake_key) end
if n > 0 and #out > 0 then
  -- A scheduled job may be due before what idle workers are waiting for: wake one so
  -- it re-reads the earliest due time.
  if not woke and redis.call('ZCARD', scheduled) > 0 then wake(wake_key) end
end
return out
