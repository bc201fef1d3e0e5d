-- complete_page: store one page's connections; the last page finalizes the
-- sync (SyncStore.complete_page). A page already stored is a no-op (a
-- redelivery). Finalizing computes the diff against the live network, renames
-- staging over it, sets the final status (partial if a guard flagged the sync)
-- and clears the in-flight marker: a reader never sees half a network.
--
-- KEYS[1] record: the sync record (hash)
-- KEYS[2] pending: page cursor launched, not yet stored → its parent (hash)
-- KEYS[3] done: page cursor stored → its parent (hash)
-- KEYS[4] staging: the connections fetched so far (zset, lex order)
-- KEYS[5] staging_h: their handles, id → handle (hash)
-- KEYS[6] network: the live network (zset), replaced when finalizing
-- KEYS[7] network_h: the live network's handles (hash)
-- KEYS[8] added: the diff's new connections (zset), rewritten when finalizing
-- KEYS[9] removed: the diff's lost connections (zset), rewritten when finalizing
-- KEYS[10] last: the last complete network's summary (hash)
-- KEYS[11] inflight: the user's in-flight marker, cleared if it names this sync
-- ARGV[1] = JSON object:
--   sync_id: the sync's id
--   cursor: the page's cursor
--   now: epoch seconds as text (stored verbatim as finished_at / synced_at)
--   partial_reason: why a guard stopped paging here ("" for none)
--   connections: one flat array [id, handle, id, handle, ...] (one JSON
--       value instead of two per connection)
--   count_call: true to count the page's provider call
--   rate_fields: what the call's rate-limit headers said (object: field → text)
-- returns: 'stored', 'duplicate' (already stored), 'inactive' (the sync ended
--   meanwhile), or the final status ('succeeded' / 'partial')
local args = cjson.decode(ARGV[1])
local rec, pending, done, staging, staging_h = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local network, network_h, added, removed = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local last, inflight = KEYS[10], KEYS[11]
local sync_id, cursor, now = args.sync_id, args.cursor, args.now

local function finalize()
  redis.call('DEL', added, removed)
  redis.call('ZDIFFSTORE', added, 2, staging, network)
  redis.call('ZDIFFSTORE', removed, 2, network, staging)
  local count = redis.call('ZCARD', staging)
  if count > 0 then
    redis.call('RENAME', staging, network)
    redis.call('RENAME', staging_h, network_h)
  else
    redis.call('DEL', network, network_h, staging_h)
  end
  local status = 'succeeded'
  if redis.call('HEXISTS', rec, 'partial_reason') == 1 then status = 'partial' end
  redis.call('HSET', rec, 'status', status, 'finished_at', now, 'connections_fetched', count)
  local size = redis.call('HGET', rec, 'expected_total') or count
  redis.call('HSET', last, 'sync_id', sync_id, 'synced_at', now, 'count', count,
             'size', size, 'status', status, 'queue', redis.call('HGET', rec, 'queue') or '')
  redis.call('DEL', pending, done)
  if redis.call('GET', inflight) == sync_id then redis.call('DEL', inflight) end
  return status
end

local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 'inactive' end
local parent = redis.call('HGET', pending, cursor) or ''
if redis.call('HSETNX', done, cursor, parent) == 0 then return 'duplicate' end
redis.call('HDEL', pending, cursor)
if args.partial_reason ~= '' then redis.call('HSET', rec, 'partial_reason', args.partial_reason) end
local flat = args.connections
local n = #flat / 2
local chunk = 500
for first = 0, n - 1, chunk do
  local upto = math.min(first + chunk, n) - 1
  local zargs, hargs = {}, {}
  for i = first, upto do
    local id, handle = flat[1 + 2 * i], flat[2 + 2 * i]
    zargs[#zargs + 1] = 0; zargs[#zargs + 1] = id
    hargs[#hargs + 1] = id; hargs[#hargs + 1] = handle
  end
  redis.call('ZADD', staging, unpack(zargs))
  redis.call('HSET', staging_h, unpack(hargs))
end
-- what the call's headers said, kept with the sync (and the call counted)
for field, value in pairs(args.rate_fields) do redis.call('HSET', rec, field, value) end
if args.count_call then redis.call('HINCRBY', rec, 'calls', 1) end
redis.call('HINCRBY', rec, 'pages_fetched', 1)
redis.call('HSET', rec, 'connections_fetched', redis.call('ZCARD', staging))
if redis.call('HLEN', pending) == 0 then return finalize() end
return 'stored'
