-- begin: start a sync for one user and provider, unless one is in flight or
-- the network is fresh (SyncStore.begin_sync). Fifty concurrent triggers
-- start one sync.
--
-- The sync in flight is named by the in-flight marker, and its record is a
-- key like any other: Python reads the marker, passes that sync's record as
-- KEYS[4] and the id it read as `seen`; if the marker changed meanwhile the
-- script changes nothing and answers 'retry' (Python reads again).
--
-- KEYS[1] inflight: sync id of the sync in flight (string)
-- KEYS[2] last: the last complete network's summary (hash)
-- KEYS[3] record: the new sync's record (hash), created here
-- KEYS[4] seen_record?: the record of the sync `seen` names; left out when
--     Python saw none in flight
-- ARGV[1] = JSON object:
--   sync_id: the new sync's id
--   now: epoch seconds as text (stored verbatim as created_at)
--   freshness_s: a network synced this recently is fresh (no new sync)
--   stale_s: a sync in flight this long is presumed dead (a new one starts)
--   force: true to ignore freshness
--   seen?: the sync id Python read from KEYS[1]; absent if none
--   fields: the new record's fields (object: field → text)
-- returns: {outcome, sync_id, status, queue}; outcome is 'created',
--   'inflight' (that sync answers), 'fresh' (the last sync answers) or
--   'retry' (the marker moved: nothing done)
local args = cjson.decode(ARGV[1])
local inflight, last, rec, seen_rec = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(args.now)
local current = redis.call('GET', inflight)
if current ~= (args.seen or false) then return {'retry', '', '', ''} end
if current then
  local st = redis.call('HGET', seen_rec, 'status')
  local created = tonumber(redis.call('HGET', seen_rec, 'created_at') or '0')
  if (st == 'queued' or st == 'running') and now - created < args.stale_s then
    return {'inflight', current, st, redis.call('HGET', seen_rec, 'queue') or ''}
  end
end
if not args.force then
  local synced_at = tonumber(redis.call('HGET', last, 'synced_at') or '')
  if synced_at and now - synced_at < args.freshness_s then
    local summary = redis.call('HMGET', last, 'sync_id', 'queue')
    return {'fresh', summary[1] or '', 'fresh', summary[2] or ''}
  end
end
for field, value in pairs(args.fields) do redis.call('HSET', rec, field, value) end
redis.call('HSET', rec, 'status', 'queued', 'created_at', args.now,
           'pages_fetched', 0, 'connections_fetched', 0, 'calls', 0)
redis.call('SET', inflight, args.sync_id)
return {'created', args.sync_id, 'queued', redis.call('HGET', rec, 'queue') or ''}
