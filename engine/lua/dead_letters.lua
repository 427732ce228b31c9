-- dead_letters: requeue dead letters to their lanes (attempts reset) or purge them,
-- each with its `requeued` or `purged` event. Bounded work per call.
-- KEYS[1] dead-letter list   KEYS[2] events stream   KEYS[3] wake list
-- ARGV[1] key prefix   ARGV[2] 'requeue' or 'purge'   ARGV[3] who asked
-- ARGV[4] 'all' or 'ids'   ARGV[5] with 'all': how many at most; with 'ids': the count,
-- followed by the job ids
-- Returns {done, not found ids...}.
local dead, stream, wake_key = KEYS[1], KEYS[2], KEYS[3]
local prefix, action, actor = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local done, missing = 0, {}

local function handle(id)
  local jobkey = prefix .. 'job:' .. id
  local job = redis.call('HMGET', jobkey, 'state', 'lane', 'task')
  if job[1] ~= 'dead' then return false end
  local attrs = cjson.encode({by = actor})
  if action == 'requeue' then
    redis.call('HSET', jobkey, 'state', 'ready', 'attempts', 0, 'failures', 0, 'crashes', 0)
    redis.call('HDEL', jobkey, 'dead_reason', 'dead_ms')
    redis.call('RPUSH', prefix .. 'lane:' .. job[2], id)
    emit_job(stream, now, 'requeued', jobkey, id, {'from', 'dead', 'to', 'ready',
      'lane', job[2], 'task', job[3], 'attrs', attrs})
  else
    emit_job(stream, now, 'purged', jobkey, id, {'from', 'dead', 'lane', job[2],
      'task', job[3], 'reason', 'operator', 'attrs', attrs})
    redis.call('DEL', jobkey)
  end
  done = done + 1
  return true
end

if ARGV[4] == 'all' then
  for _ = 1, tonumber(ARGV[5]) do
    local id = redis.call('LPOP', dead)
    if not id then break end
    if not handle(id) then missing[#missing + 1] = id end
  end
else
  for i = 1, tonumber(ARGV[5]) do
    local id = ARGV[5 + i]
    if redis.call('LREM', dead, 1, id) == 1 and handle(id) then
      -- handled
    else
      missing[#missing + 1] = id
    end
  end
end
if action == 'requeue' and done > 0 then wake(wake_key) end
local out = {done}
for _, id in ipairs(missing) do out[#out + 1] = id end
return out
