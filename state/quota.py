"""Provider quotas shared by every worker: one Redis bucket per provider and scope.

Celery's ``rate_limit`` is per worker; provider quotas are per app, per user
token or per source IP, across all workers. So each limit is a ``QuotaBucket``
in Redis, checked and taken by one atomic Lua script, corrected by what the
provider's headers say (``observe``), and, for limits nobody publishes,
adapted from successes and rejections (``record_outcome``).

Algorithm: a sliding window of sub-window counters (``WINDOW_SLOTS`` per
window). A token bucket or GCRA with a burst of ``limit`` would grant up to
2×limit−1 calls in one window and so overrun a provider that counts fixed
windows; strict GCRA spacing (no burst) makes a 3-page sync on Twitter take
two minutes. The window counters allow the whole budget at once, never grant
more than ``limit`` in any ``window_s`` (a slot is forgotten only once all of
it is older than the window), and keep ≥ 98 % of the rate when saturated.

Shares of a shared bucket (scopes ``app`` and ``ip``; a ``token`` bucket
belongs to one user's sync and is never split)::

    |<-------- normal 50% -------->|<---- whale 40% ---->|<-trickle 10%->|
     reserved: nobody else may take  borrows: its share +   capped: never
     what normal has not used; normal trickle's unused part  more than its
     itself may use any free room    (never normal's part)   share (steady)

A class may take ``cost`` calls when (1) the bucket has that much free room
(and the provider's last word allows it), (2) the class stays under its
ceiling (none for normal), and (3) the room left afterwards still covers the
reserved classes' unused share. So whales hammering leave normal its 50 %.

Provider windows: a ``remaining``/``reset`` report caps the bucket until the
reset (plus ``RESET_SKEW_S``: it is whole seconds, on the provider's clock);
the answer of the call that opened a provider window bounds its end on our
own clock instead (``observe``).

Several scopes on one call (e.g. Facebook ``app`` + ``token``): each bucket
has its own hash tag, so no single script may touch them all (Redis Cluster).
We take bucket by bucket (token, ip, app) and refund the taken ones when a
later bucket refuses. This never over-grants; at worst a concurrent caller is
briefly refused by a grant that is then refunded. Token first, so a user who
is out of quota never touches the shared buckets.

A quota wait is never a sleep: ``acquire`` returns seconds, the caller parks
the task in the delayed set (``state.delayed``) for that long.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import providers
from providers.ratelimits import SCOPES, QuotaLimit, QuotaSpecError, RateLimitInfo, parse_limits

SHARED_SCOPES = frozenset({"app", "ip"})
#: how each queue class may use a shared bucket (R reserved, B borrows, C capped)
CLASS_POLICY = {"normal": "R", "whale": "B", "trickle": "C"}
CLASS_LETTER = {"normal": "n", "whale": "w", "trickle": "t"}
DEFAULT_SHARES = {"normal": 0.5, "whale": 0.4, "trickle": 0.1}
DEFAULT_APP_KEY = "all"
DEFAULT_IP_KEY = "default-egress"  # workers behind one NAT share one budget

#: sub-window counters per window: more is finer (less idle) but bigger hashes
WINDOW_SLOTS = 60
#: our clock vs the provider's: a reset counts as passed this much later
RESET_SKEW_S = 1.0
#: a remaining/usage figure without a reset time holds for this part of the window
TOLD_HORIZON_FRACTION = 1 / 12
#: adaptive limits start at this fraction of their ceiling
ADAPTIVE_START = 0.1
#: on a rejection the rate drops to this × the calls that got through in the window
#: (that count measures the limit well, so a shallow cut: with 0.8 the windows
#: after a cut ran at 80, 82, 84 … % of the limit; with 0.9 at 90, 92 … %)
ADAPTIVE_DECREASE = 0.9
#: below the last known maximum, each window of successes adds this × that maximum
ADAPTIVE_STEP = 0.02
#: above it (or before any rejection) the excess grows by this much per window
ADAPTIVE_PROBE = 0.5
#: rejections this soon after a cut come from calls already in flight: no second cut
ADAPTIVE_GRACE_S = 10.0
#: an adaptive bucket remembers what it learned this long after its last use
ADAPTIVE_MEMORY_S = 7 * 86400

_TOKEN_KEY = re.compile(r"[0-9a-f]{16,128}")
_OTHER_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,100}")


def fingerprint(token: str) -> str:
    """A non-reversible name for a credential, for ``scopes["token"]``."""
    return hashlib.blake2b(token.encode(), digest_size=12, person=b"netsync-quota").hexdigest()


def parse_shares(text: str) -> dict[str, float]:
    shares = dict.fromkeys(CLASS_POLICY, 0.0)
    for item in text.split(","):
        name, _, value = item.strip().partition(":")
        try:
            shares[name] = float(value) if name in CLASS_POLICY else math.nan
        except ValueError:
            shares[name] = math.nan
        if not 0 <= shares[name] <= 1:
            raise QuotaSpecError(f"quota shares {text!r}: use normal:0.5,whale:0.4,trickle:0.1")
    if sum(shares.values()) > 1 + 1e-9:
        raise QuotaSpecError(f"quota shares {text!r} add up to more than 1")
    return shares


@dataclass(frozen=True)
class QuotaConfig:
    """Limits and shares per provider (see ``from_env`` for the variables)."""

    limits: Mapping[str, tuple[QuotaLimit, ...]]
    shares: Mapping[str, Mapping[str, float]]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "QuotaConfig":
        """``QUOTA_<PROVIDER>=limit/window_s/scope[/adaptive][,…]`` replaces a
        provider's limits; ``QUOTA_SHARES`` (all providers) and
        ``QUOTA_SHARES_<PROVIDER>`` set the queue-class shares."""
        env = {} if environ is None else environ
        # every provider's default quota is a fact of its class
        limits = {name: tuple(p.QUOTAS) for name, p in providers.provider_classes().items()}
        for name, value in env.items():
            if name.startswith("QUOTA_") and not name.startswith("QUOTA_SHARES") and value:
                limits[name[len("QUOTA_"):].lower()] = parse_limits(value)
        base = parse_shares(env["QUOTA_SHARES"]) if env.get("QUOTA_SHARES") else DEFAULT_SHARES
        shares = {}
        for provider in limits:
            own = env.get(f"QUOTA_SHARES_{provider.upper()}")
            shares[provider] = parse_shares(own) if own else dict(base)
        return cls(limits=limits, shares=shares)


# Shared by every script: read a bucket, and judge a request at time t.
# ARGV[1..13]: now cost class limit window slots shared adaptive start skew
#              share_n share_w share_t ; ARGV[14]: kinds of n,w,t (e.g. "RBC")
_PRELUDE = """
local key = KEYS[1]
local now, cost, cls = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local N, W, S = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local shared, adaptive, start = ARGV[7] == '1', ARGV[8] == '1', tonumber(ARGV[9])
local skew = tonumber(ARGV[10])
local share = {n = tonumber(ARGV[11]), w = tonumber(ARGV[12]), t = tonumber(ARGV[13])}
local kind = {n = string.sub(ARGV[14], 1, 1), w = string.sub(ARGV[14], 2, 2),
              t = string.sub(ARGV[14], 3, 3)}
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
  local keep = 2 * W
  for _, f in ipairs({'blocked', 'left_until', 'align'}) do
    if meta[f] then keep = math.max(keep, meta[f] + skew - now) end
  end
  if adaptive then keep = math.max(keep, tonumber(ARGV[15])) end
  redis.call('PEXPIRE', key, math.ceil((keep + 60) * 1000))
