-- add_pending: mark cursors as launched by `parent` (the cursor of the page
-- that found them; "" for round one) before their tasks are sent
-- (SyncStore.add_pending, SyncStore.launch_pages). With `guard` (a page that
-- found these cursors) the page guard records the page first and may stop the
-- paging there: then nothing is launched.
--
-- KEYS[1] guard: the page guard's memory (hash; see guard_prelude.lua)
-- KEYS[2] record: the sync record (hash)
-- KEYS[3] pending: page cursor launched, not yet stored → its parent (hash)
-- KEYS[4] done: page cursor stored → its parent (hash)
-- ARGV[1] = JSON object (plus guard_prelude's arguments):
--   parent: the cursor of the page that found these ("" for round one)
--   cursors: the cursors to launch (array)
-- needs: guard_prelude
-- returns: {reason, mark, mark, ...}: reason is why the guard stopped paging
--   here ('' for none; then no marks); a mark per cursor: 'new' (send it),
--   'rerun' (already launched by this same parent: we are a redelivery; send
--   again, harmless) or 'repeat' (another page already launched or stored it:
--   the provider repeated a cursor; do not send); {} if the sync is no longer active
local rec, pending, done = KEYS[2], KEYS[3], KEYS[4]
local parent = args.parent
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return {} end
local reason = guard_page(true)
if reason ~= '' then return {reason} end
local out = {''}
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
