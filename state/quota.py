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

When a call counts: the provider counts a call when it *receives* it, which
is some time after we granted it (the rest of the task, scheduling on a busy
machine, the network). Counting it at its grant would let two calls granted
a window apart land in one provider window. So a call is accounted at the
latest moment the provider may have received it: on grant, at grant time
plus the bucket's *margin*; on its answer (``settle``), at the answer's time
(whatever the provider received, it received before answering), and it stays
counted for one window after that. Then no sliding window of ``window_s`` at
the provider holds more than ``limit`` calls: of any ``limit + 1`` calls it
received within ``window_s``, the one granted last was granted no later than
it was received, so within ``window_s`` of the others' receipt, hence while
they were all still counted: it was refused. The margin is learned, not set:
the slowest recent grant-to-answer latency of the bucket, halving every
``MARGIN_HALF_LIFE_S``, at most the HTTP timeouts (no call stays unanswered
longer). It covers calls not yet answered (and those never settled: a worker
that died mid-call); an answered call counts by its own latency, so a margin
above the usual latency costs nothing once the answers are in. A bucket that
has seen no answer yet accounts at the grant (margin 0). What this does not
cover: a call still unanswered one window plus the margin after its grant.

Provider windows: a ``remaining``/``reset`` report caps the bucket until the
reset (plus ``RESET_SKEW_S``: it is whole seconds, on the provider's clock);
the answer of the call that opened a provider window bounds its end on our
own clock instead (``observe``).

Several scopes on one call (e.g. Facebook ``app`` + ``token``): each bucket
has its own hash tag, so no single script may touch them all (Redis Cluster).
We take bucket by bucket (token, ip, app) and refund the taken ones when a
later bucket refuses. This never over-grants; at worst a concurrent caller is
briefly refused by a grant that is then refunded. Token first, so a user who
is out of quota never touches the shared buckets. For the same reason the
buckets cannot join a sync's own scripts (its keys have the user's tag): a
page task sends the first bucket's take in the same pipeline as its sync
snapshot instead (``queue_take_first``), and gives it back (``release``) if it
makes no call after all.

A quota wait is never a sleep: ``decide`` says how many seconds (``wait_s``);
the caller parks the task in the delayed set (``state.delayed``) for that long.