end

local function setf(f, v) meta[f] = v; redis.call('HSET', key, f, string.format('%.6f', v)) end
"""

# ARGV[15]: adaptive memory s. Returns {1, slot, left_taken} or {0, wait}.
_TAKE = _PRELUDE + """
tidy()
if ARGV[16] == 'take' and allowed(now) then
  local idx = string.format('%d', math.floor(now / g))
  redis.call('HINCRBY', key, 's' .. idx .. ':' .. cls, cost)
  local took_left = 0
  if meta.left_until and meta.left_until > now then setf('left', meta.left - cost); took_left = 1 end
  keep_alive()
  return {1, idx, took_left}
end
if ARGV[16] == 'peek' and allowed(now) then return {0, '0'} end
return {0, string.format('%.6f', wait_time())}
"""

# ARGV[15]: memory; ARGV[16], ARGV[17]: slot, took_left (from a take).
_REFUND = _PRELUDE + """
local field = 's' .. ARGV[16] .. ':' .. cls
if redis.call('HEXISTS', key, field) == 1 then
  if redis.call('HINCRBY', key, field, -cost) <= 0 then redis.call('HDEL', key, field) end
end
if ARGV[17] == '1' and meta.left_until and meta.left_until > now then setf('left', meta.left + cost) end
keep_alive()
return 1
"""

# ARGV[15]: memory; ARGV[16..21]: remaining reset_at retry_after usage horizon opened_end
# ('' = none). opened_end: the answer was the first call of the provider's window
# (remaining = limit - 1), so that window ends by now + window_s on our own clock.
_OBSERVE = _PRELUDE + """
local remaining, reset, retry = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])
local usage_pct, horizon = tonumber(ARGV[19]), tonumber(ARGV[20])
local opened_end = tonumber(ARGV[21])
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
"""

# ARGV[15]: memory; ARGV[16..20]: rejected decrease step probe grace
_OUTCOME = _PRELUDE + """
local decrease, step, probe = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19])
local rate = meta.rate or math.max(1, start * N)
local lmax = meta.lmax or 0
if ARGV[16] == '1' then
  if now < (meta.cut or -1) + tonumber(ARGV[20]) then return tostring(rate) end
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
"""


@dataclass(frozen=True)
class QuotaDecision:
    """What ``decide`` found: granted, or how long to wait and for which scope."""

    wait_s: float
    scope: str | None = None

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0


@dataclass(frozen=True)
class QuotaBucket:
    """One limit applied to one key: the unit a Lua script works on."""

    provider: str
    limit: QuotaLimit
    key: str
    redis_key: str


class QuotaGate:
    """Takes, corrects and adapts provider quotas held in Redis (see module doc)."""

    def __init__(self, redis_client, key_prefix: str, config: QuotaConfig,
                 clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.prefix = key_prefix
        self.clock = clock
        self.config = config
        self._take = redis_client.register_script(_TAKE)
        self._refund = redis_client.register_script(_REFUND)
        self._observe = redis_client.register_script(_OBSERVE)
        self._outcome = redis_client.register_script(_OUTCOME)

    def limits(self, provider: str) -> tuple[QuotaLimit, ...]:
        if provider not in self.config.limits:
            raise ValueError(f"no quota configured for provider {provider!r}")
        return self.config.limits[provider]

    def shares(self, provider: str) -> Mapping[str, float]:
        return self.config.shares.get(provider, DEFAULT_SHARES)

    def buckets(self, provider: str, scopes: Mapping[str, str],
                named_only: bool = False) -> list[QuotaBucket]:
        """The provider's buckets for these scope keys, in taking order.

        ``app`` and ``ip`` have default keys; a ``token`` limit needs its key.
        With ``named_only``, only the scopes present in ``scopes``.
        """
        found = []
        for limit in sorted(self.limits(provider), key=lambda lim: SCOPES.index(lim.scope)):
            if named_only and limit.scope not in scopes:
                continue
            key = scopes.get(limit.scope) or {"app": DEFAULT_APP_KEY, "ip": DEFAULT_IP_KEY}.get(limit.scope)
            if key is None:
                raise ValueError(f"{provider} is limited per token: pass scopes['token']")
            pattern = _TOKEN_KEY if limit.scope == "token" else _OTHER_KEY
            if not pattern.fullmatch(key):
                # also stops a raw credential from becoming a Redis key
                raise ValueError(f"bad {limit.scope} key for {provider}; tokens go through fingerprint()")
            redis_key = f"{self.prefix}:quota:{{{provider}:{limit.scope}:{key}}}"
            found.append(QuotaBucket(provider, limit, key, redis_key))
        return found

    def _args(self, bucket: QuotaBucket, queue_class: str, cost: int, now: float) -> list:
        if queue_class not in CLASS_POLICY:
            raise ValueError(f"queue_class must be one of {tuple(CLASS_POLICY)}")
        lim, shares = bucket.limit, self.shares(bucket.provider)
        return [
            f"{now:.6f}", cost, CLASS_LETTER[queue_class], lim.limit, lim.window_s, WINDOW_SLOTS,
            int(lim.scope in SHARED_SCOPES), int(lim.adaptive), ADAPTIVE_START, RESET_SKEW_S,
            *(shares.get(c, 0.0) for c in CLASS_POLICY), "".join(CLASS_POLICY.values()),
            ADAPTIVE_MEMORY_S,
        ]

    def decide(self, provider: str, scopes: Mapping[str, str], queue_class: str,
               cost: int = 1) -> QuotaDecision:
        """Take ``cost`` from every bucket, or nothing and say how long to wait."""
        now = self.clock()
        taken = []
        buckets = self.buckets(provider, scopes)
        for i, bucket in enumerate(buckets):
            args = self._args(bucket, queue_class, cost, now)
            granted, detail, *rest = self._take(keys=[bucket.redis_key], args=[*args, "take"])
            if granted:
                taken.append((bucket, detail, rest[0]))
                continue
            for done, slot, took_left in taken:
                self._refund(keys=[done.redis_key], args=[*self._args(done, queue_class, cost, now),
                                                          _s(slot), took_left])
            waits = [(self._wait(detail, bucket), bucket.limit.scope)]
            for later in buckets[i + 1:]:
                _, later_wait = self._take(keys=[later.redis_key], args=[*self._args(
                    later, queue_class, cost, now), "peek"])
                waits.append((self._wait(later_wait, later), later.limit.scope))
            wait, scope = max(waits)
            return QuotaDecision(wait, scope)
        return QuotaDecision(0.0)

    @staticmethod
    def _wait(detail, bucket: QuotaBucket) -> float:
        wait = float(_s(detail))
        if wait < 0:  # cannot be granted as configured: retry after a window
            return bucket.limit.window_s
        return wait

    def acquire(self, provider: str, scopes: Mapping[str, str], queue_class: str,
                cost: int = 1) -> float:
        """0.0 when the call may go now (quota taken), else seconds to park it."""
        return self.decide(provider, scopes, queue_class, cost).wait_s

    def observe(self, provider: str, scopes: Mapping[str, str], info: RateLimitInfo) -> None:
        """Correct the buckets of ``scopes`` from what the provider's headers said.

        Pass the scopes the headers speak for (GitHub: token; Facebook
        ``x-app-usage``: app). Never believes more than ``remaining``;
        ``reset_at`` ends the provider's window (our older counts are then
        forgotten); ``retry_after`` blocks the bucket; ``usage_percent``
        leaves ``(100 - usage)%`` of the limit for the next part of the window.

        An answer with ``remaining == limit - 1`` came from the call that
        opened the provider's window (pass it: callers that skip most answers
        should still observe this one). That window then ends at the latest
        ``window_s`` after now on our own clock, which replaces the reset's
        whole second plus clock skew (worth ~1.5 s per window), and, since it
        started with our call, our sliding window already covers it: its
        counts are not forgotten at the reset, so the limit holds in every
        sliding window, not only in the provider's fixed ones.
        """
        if info.is_empty():
            return
        now = self.clock()
        told = [info.remaining, info.reset_at, info.retry_after, info.usage_percent]
        for bucket in self.buckets(provider, scopes, named_only=True):
            horizon = bucket.limit.window_s * TOLD_HORIZON_FRACTION
            args = [*self._args(bucket, "normal", 1, now), *("" if v is None else v for v in told),
                    horizon, _opened_end(bucket.limit, info, now)]
            self._observe(keys=[bucket.redis_key], args=args)

    def record_outcome(self, provider: str, scopes: Mapping[str, str], rejected: bool) -> None:
        """Teach the adaptive buckets of ``scopes`` how a call went.

        On success pass every scope of the call; on a rejection, the scope the
        provider blamed when it says (Facebook code 4: app, 17: token), else all.
        """
        now = self.clock()
        for bucket in self.buckets(provider, scopes, named_only=True):
            if bucket.limit.adaptive:
                args = [*self._args(bucket, "normal", 1, now), int(rejected), ADAPTIVE_DECREASE,
                        ADAPTIVE_STEP, ADAPTIVE_PROBE,
                        min(ADAPTIVE_GRACE_S, bucket.limit.window_s / 2)]
                self._outcome(keys=[bucket.redis_key], args=args)

    def adaptive_rate(self, provider: str, scope: str, key: str | None = None) -> float | None:
        """The learned calls per window of one adaptive bucket (for ops and tests)."""
        for bucket in self.buckets(provider, {scope: key} if key else {scope: ""}, named_only=True):
            if bucket.limit.adaptive:
                rate = self.redis.hget(bucket.redis_key, "rate")
                return float(rate) if rate else max(1.0, ADAPTIVE_START * bucket.limit.limit)
        return None


def _opened_end(limit: QuotaLimit, info: RateLimitInfo, now: float):
    """When the provider's window surely ends, if this answer was its first call; else ''.

    ``remaining == limit - 1`` means our call opened the window: it began
    before we read the answer, so it ends within ``window_s`` of ``now`` on our
    own clock, whatever the provider's clock and its whole-second ``reset``
    say. Only for a published limit that matches ours (same limit, so the
    window is the configured one too).
    """
    if (limit.adaptive or info.limit != limit.limit or info.remaining is None
            or info.remaining != limit.limit - 1):
        return ""
    return f"{now + limit.window_s:.6f}"


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
