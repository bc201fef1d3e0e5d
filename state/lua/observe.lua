-- observe: correct a bucket from what the provider's rate-limit headers said
-- (QuotaGate.observe).
--
-- KEYS[1] bucket: the quota bucket (hash; see quota_prelude.lua)
-- ARGV[1] = JSON object (plus quota_prelude's arguments):
--   remaining?: calls left in the provider's window
--   reset_at?: when the provider's window resets, epoch seconds
--   retry_after?: seconds the provider asked us to wait
--   usage_percent?: share of the budget used, 0-100
--   horizon: seconds a remaining/usage figure without a reset holds
--   opened_end?: the answer was the first call of the provider's window
--       (remaining = limit - 1), so that window ends by this time (epoch
--       seconds) on our own clock
-- needs: quota_prelude
-- returns: 1
local remaining, reset, retry = args.remaining, args.reset_at, args.retry_after
local usage_pct, horizon = args.usage_percent, args.horizon
local opened_end = args.opened_end
local function forget(reset_at)
  if not opened_by_us(reset_at) then drop_below(math.floor((reset_at - skew) / g)) end
end
if retry then setf('blocked', math.max(meta.blocked or 0, now + retry)) end
local left, left_until, by_reset = remaining, nil, false
if remaining then
  left_until = reset and (reset + skew) or (now + horizon)
  -- the header's reset is rounded up to whole seconds and may be on another
  -- clock; a window our call opened surely ended one window after we saw it
  if opened_end then left_until = math.min(left_until, opened_end) end
  by_reset = reset ~= nil
end
if usage_pct then
  local from_usage = math.max(0, math.floor(N * (100 - usage_pct) / 100))
  if left == nil or from_usage < left then
    left, left_until, by_reset = from_usage, now + horizon, false
  end
end
if left then
  local old = meta.left_until
  if by_reset and old and meta.left_reset then
    -- windows are told apart by their reset, not by when we stop believing them
    if reset > meta.left_reset + 1 then
      setf('left', left); setf('left_until', left_until); setf('left_reset', reset)
    elseif reset >= meta.left_reset - 1 and old > now then
      setf('left', math.min(meta.left, left))  -- same window: never believe more
      if left_until < old then setf('left_until', left_until) end
    end  -- else: a late report from a window that has ended
  elseif old == nil or old <= now or left_until > old + 1 then
    setf('left', left); setf('left_until', left_until)
    if by_reset then setf('left_reset', reset) else redis.call('HDEL', key, 'left_reset') end
  elseif left_until >= old - 1 then
    setf('left', math.min(meta.left, left))  -- same window: never believe more
  end  -- else: a late report from an older window
end
if reset then
  if meta.align == nil or reset > meta.align + 1 then
    if meta.align then forget(meta.align) end  -- the provider is past that boundary
    setf('align', reset)
  elseif reset < meta.align - 1 then
    forget(reset)
  end
  if opened_end and reset >= meta.align - 1 then setf('opened', reset) end
end
tidy()
keep_alive()
return 1