The scripts are ``state/lua/{take,settle,refund,observe,outcome}.lua``, each sent
with ``quota_prelude.lua`` (reading a bucket and judging a request), one
bucket key each (``P:quota:{provider:scope:key}``, ``state.keys``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import providers
from providers.ratelimits import SCOPES, QuotaLimit, QuotaSpecError, RateLimitInfo, parse_limits
from state.keys import Keys
from state.lua import LuaScript

SHARED_SCOPES = frozenset({"app", "ip"})
#: how each queue class may use a shared bucket (R reserved, B borrows, C capped)
CLASS_POLICY = {"normal": "R", "whale": "B", "trickle": "C"}
CLASS_LETTER = {"normal": "n", "whale": "w", "trickle": "t"}
DEFAULT_SHARES = {"normal": 0.5, "whale": 0.4, "trickle": 0.1}
#: the key of a shared scope's one bucket per provider: workers take under it, the
#: dashboard and ``/metrics`` read it (``state.quota_view``). ``app``: every token of
#: the provider; ``ip``: this deployment's egress (workers behind one NAT share one budget)
SHARED_KEYS = {"app": "app", "ip": "egress"}

#: sub-window counters per window: more is finer (less idle) but bigger hashes
WINDOW_SLOTS = 60
#: our clock vs the provider's: a reset counts as passed this much later
RESET_SKEW_S = 1.0
#: a learned latency's weight in a bucket's margin halves in this many seconds
MARGIN_HALF_LIFE_S = 60.0
#: the most a call stays unanswered, when the caller does not say (the default
#: HTTP timeouts: connect 3.05 s + read 10 s): bounds the learned margin
DEFAULT_MAX_MARGIN_S = 13.05
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


def scope_keys(scopes, token_key: str) -> dict[str, str]:
    """The bucket key of each of a call's ``scopes``: its token's (``Credential.fingerprint``)
    or the shared one."""
    keys = {"token": token_key, **SHARED_KEYS}
    return {scope: keys[scope] for scope in scopes}


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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QuotaConfig:
        """``QUOTA_<PROVIDER>=limit/window_s/scope[/adaptive][,…]`` replaces a
        provider's limits; ``QUOTA_SHARES`` (all providers) and
        ``QUOTA_SHARES_<PROVIDER>`` set the queue-class shares."""
        env = {} if environ is None else environ
        # every provider's default quota is a fact of its class
        limits = {name: tuple(p.QUOTAS) for name, p in providers.provider_classes().items()}
        for name, value in env.items():
            if name.startswith("QUOTA_") and not name.startswith("QUOTA_SHARES") and value:
                limits[name[len("QUOTA_") :].lower()] = parse_limits(value)
        base = parse_shares(env["QUOTA_SHARES"]) if env.get("QUOTA_SHARES") else DEFAULT_SHARES
        shares = {}
        for provider in limits:
            own = env.get(f"QUOTA_SHARES_{provider.upper()}")
            shares[provider] = parse_shares(own) if own else dict(base)
        return cls(limits=limits, shares=shares)

    def configured(self, provider: str) -> bool:
        """Whether ``QUOTA_<PROVIDER>`` replaced the provider's default quota.

        For a provider that announces its limits (``ANNOUNCED_RULES``) the
        announced limit governs; a quota configured there is an operator's own
        cap on top of it (``sync.outbound``), and its windows are what the
        headers do not say (``windows``).
        """
        default = providers.provider_classes().get(provider)
        return default is None or tuple(self.limits.get(provider, ())) != tuple(default.QUOTAS)

    def windows(self) -> dict[str, dict[int, float]]:
        """Per configured provider, limit → window of its published (non-adaptive) limits."""
        return {
            provider: {q.limit: q.window_s for q in limits if not q.adaptive}
            for provider, limits in self.limits.items()
            if self.configured(provider)
        }


@dataclass(frozen=True)
class QuotaTicket:
    """What one bucket's take counted: ``settle`` moves it to the answer's time."""

    bucket: QuotaBucket
    #: the sub-window the call is accounted in (as the take script returned it)
    slot: str
    #: the margin the call was accounted with, seconds after its grant
    margin_s: float


@dataclass(frozen=True)
class QuotaDecision:
    """What ``decide`` found: granted, or how long to wait and for which scope.

    A grant carries what was taken (``tickets``), for ``QuotaGate.settle``
    once the call is answered.
    """

    wait_s: float
    scope: str | None = None
    tickets: tuple[QuotaTicket, ...] = ()
    granted_at: float = 0.0
    queue_class: str = "normal"
    cost: int = 1

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0

    @property
    def margin_s(self) -> float:
        """The largest margin the grant was accounted with (0 if none)."""
        return max((t.margin_s for t in self.tickets), default=0.0)


@dataclass(frozen=True)
class QuotaBucket:
    """One limit applied to one key: the unit a Lua script works on."""

    provider: str
    limit: QuotaLimit
    key: str
    redis_key: str


@dataclass(frozen=True)
class Prefetched:
    """A take of a call's first bucket sent ahead (``QuotaGate.queue_take_first``):
    ``decide`` uses it, or ``release`` gives it back."""

    bucket: QuotaBucket
    queue_class: str
    cost: int
    reply: object  # the state.batch.Reply of take.lua's answer
    #: when the take was sent: the grant's time, from which its latency is learned
    taken_at: float = 0.0


class QuotaGate:
    """Takes, corrects and adapts provider quotas held in Redis (see module doc)."""

    def __init__(
        self,
        redis_client,
        key_prefix: str,
        config: QuotaConfig,
        clock: Callable[[], float] = time.time,
        max_margin_s: float = DEFAULT_MAX_MARGIN_S,
    ):
        self.redis = redis_client
        self.prefix = key_prefix
        self.keys = Keys(key_prefix)
        self.clock = clock
        self.config = config
        #: the longest a call stays unanswered (the HTTP timeouts): bounds the margin
        self.max_margin_s = max_margin_s
        self._take = LuaScript(redis_client, "take")
        self._settle = LuaScript(redis_client, "settle")
        self._refund = LuaScript(redis_client, "refund")
        self._observe = LuaScript(redis_client, "observe")
        self._outcome = LuaScript(redis_client, "outcome")
        self._fixed_args: dict[tuple, dict] = {}

    def limits(self, provider: str) -> tuple[QuotaLimit, ...]:
        if provider not in self.config.limits:
            raise ValueError(f"no quota configured for provider {provider!r}")
        return self.config.limits[provider]

    def shares(self, provider: str) -> Mapping[str, float]:
        return self.config.shares.get(provider, DEFAULT_SHARES)

    def buckets(
        self, provider: str, scopes: Mapping[str, str], named_only: bool = False
    ) -> list[QuotaBucket]:
        """The provider's buckets for these scope keys, in taking order.

        ``app`` and ``ip`` have their ``SHARED_KEYS``; a ``token`` limit needs its key.
        With ``named_only``, only the scopes present in ``scopes``.
        """
        found = []
        for limit in sorted(self.limits(provider), key=lambda lim: SCOPES.index(lim.scope)):
            if named_only and limit.scope not in scopes:
                continue
            key = scopes.get(limit.scope) or SHARED_KEYS.get(limit.scope)
            if key is None:
                raise ValueError(f"{provider} is limited per token: pass scopes['token']")
            pattern = _TOKEN_KEY if limit.scope == "token" else _OTHER_KEY
            if not pattern.fullmatch(key):
                # also stops a raw credential from becoming a Redis key
                raise ValueError(
                    f"bad {limit.scope} key for {provider}; tokens go through Credential.fingerprint()"
                )
            redis_key = self.keys.quota_bucket(provider, limit.scope, key)
            found.append(QuotaBucket(provider, limit, key, redis_key))
        return found

    def _args(self, bucket: QuotaBucket, queue_class: str, cost: int, now: float) -> dict:
        """The arguments every quota script takes (``state/lua/quota_prelude.lua``)."""
        key = (bucket.provider, bucket.limit, queue_class)
        fixed = self._fixed_args.get(key)
        if fixed is None:  # what does not change from call to call, built once
            if queue_class not in CLASS_POLICY:
                raise ValueError(f"queue_class must be one of {tuple(CLASS_POLICY)}")
            lim, shares = bucket.limit, self.shares(bucket.provider)
            fixed = self._fixed_args[key] = {
                "class": CLASS_LETTER[queue_class],
                "limit": lim.limit,
                "window_s": lim.window_s,
                "slots": WINDOW_SLOTS,
                "shared": lim.scope in SHARED_SCOPES,
                "adaptive": lim.adaptive,
                "start": ADAPTIVE_START,
                "skew": RESET_SKEW_S,
                "shares": {CLASS_LETTER[c]: shares.get(c, 0.0) for c in CLASS_POLICY},
                "kinds": {CLASS_LETTER[c]: policy for c, policy in CLASS_POLICY.items()},
                "memory": ADAPTIVE_MEMORY_S,
                "max_margin": self.max_margin_s,
                "half_life": MARGIN_HALF_LIFE_S,
            }
        return {"now": round(now, 6), "cost": cost, **fixed}

    def decide(
        self,
        provider: str,
        scopes: Mapping[str, str],
        queue_class: str,
        cost: int = 1,
        first: Prefetched | None = None,
    ) -> QuotaDecision:
        """Take ``cost`` from every bucket, or nothing and say how long to wait.

        ``first``: the first bucket's take, already sent (``queue_take_first``);
        used if it was for this very bucket, class and cost, else given back.
        """
        now = self.clock()
        buckets = self.buckets(provider, scopes)
        first = self._matching_first(first, buckets, queue_class, cost)
        taken = []
        for i, bucket in enumerate(buckets):
            if i == 0 and first is not None:
                granted, detail, *rest = first.reply.value
            else:
                args = self._args(bucket, queue_class, cost, now)
                granted, detail, *rest = self._take(
                    keys={"bucket": bucket.redis_key}, args={**args, "mode": "take"}
                )
            if not granted:
                for done, slot, took_left, _ in taken:
                    self._refund_one(done, queue_class, cost, now, slot, took_left)
                return self._refusal(detail, bucket, buckets[i + 1 :], queue_class, cost, now)
            taken.append((bucket, _s(detail), rest[0], float(_s(rest[1]))))
        tickets = tuple(QuotaTicket(bucket, slot, margin) for bucket, slot, _, margin in taken)
        # a take sent ahead was granted when it was sent: the earliest the call may leave
        granted_at = min(now, first.taken_at) if first is not None and first.taken_at else now
        return QuotaDecision(
            0.0, tickets=tickets, granted_at=granted_at, queue_class=queue_class, cost=cost
        )

    def _matching_first(
        self, first: Prefetched | None, buckets: list[QuotaBucket], queue_class: str, cost: int
    ) -> Prefetched | None:
        """``first`` if it was taken from this call's first bucket, for this class and
        cost; else it is given back (the token was refreshed, the sync changed queue)."""
        if first is None or (
            buckets
            and first.bucket == buckets[0]
            and first.queue_class == queue_class
            and first.cost == cost
        ):
            return first
        self.release(first)
        return None

    def _refusal(
        self,
        detail,
        refused: QuotaBucket,
        later: list[QuotaBucket],
        queue_class: str,
        cost: int,
        now: float,
    ) -> QuotaDecision:
        """A call the bucket ``refused`` turned down waits the longest of that bucket's
        wait and the later buckets' (peeked, not taken); the scope is whose wait it is."""
        waits = [(self._wait(detail, refused), refused.limit.scope)]
        for bucket in later:
            _, later_wait = self._take(
                keys={"bucket": bucket.redis_key},
                args={**self._args(bucket, queue_class, cost, now), "mode": "peek"},
            )
            waits.append((self._wait(later_wait, bucket), bucket.limit.scope))
        wait, scope = max(waits)
        return QuotaDecision(wait, scope)

    def settle(self, decision: QuotaDecision) -> None:
        """The granted call was answered (or failed): account it at this moment.

        Call it as soon as the call returns, whatever it returned (an error
        answer, a timeout): the provider received the call, if at all, before
        now, so the call leaves the window one window from now, and its
        latency teaches the bucket its margin. A grant never settled (its
        worker died mid-call) stays accounted at grant + margin.
        """
        if not decision.tickets:
            return
        now = self.clock()
        for ticket in decision.tickets:
            self._settle(
                keys={"bucket": ticket.bucket.redis_key},
                args={
                    **self._args(ticket.bucket, decision.queue_class, decision.cost, now),
                    "slot": ticket.slot,
                    "granted_at": decision.granted_at,
                },
            )

    def queue_take_first(
        self, batch, provider: str, scopes: Mapping[str, str], queue_class: str, cost: int = 1
    ) -> Prefetched:
        """Take ``cost`` from the call's first bucket, as a step of a ``state.batch.Batch``.

        For a caller that sends the take with its other reads, before it knows
        it will call: it hands the result to ``decide`` (``decide(first=…)``),
        which goes on with the other buckets, or to ``release`` if it does not
        call. Only the first bucket (token before the shared ones, as ``decide``
        takes them), so a user out of quota still never touches the shared buckets.
        """
        bucket = self.buckets(provider, scopes)[0]
        args = self._args(bucket, queue_class, cost, self.clock())
        reply = self._take.queue(
            batch, keys={"bucket": bucket.redis_key}, args={**args, "mode": "take"}
        )
        return Prefetched(bucket, queue_class, cost, reply, args["now"])

    def release(self, first: Prefetched) -> None:
        """Give back a ``queue_take_first`` take that no call will use."""
        granted, slot, *rest = first.reply.value
        if granted:
            self._refund_one(
                first.bucket, first.queue_class, first.cost, self.clock(), slot, rest[0]
            )

    def _refund_one(
        self, bucket: QuotaBucket, queue_class: str, cost: int, now: float, slot, took_left
    ) -> None:
        self._refund(
            keys={"bucket": bucket.redis_key},
            args={
                **self._args(bucket, queue_class, cost, now),
                "slot": _s(slot),
                "took_left": bool(took_left),
            },
        )

    @staticmethod
    def _wait(detail, bucket: QuotaBucket) -> float:
        wait = float(_s(detail))
        if wait < 0:  # cannot be granted as configured: retry after a window
            return bucket.limit.window_s
        return wait

    def observe(
        self, provider: str, scopes: Mapping[str, str], info: RateLimitInfo, batch=None
    ) -> None:
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

        ``batch``: only queued in that ``state.batch.Batch`` (sent with it).
        """
        if info.is_empty():
            return
        now = self.clock()
        for bucket in self.buckets(provider, scopes, named_only=True):
            self._run(
                self._observe,
                batch,
                keys={"bucket": bucket.redis_key},
                args={
                    **self._args(bucket, "normal", 1, now),
                    "remaining": info.remaining,
                    "reset_at": info.reset_at,
                    "retry_after": info.retry_after,
                    "usage_percent": info.usage_percent,
                    "horizon": bucket.limit.window_s * TOLD_HORIZON_FRACTION,
                    "opened_end": _opened_end(bucket.limit, info, now),
                },
            )

    def record_outcome(
        self, provider: str, scopes: Mapping[str, str], rejected: bool, batch=None
    ) -> None:
        """Teach the adaptive buckets of ``scopes`` how a call went.

        On success pass every scope of the call; on a rejection, the scope the
        provider blamed when it says (Facebook code 4: app, 17: token), else all.
        ``batch``: only queued in that ``state.batch.Batch`` (sent with it).
        """
        now = self.clock()
        for bucket in self.buckets(provider, scopes, named_only=True):
            if bucket.limit.adaptive:
                self._run(
                    self._outcome,
                    batch,
                    keys={"bucket": bucket.redis_key},
                    args={
                        **self._args(bucket, "normal", 1, now),
                        "rejected": bool(rejected),
                        "decrease": ADAPTIVE_DECREASE,
                        "step": ADAPTIVE_STEP,
                        "probe": ADAPTIVE_PROBE,
                        "grace": min(ADAPTIVE_GRACE_S, bucket.limit.window_s / 2),
                    },
                )

    @staticmethod
    def _run(script, batch, keys: dict, args: dict) -> None:
        """Call ``script`` now, or (with ``batch``) queue it there."""
        if batch is None:
            script(keys=keys, args=args)
        else:
            script.queue(batch, keys=keys, args=args)

    def adaptive_rate(self, provider: str, scope: str, key: str | None = None) -> float | None:
        """The learned calls per window of one adaptive bucket (for ops and tests)."""
        for bucket in self.buckets(provider, {scope: key} if key else {scope: ""}, named_only=True):
            if bucket.limit.adaptive:
                rate = self.redis.hget(bucket.redis_key, "rate")
                return float(rate) if rate else max(1.0, ADAPTIVE_START * bucket.limit.limit)
        return None


def _opened_end(limit: QuotaLimit, info: RateLimitInfo, now: float) -> float | None:
    """When the provider's window surely ends, if this answer was its first call; else None.

    ``remaining == limit - 1`` means our call opened the window: it began
    before we read the answer, so it ends within ``window_s`` of ``now`` on our
    own clock, whatever the provider's clock and its whole-second ``reset``
    say. Only for a published limit that matches ours (same limit, so the
    window is the configured one too).
    """
    if (
        limit.adaptive
        or info.limit != limit.limit
        or info.remaining is None
        or info.remaining != limit.limit - 1
    ):
        return None
    return round(now + limit.window_s, 6)  # to the microsecond, like "now"


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
