-- idem_begin: before a handler's side effects, claim the execution idempotency record
-- of its key for this job's claim.
-- KEYS[1] the idempotency record (hash)
-- ARGV[1] key prefix   ARGV[2] job id   ARGV[3] worker id   ARGV[4] fencing token
-- ARGV[5] record retention ms
-- Returns {'run'} (the record is ours: run the handler), {'done', original job id} (the
-- effect already happened: ack as a duplicate), or {'busy', holder job id} (a live
-- worker holds it: retry later, do not run).
local rec = KEYS[1]
local prefix, id, worker, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('HMGET', rec, 'state', 'job', 'worker', 'token')

local function take()
  redis.call('HSET', rec, 'state', 'running', 'job', id, 'worker', worker, 'token', token)
  redis.call('PEXPIRE', rec, tonumber(ARGV[5]))
  return {'run'}
end

if not cur[1] then return take() end
if cur[1] == 'done' then return {'done', cur[2]} end
if cur[2] == id and cur[4] == token then return {'run'} end
-- Held by another claim: it still counts only while that claim is live, i.e. its worker
-- has a heartbeat and the job is still active under that token.
local holder = prefix .. 'job:' .. cur[2]
local live = redis.call('EXISTS', prefix .. 'hb:' .. cur[3]) == 1
  and redis.call('HGET', holder, 'state') == 'active'
  and redis.call('HGET', holder, 'token') == cur[4]
if live then return {'busy', cur[2]} end
return take()
