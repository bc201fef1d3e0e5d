"""A read-only look into the shared quota buckets, for the dashboard and ``/metrics``.

Reads a bucket's sub-window counters (``s<slot>:<class letter>``, see
``state.quota``) and sums the ones inside the sliding window, per queue
class. It does not apply a provider reset's forgetting (the gate's own
scripts do when they decide), so right after a reset it may show more
used than the gate would count: an upper bound, which is the safe side.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from state.quota import ADAPTIVE_START, CLASS_LETTER, SHARED_SCOPES, WINDOW_SLOTS, QuotaGate

_SLOT = re.compile(r"^s(-?\d+):([a-z])$")


@dataclass(frozen=True)
class QuotaLevel:
    provider: str
    scope: str
    key: str
    #: the configured ceiling per window, and what the gate allows now (adaptive: learned)
    limit: int
    capacity: int
    window_s: float
    adaptive: bool
    #: calls counted in the current sliding window, per queue class
    used: dict

    @property
    def used_total(self) -> int:
        return sum(self.used.values())

    @property
    def level(self) -> float:
        """Share of the current capacity used in the sliding window (0..1+)."""
        return self.used_total / self.capacity if self.capacity else 0.0


def shared_levels(gate: QuotaGate, provider: str, now: float | None = None) -> list[QuotaLevel]:
    """The provider's app- and ip-wide buckets (per-token buckets belong to one user each)."""
    now = time.time() if now is None else now
    levels = []
    for limit in gate.limits(provider):
        if limit.scope not in SHARED_SCOPES:
            continue
        # a token key only to name the buckets; the shared ones do not use it
        bucket = next(b for b in gate.buckets(provider, {"token": "0" * 16}) if b.limit is limit)
        raw = {k.decode(): v.decode() for k, v in gate.redis.hgetall(bucket.redis_key).items()}
        levels.append(_level(provider, bucket, raw, now))
    return levels


def _level(provider, bucket, raw: dict, now: float) -> QuotaLevel:
    limit = bucket.limit
    granularity = limit.window_s / WINDOW_SLOTS
    lowest = math.floor(now / granularity) - WINDOW_SLOTS
    used = dict.fromkeys(CLASS_LETTER, 0)
    by_letter = {letter: name for name, letter in CLASS_LETTER.items()}
    for field, value in raw.items():
        match = _SLOT.match(field)
        if match and int(match.group(1)) >= lowest and match.group(2) in by_letter:
            used[by_letter[match.group(2)]] += int(float(value))
    capacity = limit.limit
    if limit.adaptive:
        rate = float(raw["rate"]) if raw.get("rate") else max(1.0, ADAPTIVE_START * limit.limit)
        capacity = max(1, min(limit.limit, math.floor(rate)))
    return QuotaLevel(
        provider,
        limit.scope,
        bucket.key,
        limit.limit,
        capacity,
        limit.window_s,
        limit.adaptive,
        used,
    )
