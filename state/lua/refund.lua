-- refund: give back what a take took, when a later bucket of the same call
-- refused (QuotaGate.decide).
--
-- KEYS[1] bucket: the quota bucket (hash; see quota_prelude.lua)
-- ARGV[1] = JSON object (plus quota_prelude's arguments):
--   slot: the sub-window the take counted in (as take returned it, text)
--   took_left: true if the take also lowered the provider's `remaining`
-- needs: quota_prelude
-- returns: 1
local field = 's' .. args.slot .. ':' .. cls
if redis.call('HEXISTS', key, field) == 1 then
  if redis.call('HINCRBY', key, field, -cost) <= 0 then redis.call('HDEL', key, field) end
end
if args.took_left and meta.left_until and meta.left_until > now then setf('left', meta.left + cost) end
keep_alive()
return 1
