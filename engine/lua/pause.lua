-- pause: stop or restart handing out claims on a queue; enqueues still land.
-- KEYS[1] meta hash   KEYS[2] events stream   KEYS[3] wake list   KEYS[4] workers registry
-- ARGV[1] 'pause' or 'resume'   ARGV[2] who asked (free text for the ledger)
-- Returns 1 when the state changed, 0 when it already was so (no event then).
local meta, stream, wake_key, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local want = ARGV[1] == 'pause' and '1' or '0'
local was = redis.call('HGET', meta, 'paused') or '0'
if was == want then return 0 end
redis.call('HSET', meta, 'paused', want)
local now = now_ms()
emit(stream, now, ARGV[1] == 'pause' and 'paused' or 'resumed',
  {'attrs', cjson.encode({by = ARGV[2]})})
if want == '0' then
  -- Wake every idle worker at once rather than at their next idle timeout.
  for _ = 1, math.max(1, redis.call('SCARD', workers)) do wake(wake_key) end
end
return 1
