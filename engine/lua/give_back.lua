-- give_back: a worker returns jobs it will not finish (graceful shutdown, or leaving
-- the registry) to the head of their lanes, each with a `returned` event; with
-- ARGV[4] = 'leave' it also leaves the registry afterwards with `worker_left`.
-- KEYS[1] worker processing list   KEYS[2] events stream   KEYS[3] wake list
-- KEYS[4] worker heartbeat   KEYS[5] workers registry set
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] reason   ARGV[4] 'leave' or 'stay'
-- ARGV[5] number of jobs, then 2 values per job: id, fencing token
-- Returns one status per job: 'ok' or 'stale:<reason>'.
local processing, stream, wake_key, hb, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, worker, reason = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local out = {}

local function give(id, token)
  local jobkey = prefix .. 'job:' .. id
  local why = stale_reason(jobkey, worker, token)
  if why then return reject(stream, now, jobkey, id, worker, token, why, 'return') end
  redis.call('LREM', processing, 1, id)
  local lane = return_to_lane(prefix, jobkey, id)
  local job = redis.call('HMGET', jobkey, 'task', 'attempts')
  emit_job(stream, now, 'returned', jobkey, id, {'from', 'active', 'to', 'ready',
    'lane', lane, 'task', job[1], 'attempt', job[2], 'worker', worker, 'token', token,
    'reason', reason})
  return 'ok'
end

local n = tonumber(ARGV[5])
for j = n - 1, 0, -1 do out[j + 1] = give(ARGV[6 + j * 2], ARGV[7 + j * 2]) end

if ARGV[4] == 'leave' then
  -- Anything still listed (a job whose token the worker lost track of) goes back too,
  -- or it would be orphaned once the worker leaves the registry the reaper walks.
  local left = redis.call('LRANGE', processing, 0, -1)
  for i = #left, 1, -1 do
    local jobkey = prefix .. 'job:' .. left[i]
    give(left[i], redis.call('HGET', jobkey, 'token') or '')
  end
  redis.call('DEL', processing, hb)
  redis.call('SREM', workers, worker)
  emit(stream, now, 'worker_left', {'worker', worker, 'reason', reason})
end
if n > 0 then wake(wake_key) end
return out
