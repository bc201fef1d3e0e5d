-- outcome: teach an adaptive bucket how a call went (QuotaGate.record_outcome):
-- a rejection cuts the rate to `decrease` × what got through; successes grow it.
--
-- KEYS[1] bucket: the quota bucket (hash; see quota_prelude.lua)
-- ARGV[1] = JSON object (plus quota_prelude's arguments):
--   rejected: true if the provider refused the call for quota
--   decrease: on a rejection the rate drops to this × the calls that got through
--   step: below the known maximum, each window of successes adds this × it
--   probe: above it, the excess grows by this much per window
--   grace: seconds after a cut during which rejections cut no further
-- needs: quota_prelude
-- returns: the new rate, calls per window (text)
local decrease, step, probe = args.decrease, args.step, args.probe
local rate = meta.rate or math.max(1, start * N)
local lmax = meta.lmax or 0
if args.rejected then
  if now < (meta.cut or -1) + args.grace then return tostring(rate) end
  local used = usage(now)
  lmax = math.max(1, used - 1)  -- what got through before the provider said no
  rate = math.max(1, decrease * lmax)
  setf('lmax', lmax); setf('cut', now)
elseif rate < lmax then
  rate = rate + step * lmax / rate  -- +step×lmax per window of successes
else
  rate = rate + probe * (rate - lmax + step * lmax) / rate  -- probe past the known max
end
setf('rate', math.min(N, rate))
tidy()
keep_alive()
return string.format('%.6f', math.min(N, rate))
