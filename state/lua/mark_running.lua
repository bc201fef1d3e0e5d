-- mark_running: a queued sync's first task has started (SyncStore.mark_running).
--
-- KEYS[1] record: the sync record (hash)
-- ARGV[1] = JSON object:
--   now: epoch seconds as text (stored verbatim as started_at)
-- returns: 1 if the sync was queued (now running), else 0
local args = cjson.decode(ARGV[1])
local rec = KEYS[1]
if redis.call('HGET', rec, 'status') ~= 'queued' then return 0 end
redis.call('HSET', rec, 'status', 'running', 'started_at', args.now)
return 1
