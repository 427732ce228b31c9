-- ack: finish jobs successfully, each with its `acked` event; a stale ack is refused
-- and recorded as `ack_rejected`, never counted.
-- KEYS[1] worker processing list   KEYS[2] events stream
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] retention of finished jobs, ms
-- ARGV[4] number of jobs, then 3 values per job: id, fencing token, run time ms
-- Returns one status per job: 'ok' or 'stale:<reason>'.
local processing, stream = KEYS[1], KEYS[2]
local prefix, worker, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local out = {}
for j = 0, tonumber(ARGV[4]) - 1 do
  local id, token, run_ms = ARGV[5 + j * 3], ARGV[6 + j * 3], ARGV[7 + j * 3]
  local jobkey = prefix .. 'job:' .. id
  local why = stale_reason(jobkey, worker, token)
  if why then
    out[#out + 1] = reject(stream, now, jobkey, id, worker, token, why, 'ack')
  else
    redis.call('LREM', processing, 1, id)
    local job = redis.call('HMGET', jobkey, 'lane', 'task', 'attempts')
    redis.call('HSET', jobkey, 'state', 'done', 'finished_ms', now)
    redis.call('PEXPIRE', jobkey, retention)
    emit_job(stream, now, 'acked', jobkey, id, {'from', 'active', 'to', 'done',
      'lane', job[1], 'task', job[2], 'attempt', job[3], 'worker', worker, 'token', token,
      'attrs', cjson.encode({run_ms = run_ms})})
    out[#out + 1] = 'ok'
  end
end
return out
