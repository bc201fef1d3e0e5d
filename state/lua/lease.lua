-- lease: hold one of a key's `cap` places for a call in flight, or give one
-- back (ConcurrencyCap). A place not given back (its worker died) frees
-- itself when its lease expires.
--
-- KEYS[1] leases: the calls in flight of one key (zset: lease id → expiry, epoch seconds)
-- ARGV[1] = JSON object:
--   now: epoch seconds
--   mode: 'acquire' or 'release'
--   lease: the lease's id
--   cap: most leases held at once
--   ttl: seconds a lease lives (the longest a call stays out)
--   poll: the longest a refused caller waits before it looks again
-- returns: acquire: {1, '0'} when held, else {0, wait seconds as text};
--   release: {1, '0'} if it was held, else {0, '0'}
local args = cjson.decode(ARGV[1])
local leases = KEYS[1]
local now = args.now
if args.mode == 'release' then
  return {redis.call('ZREM', leases, args.lease), '0'}
end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', string.format('%.6f', now))
if redis.call('ZCARD', leases) < args.cap then
  redis.call('ZADD', leases, string.format('%.6f', now + args.ttl), args.lease)
  redis.call('PEXPIRE', leases, math.ceil((args.ttl + 60) * 1000))
  return {1, '0'}
end
local first = redis.call('ZRANGEBYSCORE', leases, '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local wait = math.min(args.poll, math.max(tonumber(first[2]) - now, 0.001))
return {0, string.format('%.6f', wait)}
