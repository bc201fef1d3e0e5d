-- fail: finish an active sync as failed / needs_reauth / cancelled; the network
-- in PostgreSQL stays as it was (SyncStore.fail). A sync whose last page is
-- complete (`finalizing`) can no longer fail: its network may be committing.
--
-- KEYS[1] record: the sync record (hash)
-- KEYS[2] pending: the sync's launched cursors (hash), dropped
-- KEYS[3] done: the sync's stored cursors (hash), dropped
-- KEYS[4] staging_h: the connections fetched so far (hash), dropped
-- KEYS[5] guard: the page guard's memory (hash), dropped
-- KEYS[6] inflight: the network's in-flight marker, cleared if it names this sync
-- ARGV[1] = JSON object:
--   sync_id: the sync's id
--   status: the final status
--   now: epoch seconds as text (stored verbatim as finished_at)
--   kind: the error kind
--   message: the error message
-- returns: 1 if the sync was active (now finished), else 0
local args = cjson.decode(ARGV[1])
local rec, pending, done, staging_h, guard, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
if redis.call('HEXISTS', rec, 'finalizing') == 1 then return 0 end
redis.call('HSET', rec, 'status', args.status, 'finished_at', args.now, 'error_kind', args.kind,
           'error_message', args.message)
redis.call('DEL', pending, done, staging_h, guard)
if redis.call('GET', inflight) == args.sync_id then redis.call('DEL', inflight) end
return 1
