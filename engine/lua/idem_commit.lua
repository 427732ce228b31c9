-- idem_commit: a handler's Redis side effect, its idempotency record marked done and its
-- published messages, all in one atomic call. The effect's keys must live on this node
-- (in a Redis Cluster: in the queue's hash tag slot).
-- KEYS[1] the idempotency record   KEYS[2] events stream
-- ARGV[1] key prefix   ARGV[2] job id   ARGV[3] worker id   ARGV[4] fencing token
-- ARGV[5] idempotency key   ARGV[6] record retention ms
-- ARGV[7] number of commands, then per command: its argument count and the arguments
-- then the number of messages, and topic, message pairs
-- Returns {'ok', command replies...}, or {'done', original job} / {'lost'} when the record
-- is no longer this claim's (nothing is executed then).
local rec, stream = KEYS[1], KEYS[2]
local prefix, id, worker, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('HMGET', rec, 'state', 'job', 'token')
if cur[1] == 'done' then return {'done', cur[2]} end
if cur[1] ~= 'running' or cur[2] ~= id or cur[3] ~= token then return {'lost'} end

local now = now_ms()
local out = {'ok'}
local i = 8
for _ = 1, tonumber(ARGV[7]) do
  local argc = tonumber(ARGV[i])
  local cmd = {}
  for k = 1, argc do cmd[k] = ARGV[i + k] end
  out[#out + 1] = redis.call(unpack(cmd))
  i = i + argc + 1
end
local messages = {}
for k = 1, tonumber(ARGV[i]) * 2 do messages[k] = ARGV[i + k] end
publish(stream, now, id, worker, messages)
idem_done(prefix, ARGV[5], id, tonumber(ARGV[6]), now)
return out
