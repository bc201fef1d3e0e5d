"""Operators' switches, in Redis so every worker obeys them at once.

A paused provider (``flask --app service providers pause P``) gets no call
at all: every task about to call it parks itself in the delayed set and
looks again ``PAUSE_RECHECK_S`` later, until ``resume`` (which also makes the
parked calls due at once). Nothing is lost and no worker slot is held.

Keys::

    <prefix>:paused   HASH  provider, or provider@instance (one instance of a federated
                            provider: ``instance_switch``) -> JSON {"at": epoch s, "reason": text}
"""

from __future__ import annotations

import json
import time

from state.keys import Keys

#: how long a call to a paused provider parks before it looks again
PAUSE_RECHECK_S = 5.0
#: how long a process may act on the paused set it last read (the call path's cache):
#: a pause reaches every worker within this, a resume at once
PAUSE_PROPAGATION_S = 1.0
#: the reason a parked call to a paused provider carries (delayed set, status, dashboard)
PAUSED_REASON = "provider_paused"


class ProviderSwitches:
    """Pause and resume providers; ``paused_for`` is the check on the call path."""

    def __init__(self, redis_client, key_prefix: str, clock=time.time, cache_s: float = 0.0):
        self.redis = redis_client
        self.key = Keys(key_prefix).paused
        self.clock = clock
        #: how long a process may act on the paused set it last read (0: read every time);
        #: saves the call path a round trip per call, at the cost of a pause taking
        #: up to this long to reach every worker (a resume is seen at once)
        self.cache_s = cache_s
        self._cached: tuple[float, frozenset] | None = None

    def pause(self, provider: str, reason: str = "") -> bool:
        """Pause ``provider``; False if it already was (the first reason stays)."""
        record = json.dumps({"at": self.clock(), "reason": reason[:200]})
        return bool(self.redis.hsetnx(self.key, provider, record))

    def resume(self, provider: str) -> bool:
        """Resume ``provider``; False if it was not paused."""
        return bool(self.redis.hdel(self.key, provider))

    def paused(self) -> dict[str, dict]:
        """Every paused provider and since when, and why."""
        return {
            name.decode(): json.loads(raw) for name, raw in self.redis.hgetall(self.key).items()
        }

    def is_paused(self, provider: str, instance: str | None = None) -> bool:
        """Whether ``provider`` is paused, or (a federated one) its ``instance`` is."""
        names = (provider,) if instance is None else (provider, instance_switch(provider, instance))
        if self.cache_s <= 0:
            return any(self.redis.hmget(self.key, names))
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self.cache_s:
            cached = frozenset(name.decode() for name in self.redis.hkeys(self.key))
            self._cached = (now, cached)
        # paused per the cache: confirm, so a resume takes effect at once (rare: only while paused)
        return any(n in self._cached[1] for n in names) and any(self.redis.hmget(self.key, names))


def instance_switch(provider: str, instance: str) -> str:
    """The switch of one instance of a federated provider (``mastodon@fosstodon.org``)."""
    return f"{provider}@{instance}"


def provider_gate(switches: ProviderSwitches, provider: str, instance: str | None = None) -> float:
    """Seconds a call to ``provider`` must wait before trying again; 0.0 to go on.

    The one check the outbound call path makes before it takes quota, so a
    paused provider costs no quota and no call.
    """
    return PAUSE_RECHECK_S if switches.is_paused(provider, instance) else 0.0
