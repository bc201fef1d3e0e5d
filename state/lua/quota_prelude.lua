-- quota_prelude: shared by the quota scripts (take, refund, observe,
-- outcome), which declare `needs: quota_prelude`; state.lua prepends this
-- file to them. It decodes the arguments, reads the bucket, and defines how a
-- request is judged at time t (see state.quota for the algorithm).
--
-- KEYS[1] bucket: one quota bucket (hash: fields s<slot>:<class> count the
--     calls accounted in a sub-window, per class; a call is accounted at the
--     latest moment the provider may have received it: its grant plus the
--     margin while it is in flight, its answer once settled; `lat` and `lat_t`
--     are the margin learned from answers and when; the others are the
--     provider's reports and the adaptive rate)
-- ARGV[1] = JSON object:
--   now: epoch seconds (to the microsecond)
--   cost: calls asked for
--   class: the caller's queue class letter: n, w or t
--   limit: calls per window (the ceiling, for an adaptive bucket)
--   window_s: the window, seconds
--   slots: sub-window counters per window
--   shared: true for a bucket shared by all syncs (scopes app and ip)
--   adaptive: true when the rate is learned (nobody publishes the limit)
--   start: an adaptive bucket starts at this fraction of its limit
--   skew: seconds a provider's reset counts as passed later (its clock is not ours)
--   shares: each class's share of a shared bucket (object n, w, t → 0..1)
--   kinds: each class's policy (object n, w, t → R reserved, B borrows, C capped)
--   memory: seconds an adaptive bucket outlives its last use
--   max_margin: seconds; the most a call is taken to stay unanswered (the
--       HTTP timeouts): bounds the learned margin and the bucket's lifetime
--   half_life: seconds in which a learned latency's weight in the margin halves
local args = cjson.decode(ARGV[1])
local key = KEYS[1]
local now, cost, cls = args.now, args.cost, args.class
local N, W, S = args.limit, args.window_s, args.slots
local shared, adaptive, start = args.shared, args.adaptive, args.start
local skew = args.skew
local share = {n = args.shares.n, w = args.shares.w, t = args.shares.t}
local kind = {n = args.kinds.n, w = args.kinds.w, t = args.kinds.t}
local g = W / S
local slots, meta = {}, {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do
  local idx, c = string.match(raw[i], '^s(%-?%d+):(%a)$')
  if idx then
    idx = tonumber(idx)
    slots[idx] = slots[idx] or {}
    slots[idx][c] = tonumber(raw[i + 1])
  else
    meta[raw[i]] = tonumber(raw[i + 1])
  end
end

local function opened_by_us(reset)
  -- a window our own call opened: our sliding window already covers it
  return meta.opened ~= nil and math.abs(reset - meta.opened) <= 1
end

local function forget_below(t)
  -- slots wholly before a provider reset that has passed are forgotten
  if meta.align and t >= meta.align + skew and not opened_by_us(meta.align) then
    return math.floor((meta.align - skew) / g)
  end
  return nil
end

local function usage(t)
  local lo, fb = math.floor(t / g) - S, forget_below(t)
  local total, by = 0, {n = 0, w = 0, t = 0}
  for idx, s in pairs(slots) do
    if idx >= lo and (fb == nil or idx >= fb) then
      for c, v in pairs(s) do total = total + v; by[c] = (by[c] or 0) + v end
    end
  end
  return total, by
end

local function margin()
  -- how late after its grant a call may reach the provider: the slowest
  -- recent answer, decaying (0 before this bucket has seen an answer)
  if not meta.lat then return 0 end
  local age = math.max(0, now - (meta.lat_t or now))
  return math.min(args.max_margin, meta.lat * 0.5 ^ (age / args.half_life))
end

local function capacity()
  if not adaptive then return N end
  local rate = meta.rate or math.max(1, start * N)
  return math.max(1, math.min(N, math.floor(rate)))
end

local function own(c, cap)
  if share[c] <= 0 then return 0 end
  return math.max(1, share[c] * cap)
end

local function class_ok(by, cap, free)
  if kind[cls] ~= 'R' then
    local ceiling = own(cls, cap)
    if kind[cls] == 'B' then
      for d, k in pairs(kind) do
        if d ~= cls and k ~= 'R' then ceiling = ceiling + math.max(0, own(d, cap) - by[d]) end
      end
    end
    if by[cls] + cost > ceiling + 1e-9 then return false end
  end
  local reserve = 0
  for d, k in pairs(kind) do
    if d ~= cls and k == 'R' then reserve = reserve + math.max(0, share[d] * cap - by[d]) end
  end
  return free - cost >= reserve - 1e-9
end

local function allowed(t)
  if (meta.blocked or 0) > t then return false end
  local total, by = usage(t)
  local cap = capacity()
  local free = cap - total
  if meta.left_until and meta.left_until > t then free = math.min(free, meta.left) end
  if free < cost then return false end
  return (not shared) or class_ok(by, cap, free)
end

local function wait_time()
  -- counts only fall as time passes: try each moment something changes
  local moments = {}
  for idx, _ in pairs(slots) do table.insert(moments, (idx + S + 1) * g) end
  if meta.blocked then table.insert(moments, meta.blocked) end
  if meta.left_until then table.insert(moments, meta.left_until) end
  if meta.align then table.insert(moments, meta.align + skew) end
  table.sort(moments)
  for _, t in ipairs(moments) do
    local at = t + 0.001  -- past float rounding at the slot boundary
    if at > now and allowed(at) then return at - now end
  end
  return -1
end

local function drop_below(first_kept)
  for idx, s in pairs(slots) do
    if idx < first_kept then
      for c, _ in pairs(s) do redis.call('HDEL', key, 's' .. string.format('%d', idx) .. ':' .. c) end
      slots[idx] = nil
    end
  end
end

local function tidy()
  -- keep a spare window of slots: a caller whose clock is a little behind
  -- ours must still count them (deleting them would let it over-grant)
  local lo, fb = math.floor(now / g) - 2 * S, forget_below(now)
  drop_below(math.max(lo, fb or lo))
  if fb ~= nil then redis.call('HDEL', key, 'align'); meta.align = nil end
end

local function keep_alive()
  local keep = 2 * W + args.max_margin  -- a call may be accounted that far ahead
  for _, f in ipairs({'blocked', 'left_until', 'align'}) do
    if meta[f] then keep = math.max(keep, meta[f] + skew - now) end
  end
  if adaptive then keep = math.max(keep, args.memory) end
  redis.call('PEXPIRE', key, math.ceil((keep + 60) * 1000))
end

local function setf(f, v) meta[f] = v; redis.call('HSET', key, f, string.format('%.6f', v)) end
