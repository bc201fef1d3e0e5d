-- announced_prelude: shared by the announced-rule scripts (announced_take,
-- announced_answer), which declare `needs: announced_prelude`; state.lua
-- prepends it. It decodes the arguments, reads the state of the rules that
-- apply to the call, and defines when a provider window has surely ended and
-- what a new one starts with (see state.announced for the algorithm and why).
--
-- KEYS[1] rules: the announced rules of one provider scope key (hash: field
--     r:<rule id> is one rule's state as JSON, `blocked` the end of the last
--     retry-after)
-- ARGV[1] = JSON object:
--   now: epoch seconds (to the microsecond)
--   rules: the rules of this key that apply to the call, a list of objects
--       {id, limit: the prior (documented or configured), window: seconds,
--       told: 'always' | 'tightest', aligned: windows start at multiples of
--       the window, shared: every sync takes from it (class shares apply),
--       known: {limit as text → window seconds}: the windows of the limits whose
--       length is known (the documented rule's, the configured quota's)}
--   class: the caller's queue class letter: n, w or t
--   skew: seconds a provider's reset counts as passed later (its clock is not ours)
--   max_margin: seconds a call may stay unanswered (the HTTP timeouts)
--   ttl: seconds an announced limit holds after the provider last said it
--       (at least two of the rule's windows)
--
-- A rule's state: gen (the window's number), g (our calls counted in it),
-- oth (others' calls the provider's counts prove), by (ours per class),
-- fl (ours in flight: grant second → calls), carry (answered near the end:
-- counted in the next window too), reset (the window's end: told by the
-- provider, else our upper bound), told, lim and heard (the announced limit
-- and until when it holds), win (the window the provider stated), kw (the
-- known window of the announced limit), oend and olow (a window our call
-- opened: the latest and the earliest it ends, on our clock), prev (the last
-- window's told reset), probe (until when the first call of a rule not yet
-- heard is out), quiet (until when a rule whose probe was answered without an
-- announcement stops probing: the provider does not announce it here).
local args = cjson.decode(ARGV[1])
local key = KEYS[1]
local now, skew, max_margin, cls = args.now, args.skew, args.max_margin, args.class
local blocked = tonumber(redis.call('HGET', key, 'blocked')) or 0
local states = {}
for _, rule in ipairs(args.rules) do
  local raw = redis.call('HGET', key, 'r:' .. rule.id)
  local st = raw and cjson.decode(raw) or {}
  st.gen, st.g, st.oth, st.carry = st.gen or 0, st.g or 0, st.oth or 0, st.carry or 0
  st.by, st.fl = st.by or {}, st.fl or {}
  states[rule.id] = st
end

local function heard(st) return st.heard ~= nil and st.heard > now end

local function quiet(st) return st.quiet ~= nil and st.quiet > now end

local function limit_of(rule, st)
  if heard(st) then return st.lim end
  return rule.limit
end

local function window_of(rule, st)
  if heard(st) and st.win then return st.win end
  if heard(st) and st.kw then return st.kw end
  return rule.window
end

local function ends(st)
  -- when the window has surely ended, on our clock: its reset plus the skew, or
  -- sooner, one known window after the answer of the call that opened it
  if st.reset == nil then return nil end
  local e = st.reset + skew
  if st.oend ~= nil and st.oend < e then e = st.oend end
  return e
end

local function in_flight(st, since)
  -- ours granted since `since` and not answered (a grant second counts whole)
  local n = 0
  for sec, c in pairs(st.fl) do
    if tonumber(sec) + 1 > since then n = n + c end
  end
  return n
end

local function window_end(rule, st, t)
  -- the latest a provider window holding a call granted at t ends: an aligned
  -- one at the next multiple; one opened by the call's arrival (at most
  -- max_margin after its grant) one window after that
  local w = window_of(rule, st)
  if rule.aligned then return (math.floor(t / w) + 1) * w end
  return t + max_margin + w
end

local function open_window(rule, st)
  -- a new provider window: it holds our calls still out (they may reach it)
  -- and those answered so near the old end that they may have
  local carried = in_flight(st, now - max_margin) + st.carry
  if st.told then st.prev = st.reset end
  st.gen = st.gen + 1
  st.g, st.oth, st.carry, st.by, st.told, st.reset = carried, 0, 0, {}, nil, nil
  st.oend, st.olow = nil, nil
  if carried > 0 then st.reset = window_end(rule, st, now) end
end

local function roll(rule, st)
  local e = ends(st)
  if e ~= nil and now >= e then open_window(rule, st) end
end

local function save(rule, st)
  for sec, _ in pairs(st.fl) do
    -- a call out longer than the HTTP timeouts was answered or lost with its worker
    if tonumber(sec) < now - max_margin - 1 then st.fl[sec] = nil end
  end
  redis.call('HSET', key, 'r:' .. rule.id, cjson.encode(st))
end

local function keep_alive()
  local keep = args.ttl
  for _, rule in ipairs(args.rules) do keep = math.max(keep, 2 * rule.window + max_margin) end
  keep = math.max(keep, blocked - now)
  redis.call('PEXPIRE', key, math.ceil((keep + 60) * 1000))
end
