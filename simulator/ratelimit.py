"""Provider quotas: windows that reject, sliding meters that watch.

Enforcement is by window, as the providers do it. A fixed window starts at
the first call (or at a wall-clock multiple of the window where the provider
aligns them: Mastodon, LinkedIn's midnight UTC) and resets ``window_s``
later; the reset time is what the rate-limit headers announce. A rolling
window (Facebook's "rolling one hour") counts the calls of the last
``window_s`` seconds. A client that waits for a fixed window's reset and then
bursts may legitimately send up to twice the limit within one sliding
window; the sliding meter records the highest count of calls seen in any
``window_s`` span so fairness tests can see exactly that.

A call meets every rule of its provider that applies to it (``applies``);
each counts it under its own key (``scope_key``). ``evaluate`` says whether
one of them refuses it; ``Admission.charge`` then counts it, and
``Admission.quotas`` gives what each rule would announce, so the response can
speak for the one with the fewest calls left. A call that uses no quota (an
authorized ``304 Not Modified`` on GitHub) is evaluated and never charged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .scenario import RateLimitRule


class SlidingPeak:
    """Highest number of events in any span of ``window_s`` seconds.

    Counts go into buckets of ``window_s / 1000`` (at most 1 s), so memory is
    bounded whatever the call rate. Only events strictly inside the last
    ``window_s`` are counted, so the peak can undercount by at most the
    events of one bucket, never overcount.
    """

    __slots__ = ("window_s", "width", "buckets", "total", "peak")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.width = min(window_s / 1000.0, 1.0)
        self.buckets: deque[list] = deque()  # [bucket number, count]
        self.total = 0
        self.peak = 0

    def hit(self, now: float) -> None:
        number = int(now // self.width)
        buckets = self.buckets
        if buckets and buckets[-1][0] == number:
            buckets[-1][1] += 1
        else:
            buckets.append([number, 1])
        self.total += 1
        horizon = number - int(self.window_s / self.width)
        while buckets[0][0] <= horizon:
            self.total -= buckets.popleft()[1]
        if self.total > self.peak:
            self.peak = self.total


class QuotaWindow:
    """One scope key's fixed window under one rule."""

    __slots__ = ("rule", "start", "used", "rejected", "meter")

    def __init__(self, rule: RateLimitRule) -> None:
        self.rule = rule
        self.start: float | None = None
        self.used = 0
        self.rejected = 0
        self.meter = SlidingPeak(rule.window_s)

    def roll(self, now: float) -> None:
        """Start a new window if the current one is over (or none began)."""
        rule = self.rule
        if self.start is None or now >= self.start + rule.window_s:
            self.start = (now // rule.window_s) * rule.window_s if rule.align else now
            self.used = 0

    def count(self, now: float) -> int:
        return self.used

    def charge(self, now: float) -> None:
        self.used += 1

    def reset_at(self, now: float) -> float:
        if self.start is None:
            return now + self.rule.window_s
        return self.start + self.rule.window_s


class RollingWindow:
    """One scope key's rolling window: the calls of the last ``window_s`` seconds.

    Calls go into buckets of ``window_s / 1000`` (at most 1 s); a bucket leaves
    the count once all of it is older than ``window_s``, so a call counts for
    between ``window_s`` and ``window_s`` plus one bucket.
    """

    __slots__ = ("rule", "width", "buckets", "used", "rejected", "meter", "start")

    def __init__(self, rule: RateLimitRule) -> None:
        self.rule = rule
        self.width = min(rule.window_s / 1000.0, 1.0)
        self.buckets: deque[list] = deque()  # [bucket number, count]
        self.used = 0
        self.rejected = 0
        self.meter = SlidingPeak(rule.window_s)
        self.start: float | None = None  # the oldest counted call's bucket, for reports

    def roll(self, now: float) -> None:
        horizon = (now - self.rule.window_s) / self.width
        buckets = self.buckets
        while buckets and buckets[0][0] + 1 <= horizon:
            self.used -= buckets.popleft()[1]
        self.start = buckets[0][0] * self.width if buckets else None

    def count(self, now: float) -> int:
        return self.used

    def charge(self, now: float) -> None:
        number = int(now // self.width)
        if self.buckets and self.buckets[-1][0] == number:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([number, 1])
        self.used += 1
        if self.start is None:
            self.start = number * self.width

    def reset_at(self, now: float) -> float:
        """When the oldest counted call stops counting (one call's room comes back)."""
        if not self.buckets:
            return now
        return (self.buckets[0][0] + 1) * self.width + self.rule.window_s


@dataclass
class Quota:
    """What the rate-limit headers of one response say about one rule."""

    rule: RateLimitRule
    key: str
    limit: int
    remaining: int
    used: int
    reset: float  # epoch seconds
    now: float = 0.0  # when the call was received (Mastodon's reset keeps its fraction)


class Admission:
    """The rules one call meets, and whether one of them refuses it."""

    __slots__ = ("entries", "rejected", "now", "limit_of")

    def __init__(self, entries: list, now: float, limit_of: Callable, judge: bool = True) -> None:
        #: (rule, key, window) of every rule that applies to the call
        self.entries = entries
        self.now = now
        self.limit_of = limit_of
        #: the refusing rule's quota (remaining 0), if one refuses
        self.rejected: Quota | None = None
        for rule, key, window in entries if judge else ():
            if window.count(now) >= limit_of(rule):
                window.rejected += 1
                window.meter.hit(now)
                self.rejected = self._quota(rule, key, window)
                break

    def charge(self) -> None:
        """Count the call against every rule it meets."""
        for _, _, window in self.entries:
            window.charge(self.now)
            window.meter.hit(self.now)

    def quotas(self) -> list[Quota]:
        """What each rule would announce now."""
        return [self._quota(rule, key, window) for rule, key, window in self.entries]

    def _quota(self, rule: RateLimitRule, key: str, window) -> Quota:
        limit = self.limit_of(rule)
        used = window.count(self.now)
        return Quota(
            rule, key, limit, max(0, limit - used), used, window.reset_at(self.now), self.now
        )


def tightest(quotas: list[Quota], announced: Callable[[RateLimitRule], bool]) -> Quota | None:
    """The announced quota with the fewest calls left ("the one you are closest to
    exceeding", as Mastodon documents it; Bluesky's combined limiter does the same)."""
    best = None
    for quota in quotas:
        if (
            quota.rule.publish
            and announced(quota.rule)
            and (best is None or quota.remaining < best.remaining)
        ):
            best = quota
    return best


class RateLimiter:
    """All rules of all providers and the windows of every scope key.

    ``scale(provider)`` is what a rule with ``scale: "app_users"`` multiplies
    its limit by (the provider's scenario accounts).
    """

    def __init__(
        self,
        rules: dict[str, list[RateLimitRule]],
        scale: Callable[[str], int] = lambda provider: 1,
    ) -> None:
        self.scale = scale
        self.rules: dict[str, list[RateLimitRule]] = {}
        self.windows: dict[tuple[int, str], QuotaWindow | RollingWindow] = {}
        self.replace_all(rules)

    def replace_all(self, rules: dict[str, list[RateLimitRule]]) -> None:
        self.rules = {p: list(r) for p, r in rules.items()}
        self.windows.clear()

    def replace(self, provider: str, rules: list[RateLimitRule]) -> None:
        """Swap one provider's rules at run time (the counters of the rules swapped out
        restart; a rule kept keeps its counters)."""
        kept = {id(rule) for rule in rules}
        for rule in self.rules.get(provider, []):
            if id(rule) in kept:
                continue
            for key in [k for k in self.windows if k[0] == id(rule)]:
                del self.windows[key]
        self.rules[provider] = list(rules)

    def limit_of(self, rule: RateLimitRule) -> int:
        if rule.scale == "app_users":
            return rule.limit * max(1, self.scale(rule.provider))
        return rule.limit

    @staticmethod
    def applies(rule: RateLimitRule, call) -> bool:
        """Whether ``rule`` counts ``call`` (its kind, endpoint, paging, caller, instance)."""
        return (
            (rule.path_kind is None or rule.path_kind == call.kind)
            and (rule.endpoint is None or rule.endpoint == call.endpoint)
            and (rule.applies_to == "all" or call.paging)
            and (rule.auth == "any" or (rule.auth == "token") == call.authenticated)
            and rule.instance in (None, call.instance)
        )

    @staticmethod
    def scope_key(rule: RateLimitRule, call) -> str:
        """Who the rule counts the call against; a token or user rule counts a call
        without an accepted token by its address."""
        if rule.scope == "app":
            key = "app"
        elif rule.scope == "token" and call.authenticated:
            key = call.token
        elif rule.scope == "user" and call.authenticated:
            key = f"user:{call.owner}"
        else:
            key = f"ip:{call.remote}"
        if rule.per_endpoint:
            key = f"{key} {call.endpoint}"
        if rule.instance is None and call.instance is not None:
            # the provider's own rules hold on every instance, each counting its own calls
            key = f"{call.instance}/{key}"
        return key

    def evaluate(self, call) -> Admission:
        """The rules ``call`` meets (their windows rolled to now), and any refusal."""
        return Admission(self._entries(call, keep=True), call.t, self.limit_of)

    def peek(self, call) -> list[Quota]:
        """What the rules ``call`` meets would announce, without counting it (the
        headers of an answer that is not the quota's: an injected error)."""
        return Admission(
            self._entries(call, keep=False), call.t, self.limit_of, judge=False
        ).quotas()

    def _entries(self, call, keep: bool) -> list:
        entries = []
        rules = self.rules.get(call.provider, ())
        # an instance with rules of its own announces those, not the provider's defaults
        own = call.instance is not None and any(r.instance == call.instance for r in rules)
        for rule in rules:
            if not self.applies(rule, call) or (own and rule.instance is None):
                continue
            key = self.scope_key(rule, call)
            window = self.windows.get((id(rule), key))
            if window is None:
                window = RollingWindow(rule) if rule.rolling else QuotaWindow(rule)
                if keep:
                    self.windows[(id(rule), key)] = window
            window.roll(call.t)
            entries.append((rule, key, window))
        return entries

    def report(self) -> list[dict]:
        """Per rule: peak calls in any sliding window, and per scope key."""
        out = []
        for rules in self.rules.values():
            for rule in rules:
                keys = {
                    key: {
                        "peak": w.meter.peak,
                        "used": w.used,
                        "rejected": w.rejected,
                        "reset": math.ceil(w.reset_at(0.0)) if w.start is not None else None,
                    }
                    for (rule_id, key), w in self.windows.items()
                    if rule_id == id(rule)
                }
                peak_key = max(keys, key=lambda k: keys[k]["peak"], default=None)
                out.append(
                    {
                        **rule.to_json(),
                        "effective_limit": self.limit_of(rule),
                        "peak": keys[peak_key]["peak"] if peak_key else 0,
                        "peak_key": peak_key,
                        "rejected": sum(k["rejected"] for k in keys.values()),
                        "by_key": keys,
                    }
                )
        return out
