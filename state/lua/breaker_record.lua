-- breaker_record: a call's outcome moves the provider's breaker (CircuitBreaker.record).
--
-- KEYS[1] breaker: the provider's breaker (hash, as in breaker_allow.lua)
-- ARGV[1] = JSON object:
--   now: epoch seconds
--   ok: true for any answer that is not the provider failing
--   threshold: consecutive failures that open the breaker
--   cooldown: the first cooldown while open, seconds
--   max_cooldown: the longest cooldown (it doubles after each failed probe)
--   kind: the taxonomy's name of the failure ("" on success)
-- returns: the breaker's state afterwards, "closed" or "open"
local args = cjson.decode(ARGV[1])
local breaker = KEYS[1]
local now = args.now
local state = redis.call('HGET', breaker, 'state') or 'closed'
if args.ok then
  redis.call('HSET', breaker, 'state', 'closed', 'failures', 0, 'cooldown', args.cooldown,
             'probe_until', 0)
  return 'closed'
end
redis.call('HSET', breaker, 'last_kind', args.kind)
if state == 'open' then return 'open' end  -- a call that was in flight when it opened
local failures = redis.call('HINCRBY', breaker, 'failures', 1)
local cooldown = tonumber(redis.call('HGET', breaker, 'cooldown') or args.cooldown)
if state == 'half_open' then
  cooldown = math.min(cooldown * 2, args.max_cooldown)
elseif failures < args.threshold then
  return 'closed'
end
redis.call('HSET', breaker, 'state', 'open', 'open_until', now + cooldown, 'cooldown', cooldown,
           'probe_until', 0)
return 'open'
