-- leader: take, renew or give up a named lease (Liveness.lease): one
-- scheduler at a time runs the lost-worker sweep. The lease expires on
-- Redis' clock, so a holder that stops renewing (its host lost, cut off)
-- loses it after `ttl_ms` whatever the hosts' clocks say.
--
-- KEYS[1] lease: who holds the lease (string, expires unless renewed)
-- ARGV[1] = JSON object:
--   holder: who asks
--   ttl_ms: how long the lease lasts from now; 0 gives it up (if `holder` has it)
-- returns: 1 if `holder` holds the lease now, 0 if another holder does (or it was given up)
local args = cjson.decode(ARGV[1])
local lease = KEYS[1]
local current = redis.call('GET', lease)
if args.ttl_ms <= 0 then
  if current == args.holder then redis.call('DEL', lease) end
  return 0
end
if current == false or current == args.holder then
  redis.call('SET', lease, args.holder, 'PX', math.floor(args.ttl_ms))
  return 1
end
return 0
