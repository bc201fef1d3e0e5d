-- add_pending: mark cursors as launched by `parent` (the cursor of the page
-- that found them; "" for round one) before their tasks are sent
-- (SyncStore.add_pending).
--
-- KEYS[1] record: the sync record (hash)
-- KEYS[2] pending: page cursor launched, not yet stored → its parent (hash)
-- KEYS[3] done: page cursor stored → its parent (hash)
-- ARGV[1] = JSON object:
--   parent: the cursor of the page that found these ("" for round one)
--   cursors: the cursors to launch (array)
-- returns: per cursor, 'new' (send it), 'rerun' (already launched by this same
--   parent: we are a redelivery; send again, harmless) or 'repeat' (another
--   page already launched or stored it: the provider repeated a cursor; do not
--   send); {} if the sync is no longer active
local args = cjson.decode(ARGV[1])
local rec, pending, done = KEYS[1], KEYS[2], KEYS[3]
local parent = args.parent
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return {} end
local out = {}
for _, cursor in ipairs(args.cursors) do
  local owner = redis.call('HGET', done, cursor)
  if owner == false then owner = redis.call('HGET', pending, cursor) end
  if owner == false then
    redis.call('HSET', pending, cursor, parent)
    out[#out + 1] = 'new'
  elseif owner == parent then out[#out + 1] = 'rerun'
  else out[#out + 1] = 'repeat' end
end
return out
