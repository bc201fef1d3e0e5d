-- guard_prelude: the page guard's memory (state.page_guard), shared by the
-- scripts that launch or store a page (add_pending, complete_page), which
-- declare `needs: guard_prelude`; state.lua prepends this file to them. It
-- decodes the arguments and defines guard_page, which records what the
-- guard must remember of a page and says why paging must stop there. The
-- rules are providers.pagination's: Python works out which apply
-- (state.page_guard.guard_args); only what needs the sync's memory is here.
--
-- KEYS[1] guard: the page guard's memory (hash: sig:<hash of a page's ids> → the
--     cursor that first returned that page; ones → the current run of one-item pages)
-- ARGV[1] = JSON object:
--   guard?: what the guard needs of this page; absent: nothing is recorded
--       (object: cursor, the page's cursor; sig?, its content's field, absent
--       for an empty page; count_ones, true to count the run of one-item
--       pages; one_item, the page holds one item; run_limit, the longest run
--       allowed; at_limit, the sync reached its page limit with this page;
--       ttl, seconds the memory outlives its last page)
local args = cjson.decode(ARGV[1])
local guard_key = KEYS[1]

-- Records the page; returns why paging must stop at it ('' to go on). A page
-- that launches nothing is never stopped (`launches` false), only remembered.
local function guard_page(launches)
  local g = args.guard
  if g == nil then return '' end
  local repeated, ones = false, 0
  if g.sig ~= nil or g.count_ones then
    if g.sig ~= nil and redis.call('HSETNX', guard_key, g.sig, g.cursor) == 0 then
      -- another cursor returned this very page before: a redelivery is not a repeat
      repeated = redis.call('HGET', guard_key, g.sig) ~= g.cursor
    end
    if g.count_ones then
      if g.one_item then ones = redis.call('HINCRBY', guard_key, 'ones', 1)
      else redis.call('HSET', guard_key, 'ones', 0) end
    end
    redis.call('PEXPIRE', guard_key, g.ttl * 1000)
  end
  if not launches then return '' end
  if repeated then return 'repeated_page' end
  if g.count_ones and g.one_item and ones >= g.run_limit then return 'one_item_pages' end
  if g.at_limit then return 'page_limit' end
  return ''
end
