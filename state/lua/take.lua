-- take: take `cost` calls from one bucket if it allows them now, else say
-- how long to wait (QuotaGate.decide); with mode 'peek', only look.
--
-- KEYS[1] bucket: the quota bucket (hash; see quota_prelude.lua)
-- ARGV[1] = JSON object (plus quota_prelude's arguments):
--   mode: 'take' (take if allowed) or 'peek' (never take)
-- needs: quota_prelude
-- A call is accounted at now + margin (the latest it is expected to reach the
-- provider, which counts it when it receives it), until settle.lua moves it
-- to its answer's time.
-- returns: {1, slot, took_left, margin} when taken (slot: the sub-window
--   counted in, took_left: 1 if a provider's `remaining` was lowered too,
--   margin: seconds, text); else
--   {0, wait seconds as text} ('0' for a peek that would be allowed, '-1.000000'
--   if it never can be as configured)
tidy()
if args.mode == 'take' and allowed(now) then
  local m = margin()
  local idx = string.format('%d', math.floor((now + m) / g))
  redis.call('HINCRBY', key, 's' .. idx .. ':' .. cls, cost)
  local took_left = 0
  if meta.left_until and meta.left_until > now then setf('left', meta.left - cost); took_left = 1 end
  keep_alive()
  return {1, idx, took_left, string.format('%.6f', m)}
end
if args.mode == 'peek' and allowed(now) then return {0, '0'} end
return {0, string.format('%.6f', wait_time())}
