-- claim: take the due entries of the delayed set, earliest first, leased
-- until `lease_until` (DelayedSet.claim_due).
--
-- KEYS[1] due: entry id → due time or lease end (zset)
-- KEYS[2] entries: entry id → JSON of the task to send (hash)
-- KEYS[3] claims: entry id → times claimed (hash)
-- KEYS[4] claimed_by?: entry id → the claiming scheduler, until released (hash)
-- ARGV[1] = JSON object:
--   now: epoch seconds; entries due by then are claimed
--   lease_until: their new score: due again then unless released
--   limit: claim at most this many
--   claimer?: the claiming scheduler's holder id (state.liveness): if its host is
--       lost, the other scheduler makes its claims due at once (DelayedSet.due_again)
-- returns: {id, payload, claims, id, payload, claims, ...}
local args = cjson.decode(ARGV[1])
local due, entries, claims = KEYS[1], KEYS[2], KEYS[3]
local claimed_by = KEYS[4]
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', args.now, 'LIMIT', 0, args.limit)
local out = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', entries, id)
  if payload then
    redis.call('ZADD', due, args.lease_until, id)
    local times = redis.call('HINCRBY', claims, id, 1)
    if args.claimer then redis.call('HSET', claimed_by, id, args.claimer) end
    table.insert(out, id); table.insert(out, payload); table.insert(out, times)
  else
    redis.call('ZREM', due, id)  -- released while we looked: nothing to send
  end
end
return out
