-- announced_answer: a call of this key was answered (or given up): account it
-- where it may have landed, then apply what the provider's headers announced
-- (AnnouncedGate.answer).
--
-- KEYS[1] rules: the announced rules of one scope key (hash; see announced_prelude.lua)
-- ARGV[1] = JSON object (plus announced_prelude's arguments):
--   ticket?: {rule id: window number} as the take returned it (none: headers only)
--   second?: the grant second the take returned
--   cost: calls the take counted
--   counted: false when the provider did not count the call (a free 304, or never sent)
--   probe: true when the take was a rule's probe (its first call)
--   silent: true when that probe's answer was a success that announced nothing
--       for these rules (they turn `quiet`: no more probing, the prior governs)
--   report?: one announced rule: {limit, remaining, reset?, window?}
--   retry_after?: seconds the provider asked us to wait
-- needs: announced_prelude
-- returns: the ids of the rules the report was applied to (JSON list, '[]' if none)
local cost = args.cost

local kept = {}  -- rule id → true: this call is counted in the window it was granted in only

local function settle(rule, st, gen)
  roll(rule, st)  -- a window that ended while the call was out: it was carried into the next
  local left = (st.fl[args.second] or 0) - cost
  st.fl[args.second] = left > 0 and left or nil
  if st.gen == gen then
    if not args.counted then
      st.g = math.max(0, st.g - cost)
      st.by[cls] = math.max(0, (st.by[cls] or 0) - cost)
    elseif st.reset ~= nil and (now >= st.reset - skew or (st.olow ~= nil and now >= st.olow)) then
      st.carry = st.carry + cost  -- it may have reached the provider after its reset
    else
      kept[rule.id] = true
    end
  elseif not args.counted and tonumber(args.second) + 1 > now - max_margin then
    st.g = math.max(0, st.g - cost)  -- carried into this window when it rolled: take it back
  end
  if args.probe then
    st.probe = nil
    if args.silent then st.quiet = now + args.ttl end
  end
end

local function fits(rule, st, rep)
  -- the report could be this rule's: its window can hold the reset it names
  local w = window_of(rule, st)
  if rep.window ~= nil and math.abs(rep.window - w) > 0.5 then return false end
  if rep.reset == nil then return true end
  if rep.reset - now > w + skew then return false end
  if rule.aligned then
    local off = rep.reset % w
    return math.min(off, w - off) <= 1 + skew
  end
  return true
end

local function targets(rep)
  -- the rules the headers speak for: those with the announced limit whose window
  -- fits (the one whose known end matches, if several); else the provider changed
  -- a limit: the fitting rule nearest to it (then the shorter window) takes it.
  -- A report no rule's window fits (the provider changed a window) is taken the
  -- same way by all of them.
  local fitting = {}
  for _, rule in ipairs(args.rules) do
    if fits(rule, states[rule.id], rep) then table.insert(fitting, rule) end
  end
  if #fitting == 0 then fitting = args.rules end
  local found, near, best = {}, nil, nil
  for _, rule in ipairs(fitting) do
    local st = states[rule.id]
    local lim = limit_of(rule, st)
    if lim == rep.limit then table.insert(found, rule) end
    local score = math.abs(math.log(lim / rep.limit)) * 1e6 + window_of(rule, st)
    if best == nil or score < best then near, best = rule, score end
  end
  if #found > 1 and rep.reset ~= nil then
    local same = {}
    for _, rule in ipairs(found) do
      local st = states[rule.id]
      if st.told and st.reset and math.abs(st.reset - rep.reset) <= 1 then table.insert(same, rule) end
    end
    if #same > 0 then found = same end
  end
  if #found == 0 and near ~= nil then found = {near} end
  return found
end

local function apply(rule, st, rep)
  roll(rule, st)
  st.lim, st.heard = rep.limit, now + math.max(args.ttl, 2 * rule.window)
  if rep.window ~= nil then st.win = rep.window end
  if rep.reset ~= nil then
    if rep.reset + skew <= now then return end  -- a window that is surely over
    if st.prev ~= nil and rep.reset <= st.prev + 1 then return end  -- the window before it
    if st.reset ~= nil and st.told and rep.reset > st.reset + 1 then
      -- the provider has begun a window we had not; this very call reached it
      open_window(rule, st)
      if kept[rule.id] then st.g = st.g + cost end
    elseif st.reset ~= nil and st.told and rep.reset < st.reset - 1 then
      return  -- a late report from a window that has ended
    end
    st.reset, st.told = rep.reset, true
  end
  -- the provider counted limit - remaining calls in this window; ours in it are
  -- at most g, so at least the rest are someone else's (another app, a token
  -- of the same account)
  st.oth = math.max(st.oth, rep.limit - rep.remaining - st.g)
  st.kw = rule.known[tostring(rep.limit)]
  -- the provider counted this call alone: it opened the window, between its grant
  -- and now; of known length, the window ends within that length of now on our own
  -- clock (sooner than the reset's whole second plus the skew)
  local w = st.win or st.kw
  if w and kept[rule.id] and not rule.aligned and rep.remaining == rep.limit - 1 then
    st.oend, st.olow = now + w, tonumber(args.second) + w
  end
end

if args.ticket then
  for _, rule in ipairs(args.rules) do
    local gen = args.ticket[rule.id]
    if gen ~= nil then settle(rule, states[rule.id], gen) end
  end
end
local applied = {}
if args.report then
  for _, rule in ipairs(targets(args.report)) do
    apply(rule, states[rule.id], args.report)
    table.insert(applied, rule.id)
  end
end
if args.retry_after then
  blocked = math.max(blocked, now + args.retry_after)
  redis.call('HSET', key, 'blocked', string.format('%.6f', blocked))
end
for _, rule in ipairs(args.rules) do save(rule, states[rule.id]) end
keep_alive()
if #applied == 0 then return '[]' end
return cjson.encode(applied)
