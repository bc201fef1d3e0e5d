"""Provider quotas: fixed windows that reject, sliding meters that watch.

Enforcement is by fixed window, as the providers do it: the window starts
at the first call (or at a wall-clock multiple of the window where the
provider aligns them, Mastodon) and resets ``window_s`` later; the reset
time is what the rate-limit headers announce. A client that waits for the
reset and then bursts may legitimately send up to twice the limit within
one sliding window; the sliding meter records the highest count of calls
seen in any ``window_s`` span so fairness tests can see exactly that.
"""

from __future__ import annotations

import math
from collections import deque
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
    """One scope key's budget under one rule."""

    __slots__ = ("start", "used", "rejected", "meter")

    def __init__(self, rule: RateLimitRule) -> None:
        self.start: float | None = None
        self.used = 0
        self.rejected = 0
        self.meter = SlidingPeak(rule.window_s)


@dataclass
class Quota:
    """What the rate-limit headers of one response say."""

    rule: RateLimitRule
    key: str
    limit: int
    remaining: int
    used: int
    reset: float  # epoch seconds


class RateLimiter:
    """All rules of all providers and the windows of every scope key."""

    def __init__(self, rules: dict[str, list[RateLimitRule]]) -> None:
        self.rules: dict[str, list[RateLimitRule]] = {}
        self.windows: dict[tuple[int, str], QuotaWindow] = {}
        self.replace_all(rules)

    def replace_all(self, rules: dict[str, list[RateLimitRule]]) -> None:
        self.rules = {p: list(r) for p, r in rules.items()}
        self.windows.clear()

    def replace(self, provider: str, rules: list[RateLimitRule]) -> None:
        """Swap one provider's rules at run time (its counters restart)."""
        for rule in self.rules.get(provider, []):
            for key in [k for k in self.windows if k[0] == id(rule)]:
                del self.windows[key]
        self.rules[provider] = list(rules)

    @staticmethod
    def scope_key(rule: RateLimitRule, token: str | None, remote: str) -> str:
        if rule.scope == "app":
            return "app"
        if rule.scope == "token" and token:
            return token
        return f"ip:{remote}"

    def admit(
        self, provider: str, kind: str, token: str | None, remote: str, now: float
    ) -> tuple[bool, Quota | None]:
        """Count a call; ``(False, quota)`` when a rule's window is spent.

        The returned quota is the rejecting rule's, or else the published one
        with the fewest calls left (None if all are hidden, ``publish: false``):
        what the response headers should announce.
        """
        rules = self.rules.get(provider)
        if not rules:
            return True, None
        applicable = []
        for rule in rules:
            if rule.path_kind is not None and rule.path_kind != kind:
                continue
            key = self.scope_key(rule, token, remote)
            window = self.windows.get((id(rule), key))
            if window is None:
                window = self.windows[(id(rule), key)] = QuotaWindow(rule)
            if window.start is None or now >= window.start + rule.window_s:
                window.start = (now // rule.window_s) * rule.window_s if rule.align else now
                window.used = 0
            window.meter.hit(now)
            applicable.append((rule, key, window))
        if not applicable:
            return True, None
        for rule, key, window in applicable:
            if window.used >= rule.limit:
                window.rejected += 1
                return False, self._quota(rule, key, window)
        tightest = None
        for rule, key, window in applicable:
            window.used += 1
            quota = self._quota(rule, key, window)
            if rule.publish and (tightest is None or quota.remaining < tightest.remaining):
                tightest = quota
        return True, tightest

    @staticmethod
    def _quota(rule: RateLimitRule, key: str, window: QuotaWindow) -> Quota:
        return Quota(
            rule,
            key,
            rule.limit,
            max(0, rule.limit - window.used),
            window.used,
            window.start + rule.window_s,
        )

    def quota_for(self, provider: str, token: str | None, remote: str, now: float) -> Quota | None:
        """The first rule's quota for a caller, without counting a call."""
        for rule in self.rules.get(provider, []):
            key = self.scope_key(rule, token, remote)
            window = self.windows.get((id(rule), key))
            if window is None or window.start is None or now >= window.start + rule.window_s:
                return Quota(rule, key, rule.limit, rule.limit, 0, now + rule.window_s)
            return self._quota(rule, key, window)
        return None

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
                        "reset": math.ceil(w.start + rule.window_s)
                        if w.start is not None
                        else None,
                    }
                    for (rule_id, key), w in self.windows.items()
                    if rule_id == id(rule)
                }
                peak_key = max(keys, key=lambda k: keys[k]["peak"], default=None)
                out.append(
                    {
                        **rule.to_json(),
                        "peak": keys[peak_key]["peak"] if peak_key else 0,
                        "peak_key": peak_key,
                        "rejected": sum(k["rejected"] for k in keys.values()),
                        "by_key": keys,
                    }
                )
        return out
