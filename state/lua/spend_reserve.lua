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
--   budget?: micro-USD the day may spend (none: no budget)
--   seed?: the ledger's totals for the day (object: spent, calls, counted,
--       not_modified, resources), to start a day this hash does not hold
--   ttl: seconds the day's hash lives
-- returns: {1, committed micro-USD (text)} when reserved; {0, 'budget'} when the
--   day's spending alone leaves no room; {0, 'held'} when only open reservations
--   do (they settle within seconds, most for less); {0, 'unseeded'} when the
--   day needs its seed first
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
if args.budget and spent + reserved + args.worst > args.budget then
  if spent + args.worst > args.budget then return {0, 'budget'} end
  return {0, 'held'}
end
redis.call('HSET', day, 'r:' .. args.reservation, string.format('%d', args.worst))
redis.call('HINCRBY', day, 'reserved', args.worst)
return {1, string.format('%d', spent + reserved + args.worst)}
