"""How long to park a task that must try again. Pure functions, tested alone.

BACKOFF uses "full jitter" exponential backoff (a random delay up to the
capped exponential), which spreads retries of many syncs hit by one outage.
WAIT honours the provider's own reset time; when the provider names none,
it starts at the provider's floor and doubles (GitHub's secondary limit:
"at least 60 s, then exponentially").
"""

from __future__ import annotations

import random

#: a provider reset further away than this is treated as this (a bad clock or header)
MAX_WAIT_SECONDS = 26 * 3600.0
MIN_WAIT_SECONDS = 1.0


def backoff_delay(attempt: int, base: float, cap: float, rng=random.random) -> float:
    """Delay before retry number ``attempt + 1`` (attempt counts from 0)."""
    ceiling = min(cap, base * (2**attempt))
    return max(base / 2, ceiling * rng())


def wait_delay(retry_at: float | None, now: float, waits: int, floor: float) -> float:
    """Delay until the provider lets us call again."""
    delay = retry_at - now if retry_at is not None else floor * (2 ** min(waits, 6))
    return min(MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, delay))


def budget_spent(failing_since: float, now: float, budget_s: float) -> bool:
    """True when a page has been failing (BACKOFF or an open circuit) for longer than its budget."""
    return now - failing_since >= budget_s
