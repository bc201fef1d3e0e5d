-- complete_page: complete one page (its connections into the sync's staging,
-- its cursor from pending to done); the last page marks the sync for
-- finalization (SyncStore.complete_page). A page already complete is a no-op
-- (a redelivery). The last page sets `finalizing`
-- to the status the sync will have (partial if a guard flagged it); the
-- status itself stays as it is until the network is committed in PostgreSQL
-- and finish.lua makes it final. With `guard` (a page that launched nothing)
-- the page guard also records the page (a page that launches does that in
-- add_pending.lua, before its launches are sent).
--
-- KEYS[1] guard: the page guard's memory (hash; see guard_prelude.lua)
-- KEYS[2] record: the sync record (hash)
-- KEYS[3] pending: page cursor launched, not yet stored → its parent (hash)
-- KEYS[4] done: page cursor stored → its parent (hash)
-- KEYS[5] staging_h: the connections fetched so far, id → handle (hash)
-- ARGV[1] = JSON object (plus guard_prelude's arguments):
--   cursor: the page's cursor
--   partial_reason: why a guard stopped paging here ("" for none)
--   connections: one flat array [id, handle, id, handle, ...] (one JSON
--       value instead of two per connection)
--   count_call: true to count the page's provider call
--   rate_fields: what the call's rate-limit headers said (object: field → text)
-- needs: guard_prelude
-- returns: 'completed', 'duplicate' (already complete), 'inactive' (the sync
--   finished meanwhile), or 'finalize' (the last page: the caller finalizes)
local rec, pending, done, staging_h = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cursor = args.cursor

local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 'inactive' end
local parent = redis.call('HGET', pending, cursor) or ''
if redis.call('HSETNX', done, cursor, parent) == 0 then return 'duplicate' end
redis.call('HDEL', pending, cursor)
guard_page(false)
if args.partial_reason ~= '' then redis.call('HSET', rec, 'partial_reason', args.partial_reason) end
local flat = args.connections
local n = #flat / 2
local chunk = 500
for first = 0, n - 1, chunk do
  local upto = math.min(first + chunk, n) - 1
  local hargs = {}
  for i = first, upto do
    hargs[#hargs + 1] = flat[1 + 2 * i]; hargs[#hargs + 1] = flat[2 + 2 * i]
  end
  redis.call('HSET', staging_h, unpack(hargs))
end
-- what the call's headers said, kept with the sync (and the call counted)
for field, value in pairs(args.rate_fields) do redis.call('HSET', rec, field, value) end
if args.count_call then redis.call('HINCRBY', rec, 'calls', 1) end
redis.call('HINCRBY', rec, 'pages_fetched', 1)
redis.call('HSET', rec, 'connections_fetched', redis.call('HLEN', staging_h))
if redis.call('HLEN', pending) == 0 then
  local status = 'succeeded'
  if redis.call('HEXISTS', rec, 'partial_reason') == 1 then status = 'partial' end
  redis.call('HSET', rec, 'finalizing', status)
  return 'finalize'
end
return 'completed'
