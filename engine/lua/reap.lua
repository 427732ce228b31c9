-- reap: walk the worker registry; every worker whose heartbeat expired has its jobs
-- returned to the head of their lanes (or dead-lettered past their crash limit) and
-- leaves the registry. A short lock keeps to one reaper per queue at a time.
-- KEYS[1] workers registry set   KEYS[2] events stream   KEYS[3] dead-letter list
-- KEYS[4] reaper lock   KEYS[5] wake list
-- ARGV[1] key prefix   ARGV[2] lock ms   ARGV[3] id of the worker running the reaper
-- Returns {'locked'} when another reaper ran within the lock time, else
-- {'ok', workers reaped, jobs returned, jobs dead-lettered}.
local workers, stream, dead, lock, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, reaper = ARGV[1], ARGV[3]
if not redis.call('SET', lock, reaper, 'NX', 'PX', tonumber(ARGV[2])) then
  return {'locked'}
end
local now = now_ms()
local n_workers, n_returned, n_dead = 0, 0, 0

local function recover(worker, id)
  local jobkey = prefix .. 'job:' .. id
  local job = redis.call('HMGET', jobkey, 'state', 'worker', 'lane', 'task', 'attempts',
    'token', 'crashes', 'max_crashes')
  if job[1] ~= 'active' or job[2] ~= worker then return end
  local crashes = redis.call('HINCRBY', jobkey, 'crashes', 1)
  local attrs = cjson.encode({crashes = tostring(crashes), reaper = reaper})
  if crashes > tonumber(job[8]) then
    redis.call('RPUSH', dead, id)
    redis.call('HSET', jobkey, 'state', 'dead', 'dead_reason', 'crash_limit', 'dead_ms', now)
    redis.call('HDEL', jobkey, 'worker')
    emit_job(stream, now, 'reaped', jobkey, id, {'from', 'active', 'to', 'lost',
      'lane', job[3], 'task', job[4], 'attempt', job[5], 'worker', worker, 'token', job[6],
      'attrs', attrs})
    emit_job(stream, now, 'dead_lettered', jobkey, id, {'from', 'lost', 'to', 'dead',
      'lane', job[3], 'task', job[4], 'attempt', job[5], 'reason', 'crash_limit'})
    n_dead = n_dead + 1
  else
    return_to_lane(prefix, jobkey, id)
    emit_job(stream, now, 'reaped', jobkey, id, {'from', 'active', 'to', 'ready',
      'lane', job[3], 'task', job[4], 'attempt', job[5], 'worker', worker, 'token', job[6],
      'attrs', attrs})
    n_returned = n_returned + 1
  end
end

for _, worker in ipairs(redis.call('SMEMBERS', workers)) do
  if redis.call('EXISTS', prefix .. 'hb:' .. worker) == 0 then
    local processing = prefix .. 'processing:' .. worker
    local ids = redis.call('LRANGE', processing, 0, -1)
    -- Last claimed first, so that after the LPUSHes the first claimed is first again.
    for i = #ids, 1, -1 do recover(worker, ids[i]) end
    redis.call('DEL', processing)
    redis.call('SREM', workers, worker)
    emit(stream, now, 'worker_reaped', {'worker', worker,
      'attrs', cjson.encode({jobs = table.concat(ids, ','), reaper = reaper})})
    n_workers = n_workers + 1
  end
end
if n_returned > 0 then wake(wake_key) end
return {'ok', n_workers, n_returned, n_dead}
