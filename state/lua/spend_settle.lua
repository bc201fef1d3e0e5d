-- spend_settle: a call was answered (or not sent): release its reservation
-- and count what the provider billed and how the call counted (SpendBook.settle).
--
-- KEYS[1] day: one provider's UTC day (hash; see spend_reserve.lua)
-- ARGV[1] = JSON object:
--   reservation?: the reservation's id (none: nothing was reserved)
--   billed: micro-USD the answer was billed
--   calls: 1 for a call that was sent, else 0
--   counted: 1 when it used the provider's quota
--   not_modified: 1 for a conditional answer that did not
--   resources: items the provider billed for
--   ttl: seconds the day's hash lives
-- A reservation already settled is not counted twice (a settle sent again);
-- one the day no longer holds (the hash was lost) is counted all the same.
-- returns: the day's totals as JSON {spent, reserved, calls, counted, not_modified, resources}
local args = cjson.decode(ARGV[1])
local day = KEYS[1]
local fresh = true
if args.reservation then
  local field = 'r:' .. args.reservation
  local held = tonumber(redis.call('HGET', day, field))
  if held then
    redis.call('HDEL', day, field)
    redis.call('HINCRBY', day, 'reserved', -held)
  elseif redis.call('HEXISTS', day, 'seeded') == 1 then
    fresh = false
  end
end
if fresh then
  local counts = {calls = args.calls, counted = args.counted, not_modified = args.not_modified,
                  resources = args.resources, spent = args.billed}
  for field, n in pairs(counts) do
    if n ~= 0 then redis.call('HINCRBY', day, field, n) end
  end
end
redis.call('PEXPIRE', day, math.ceil(args.ttl * 1000))
local totals = {}
for _, field in ipairs({'spent', 'reserved', 'calls', 'counted', 'not_modified', 'resources'}) do
  totals[field] = tonumber(redis.call('HGET', day, field)) or 0
end
return cjson.encode(totals)
