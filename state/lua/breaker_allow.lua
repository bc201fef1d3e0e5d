-- breaker_allow: may a call to this provider go out now? (CircuitBreaker.allow)
--
-- KEYS[1] breaker: the provider's breaker (hash: state, failures, open_until, cooldown,
--       probe_until, last_kind)
-- ARGV[1] = JSON object:
--   now: epoch seconds
--   probe_lease: seconds the probe holds its turn
--   probe_poll: how soon a caller behind a probe in flight looks again
--   claim: true to become the probe when one is due; false only looks (a
--       caller that may not call after all: it asks again with claim to probe)
-- returns: {verdict, wait seconds, last kind?}; verdict "closed" (clean, nothing to
--       report on success), "go" (calls flow, failures are being counted), "probe"
--       (this caller is the probe), "probe_due" (only when not claiming: a probe
--       may go now) or "wait"
local args = cjson.decode(ARGV[1])
local breaker = KEYS[1]
local state = redis.call('HGET', breaker, 'state')
if not state or state == 'closed' then
  local failures = tonumber(redis.call('HGET', breaker, 'failures') or '0')
  if failures == 0 then return {'closed', '0'} end
  return {'go', '0'}
end
local now = args.now
local open_until = tonumber(redis.call('HGET', breaker, 'open_until') or '0')
local kind = redis.call('HGET', breaker, 'last_kind') or ''
if now < open_until then return {'wait', tostring(open_until - now), kind} end
local probe_until = tonumber(redis.call('HGET', breaker, 'probe_until') or '0')
if now < probe_until then  -- the probe is out: look again soon (it may close the breaker)
  return {'wait', tostring(math.min(probe_until - now, args.probe_poll)), kind}
end
if not args.claim then return {'probe_due', '0'} end
redis.call('HSET', breaker, 'state', 'half_open', 'probe_until', now + args.probe_lease)
return {'probe', '0'}
