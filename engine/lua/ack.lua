-- ack: finish jobs successfully, each with its `acked` event; a stale ack is refused
-- and recorded as `ack_rejected`, never counted.
-- KEYS[1] worker processing list   KEYS[2] events stream
-- ARGV[1] key prefix   ARGV[2] worker id   ARGV[3] retention of finished jobs, ms
-- ARGV[4] idempotency record retention ms
-- ARGV[5] number of jobs, then 6 values per job: id, fencing token, run time ms,
--   idempotency key ('' for none: its record is marked done here), the original job id
--   when this run was a duplicate ('' otherwise), number of published messages
-- then, after all jobs, the topic and message pairs of every job in order.
-- Returns one status per job: 'ok' or 'stale:<reason>'. A duplicate writes
-- `deduplicated` instead of `acked`; messages are published only with a real ack.
local processing, stream = KEYS[1], KEYS[2]
local prefix, worker, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local out = {}
local n, idem_ttl = tonumber(ARGV[5]), tonumber(ARGV[4])
local m = 6 + n * 6
for j = 0, n - 1 do
  local b = 6 + j * 6
  local id, token, run_ms = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local idem_key, dup_of, n_msgs = ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5])
  local messages = {}
  for k = 1, n_msgs * 2 do messages[k] = ARGV[m + k - 1] end
  m = m + n_msgs * 2
  local jobkey = prefix .. 'job:' .. id
  local why = stale_reason(jobkey, worker, token)
  if why then
    out[#out + 1] = reject(stream, now, jobkey, id, worker, token, why, 'ack')
  else
    redis.call('LREM', processing, 1, id)
    local job = redis.call('HMGET', jobkey, 'lane', 'task', 'attempts')
    redis.call('HSET', jobkey, 'state', 'done', 'finished_ms', now)
    redis.call('PEXPIRE', jobkey, retention)
    if dup_of ~= '' then
      emit_job(stream, now, 'deduplicated', jobkey, id, {'from', 'active', 'to', 'done',
        'lane', job[1], 'task', job[2], 'attempt', job[3], 'worker', worker, 'token', token,
        'reason', 'already_done', 'attrs', cjson.encode({original_job = dup_of, key = idem_key})})
    else
      publish(stream, now, id, worker, messages)
      if idem_key ~= '' then idem_done(prefix, idem_key, id, idem_ttl, now) end
      emit_job(stream, now, 'acked', jobkey, id, {'from', 'active', 'to', 'done',
        'lane', job[1], 'task', job[2], 'attempt', job[3], 'worker', worker, 'token', token,
        'attrs', cjson.encode({run_ms = run_ms})})
    end
    out[#out + 1] = 'ok'
  end
end
return out
