-- take_over: hand a lost worker's pages in progress to one caller, once
-- (Liveness.take_over). The worker is lost when its heartbeat key has
-- expired (Redis' own clock: no host's clock is compared with another's).
-- A worker that beats again before this runs keeps its pages; of two
-- sweeps, only the first gets them.
--
-- KEYS[1] holders: holder id → when it first beat (zset)
-- KEYS[2] beat: the holder's heartbeat (string, expires unless renewed)
-- KEYS[3] held: the holder's pages in progress, task id → JSON (hash)
-- ARGV[1] = JSON object:
--   holder: the holder id
-- returns: false if the holder is alive again or already taken over; else
--   {task id, JSON, task id, JSON, ...} (empty: it held nothing)
local args = cjson.decode(ARGV[1])
local holders, beat, held = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', beat) == 1 then return false end
if redis.call('ZREM', holders, args.holder) == 0 then return false end
local pages = redis.call('HGETALL', held)
redis.call('DEL', held)
return pages
