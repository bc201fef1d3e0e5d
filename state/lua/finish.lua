-- finish: make a sync final after PostgreSQL committed its network
-- (SyncStore.finish, from sync/finalize.py). Once only: a retried
-- finalization finds the record final and changes nothing. Writes the
-- freshness summary, drops the staging and the page bookkeeping, clears the
-- in-flight marker.
--
-- KEYS[1] record: the sync record (hash)
-- KEYS[2] pending: the sync's launched cursors (hash), dropped
-- KEYS[3] done: the sync's stored cursors (hash), dropped
-- KEYS[4] staging_h: the connections fetched (hash), dropped
-- KEYS[5] guard: the page guard's memory (hash), dropped
-- KEYS[6] last: the network's last final sync (hash)
-- KEYS[7] inflight: the network's in-flight marker, cleared if it names this sync
-- ARGV[1] = JSON object:
--   sync_id: the sync's id
--   status: the final status (succeeded / partial)
--   now: epoch seconds as text (stored verbatim as finished_at / synced_at)
--   count: connections in the committed network
--   added: how many the database found added
--   removed: how many it found removed
--   initial: true for the network's first sync
-- returns: 1 if this call made the sync final, else 0
local args = cjson.decode(ARGV[1])
local rec, pending, done, staging_h, guard, last, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
local count = tostring(args.count)
redis.call('HSET', rec, 'status', args.status, 'finished_at', args.now,
           'connections_fetched', count, 'added', tostring(args.added),
           'removed', tostring(args.removed), 'initial', args.initial and '1' or '0')
redis.call('HDEL', rec, 'finalizing')
local size = redis.call('HGET', rec, 'expected_total') or count
redis.call('HSET', last, 'sync_id', args.sync_id, 'synced_at', args.now, 'count', count,
           'size', size, 'status', args.status, 'queue', redis.call('HGET', rec, 'queue') or '')
redis.call('DEL', pending, done, staging_h, guard)
if redis.call('GET', inflight) == args.sync_id then redis.call('DEL', inflight) end
return 1
