-- announced_take: take `cost` calls from every rule of one key that applies to
-- the call if each allows it now, else take nothing and say how long to wait
-- (AnnouncedGate.take).
--
-- KEYS[1] rules: the announced rules of one scope key (hash; see announced_prelude.lua)
-- ARGV[1] = JSON object (plus announced_prelude's arguments):
--   cost: calls asked for
--   probe_poll: seconds to wait while the first call of a rule not yet heard is out
--   shares: each class's share of a shared rule (object n, w, t → 0..1)
--   kinds: each class's policy (object n, w, t → R reserved, B borrows, C capped)
-- needs: announced_prelude
-- A rule allows a call when its limit (the announced one while it holds, else
-- the prior) minus others' calls minus ours leaves room; a rule the provider
-- always announces but has not yet been heard allows one call at a time (the
-- probe): its answer sets the rule before any fan-out. A probe answered
-- without an announcement (the provider does not announce that rule here) ends
-- the probing while the rule is `quiet`: its prior governs.
-- returns: {1, ticket, second, probe} when taken (ticket: JSON {rule id:
--   window number}, second: the grant second as text, probe: 1 if the call is
--   a rule's probe); else {0, wait seconds as text ('-1' when the rules can
--   never allow it as they stand)}
local cost = args.cost

local function class_ok(st, cap, free)
  -- the queue-class shares of a shared rule, as state.quota has them
  local share, kind, by = args.shares, args.kinds, st.by
  local function own(c)
    if share[c] <= 0 then return 0 end
    return math.max(1, share[c] * cap)
  end
  if kind[cls] ~= 'R' then
    local ceiling = own(cls)
    if kind[cls] == 'B' then
      for d, k in pairs(kind) do
        if d ~= cls and k ~= 'R' then ceiling = ceiling + math.max(0, own(d) - (by[d] or 0)) end
      end
    end
    if (by[cls] or 0) + cost > ceiling + 1e-9 then return false end
  end
  local reserve = 0
  for d, k in pairs(kind) do
    if d ~= cls and k == 'R' then reserve = reserve + math.max(0, share[d] * cap - (by[d] or 0)) end
  end
  return free - cost >= reserve - 1e-9
end

local function judge(rule, st)
  -- 0 when the rule allows `cost` calls now, else seconds to wait (-1: never)
  if rule.told == 'always' and not heard(st) and not quiet(st) and (st.probe or 0) > now then
    return math.min(st.probe - now, args.probe_poll)
  end
  local cap = limit_of(rule, st) - st.oth
  local free = cap - st.g
  if free >= cost and (not rule.shared or class_ok(st, cap, free)) then return 0 end
  if st.reset ~= nil then return math.max(ends(st) - now, 0.001) end
  return -1
end

local wait, never = math.max(0, blocked - now), false
for _, rule in ipairs(args.rules) do
  local st = states[rule.id]
  roll(rule, st)
  local w = judge(rule, st)
  if w < 0 then never = true elseif w > wait then wait = w end
end
if never or wait > 0 then
  for _, rule in ipairs(args.rules) do save(rule, states[rule.id]) end
  keep_alive()
  if never then return {0, '-1'} end
  return {0, string.format('%.6f', wait)}
end
local sec = string.format('%d', math.floor(now))
local ticket, probe = {}, 0
for _, rule in ipairs(args.rules) do
  local st = states[rule.id]
  st.g = st.g + cost
  st.by[cls] = (st.by[cls] or 0) + cost
  st.fl[sec] = (st.fl[sec] or 0) + cost
  if st.reset == nil then st.reset = window_end(rule, st, now) end
  if rule.told == 'always' and not heard(st) and not quiet(st) then
    st.probe = now + max_margin
    probe = 1
  end
  ticket[rule.id] = st.gen
  save(rule, st)
end
keep_alive()
return {1, cjson.encode(ticket), sec, probe}
