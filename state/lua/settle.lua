-- settle: account a granted call at its answer, and learn the margin from its
-- latency (QuotaGate.settle). The provider received the call, if at all,
-- between its grant and now, so it counts in the window until one window
-- after now: earlier than the take's guess when the answer was quick, later
-- when it was slow.
--
-- KEYS[1] bucket: the quota bucket (hash; see quota_prelude.lua)
-- ARGV[1] = JSON object (plus quota_prelude's arguments):
--   slot: the sub-window the take accounted the call in (as take returned it, text)
--   granted_at: the take's time, epoch seconds
-- needs: quota_prelude
-- returns: the bucket's margin after this answer, seconds (text)
local latency = math.min(args.max_margin, math.max(0, now - args.granted_at))
setf('lat', math.max(margin(), latency))
setf('lat_t', now)
local old = 's' .. args.slot .. ':' .. cls
local new = 's' .. string.format('%d', math.floor(now / g)) .. ':' .. cls
if new ~= old then
  -- the take's count may be gone (a provider reset forgot it, or the bucket
  -- expired): the call is counted at its answer all the same
  if redis.call('HEXISTS', key, old) == 1 and redis.call('HINCRBY', key, old, -cost) <= 0 then
    redis.call('HDEL', key, old)
  end
  redis.call('HINCRBY', key, new, cost)
end
tidy()
keep_alive()
return string.format('%.6f', meta.lat)
