-- Helpers shared by every script: engine/scripts.py puts this file in front of each
-- script before loading it. Nothing here touches a key by itself.

-- Server time in milliseconds (DESIGN invariant 2: never a worker's clock).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Append one event to the outbox stream. `fields` is a flat list of name, value pairs;
-- a nil or empty value leaves its field out (docs/events.md).
local function emit(stream, now, etype, fields)
  local args = {stream, '*', 'type', etype, 'ts', tostring(now)}
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v ~= nil and v ~= false and v ~= '' then
      args[#args + 1] = fields[i]
      args[#args + 1] = tostring(v)
    end
  end
  return redis.call('XADD', unpack(args))
end

-- Emit an event about one job: bumps the job's own sequence number in the same call.
local function emit_job(stream, now, etype, jobkey, job_id, fields)
  local seq = redis.call('HINCRBY', jobkey, 'seq', 1)
  local all = {'job', job_id, 'seq', seq}
  for i = 1, #fields do all[#all + 1] = fields[i] end
  return emit(stream, now, etype, all)
end

-- Refuse new work while the outbox holds too much un-shipped history (invariant 5).
-- Returns nil when within bounds, else {backlog, age_ms}.
local function over_backlog(stream, now, max_backlog, max_age_ms)
  if max_backlog <= 0 and max_age_ms <= 0 then return nil end
  local backlog = redis.call('XLEN', stream)
  if backlog == 0 then return nil end
  local age = 0
  if max_age_ms > 0 then
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if first then
      local ms = tonumber(string.match(first[1], '^(%d+)'))
      age = now - ms
    end
  end
  if (max_backlog > 0 and backlog >= max_backlog) or (max_age_ms > 0 and age >= max_age_ms) then
    return {backlog, age}
  end
  return nil
end

-- Wake one idle worker blocked on the queue's wake list.
local function wake(wake_key)
  redis.call('RPUSH', wake_key, '1')
  redis.call('LTRIM', wake_key, -1000, -1)
end

-- Why `worker` holding `token` may not finish the job at `jobkey`, or nil if it may.
local function stale_reason(jobkey, worker, token)
  local job = redis.call('HMGET', jobkey, 'state', 'worker', 'token')
  if not job[1] then return 'missing' end
  if job[1] ~= 'active' then return 'not_active' end
  if job[2] ~= worker then return 'not_owner' end
  if job[3] ~= token then return 'stale_token' end
  return nil
end

-- Record a refused ack, fail or return: it never changes the job, but it is history.
local function reject(stream, now, jobkey, id, worker, token, reason, op)
  local fields = {'worker', worker, 'token', token, 'reason', reason,
    'attrs', cjson.encode({op = op})}
  if reason == 'missing' then
    local all = {'job', id}
    for i = 1, #fields do all[#all + 1] = fields[i] end
    emit(stream, now, 'ack_rejected', all)
  else
    emit_job(stream, now, 'ack_rejected', jobkey, id, fields)
  end
  return 'stale:' .. reason
end

-- Put a job back at the head of its lane (it was taken first, it goes first again).
local function return_to_lane(prefix, jobkey, id)
  local lane = redis.call('HGET', jobkey, 'lane')
  redis.call('LPUSH', prefix .. 'lane:' .. lane, id)
  redis.call('HSET', jobkey, 'state', 'ready')
  redis.call('HDEL', jobkey, 'worker')
  return lane
end

-- Mark an execution idempotency record done for `id` (same call as the ack or effect).
local function idem_done(prefix, key, id, ttl_ms, now)
  local rec = prefix .. 'idem:run:' .. key
  redis.call('HSET', rec, 'state', 'done', 'job', id, 'done_ms', now)
  redis.call('HDEL', rec, 'worker', 'token')
  redis.call('PEXPIRE', rec, ttl_ms)
end

-- Append the messages a handler published (topic, message JSON pairs) as events.
local function publish(stream, now, id, worker, messages)
  for i = 1, #messages, 2 do
    emit(stream, now, 'published', {'job', id, 'worker', worker,
      'attrs', cjson.encode({topic = messages[i], message = messages[i + 1]})})
  end
end
