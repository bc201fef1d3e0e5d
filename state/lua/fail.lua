-- fail: end an active sync as failed / needs_reauth / cancelled; the live
-- network stays as it was (SyncStore.fail).
--
-- KEYS[1] record: the sync record (hash)
-- KEYS[2] pending: the sync's launched cursors (hash), dropped
-- KEYS[3] done: the sync's stored cursors (hash), dropped
-- KEYS[4] staging: the connections fetched so far (zset), dropped
-- KEYS[5] staging_h: their handles (hash), dropped
-- KEYS[6] inflight: the user's in-flight marker, cleared if it names this sync
-- ARGV[1] = JSON object:
--   sync_id: the sync's id
--   status: the final status
--   now: epoch seconds as text (stored verbatim as finished_at)
--   kind: the error kind
--   message: the error message
-- returns: 1 if the sync was active (now ended), else 0
local args = cjson.decode(ARGV[1])
local rec, pending, done, staging, staging_h, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
redis.call('HSET', rec, 'status', args.status, 'finished_at', args.now, 'error_kind', args.kind,
           'error_message', args.message)
redis.call('DEL', pending, done, staging, staging_h)
if redis.call('GET', inflight) == args.sync_id then redis.call('DEL', inflight) end
return 1
