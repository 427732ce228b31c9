-- heartbeat: register a worker in the queue's registry, or renew its heartbeat.
-- KEYS[1] worker heartbeat   KEYS[2] workers registry set   KEYS[3] events stream
-- KEYS[4] worker processing list
-- ARGV[1] worker id   ARGV[2] ttl ms   ARGV[3] 'register' or 'renew'
-- ARGV[4] worker description (JSON object of strings: host, pid, concurrency)
-- Returns the server time (ms) on registration; on renewal 1, or 0 when the heartbeat
-- was gone: the worker was reaped.
local hb, workers, stream, processing = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, ttl, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()

if mode == 'register' then
  redis.call('SET', hb, now, 'PX', ttl)
  redis.call('SADD', workers, worker)
  emit(stream, now, 'worker_registered', {'worker', worker, 'attrs', ARGV[4]})
  return now
end

if not redis.call('SET', hb, now, 'XX', 'PX', ttl) then return 0 end
local jobs = redis.call('LRANGE', processing, 0, -1)
emit(stream, now, 'heartbeat', {'worker', worker,
  'attrs', cjson.encode({jobs = table.concat(jobs, ','), ttl_ms = ARGV[2]})})
return 1
