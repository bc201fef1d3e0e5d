-- spend_reserve: reserve a call's worst-case cost against its provider's
-- budget for the UTC day, or refuse (SpendBook.reserve). Atomic: whatever the
-- number of workers, spent + reserved never passes the budget.
--
-- KEYS[1] day: one provider's UTC day (hash: reserved and spent in micro-USD,
--     calls, counted, not_modified, resources, r:<id> one open reservation's
--     micro-USD, seeded once the day holds at least what the ledger holds)
-- ARGV[1] = JSON object:
--   reservation: the reservation's id
--   worst: micro-USD the call may be billed at most (page size × price)
--   least: micro-USD of the smallest call worth sending (one resource, for a
--       call that can ask for fewer; else `worst`): when the budget left holds
--       less than `worst`, the reservation is what it holds, in whole `unit`s
--   unit: micro-USD of one resource (the reservation is a multiple of it)
--   budget?: micro-USD the day may spend (none: no budget)
--   seed?: the ledger's totals for the day (object: spent, calls, counted,
--       not_modified, resources), to start a day this hash does not hold
--   ttl: seconds the day's hash lives
-- returns: {1, reserved micro-USD (text)} when reserved; {0, 'budget'} when the
--   day's spending alone leaves no room for `least`; {0, 'held'} when only open
--   reservations do (they settle within seconds, most for less); {0, 'unseeded'}
--   when the day needs its seed first
local args = cjson.decode(ARGV[1])
local day = KEYS[1]
if redis.call('HEXISTS', day, 'seeded') == 0 then
  if not args.seed then return {0, 'unseeded'} end
  for field, value in pairs(args.seed) do
    -- the ledger may be behind this hash (never ahead of what was spent): keep the larger
    local current = tonumber(redis.call('HGET', day, field)) or 0
    if value > current then redis.call('HSET', day, field, string.format('%d', value)) end
  end
  redis.call('HSET', day, 'seeded', '1')
end
local reserved = tonumber(redis.call('HGET', day, 'reserved')) or 0
local spent = tonumber(redis.call('HGET', day, 'spent')) or 0
redis.call('PEXPIRE', day, math.ceil(args.ttl * 1000))
local take = args.worst
if args.budget then
  local room = args.budget - spent - reserved
  if room < take then
    -- what the budget left holds, in whole resources: a smaller call, not none
    take = math.floor(math.max(room, 0) / args.unit) * args.unit
  end
  if take < args.least then
    if spent + args.least > args.budget then return {0, 'budget'} end
    return {0, 'held'}
  end
end
redis.call('HSET', day, 'r:' .. args.reservation, string.format('%d', take))
redis.call('HINCRBY', day, 'reserved', take)
return {1, string.format('%d', take)}
