-- purge_lane: delete up to a batch of ready jobs from the head of one lane, each job
-- record with its `purged` event (reason 'operator'). The caller loops until a call
-- purges fewer than it asked for, so no single call blocks the server for long.
-- KEYS[1] lane list   KEYS[2] events stream
-- ARGV[1] key prefix   ARGV[2] who asked (free text for the ledger)   ARGV[3] batch size
-- Returns {ids popped, jobs purged}. An id whose record is gone or not 'ready' is a
-- stray lane entry: it leaves the lane with a `purged` event that carries no sequence
-- number and names what was found, and the record (if any) is left alone.
local lane_key, stream = KEYS[1], KEYS[2]
local prefix, actor, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lane = string.sub(lane_key, #prefix + 6)
local now = now_ms()
local popped, purged = 0, 0

local function stray(id, state)
  emit(stream, now, 'purged', {'job', id, 'lane', lane, 'reason', 'operator',
    'attrs', cjson.encode({by = actor, stray = state or 'missing'})})
end

local function purge(id, jobkey, task)
  emit_job(stream, now, 'purged', jobkey, id, {'from', 'ready', 'lane', lane, 'task', task,
    'reason', 'operator', 'attrs', cjson.encode({by = actor})})
  redis.call('DEL', jobkey)
end

for _ = 1, batch do
  local id = redis.call('LPOP', lane_key)
  if not id then break end
  popped = popped + 1
  local jobkey = prefix .. 'job:' .. id
  local job = redis.call('HMGET', jobkey, 'state', 'task')
  if job[1] == 'ready' then
    purge(id, jobkey, job[2])
    purged = purged + 1
  else
    stray(id, job[1])
  end
end
return {popped, purged}
