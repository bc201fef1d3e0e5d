"""A cap on a provider's calls in flight per key, shared by every worker.

GitHub's secondary limits allow at most 100 concurrent requests per user
(REST and GraphQL together) and answer more with a ``403``/``429`` and
``retry-after``. A provider that documents such a cap sets
``CONCURRENCY_CAP``; each call then holds a *lease* from before it is sent
until its answer (``release``). A worker that dies mid-call never gives its
lease back: the lease expires after ``ttl_s`` (the longest a call stays out:
the HTTP timeouts), so a crash costs one place for that long, never the cap.

A refused caller is told to come back in at most ``poll_s`` (leases are
released at answers, usually well before they expire): the task layer parks
it in the delayed set, never sleeps. Script: ``state/lua/lease.lua``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from state.keys import Keys
from state.lua import LuaScript

#: a refused call looks again after at most this long
LEASE_POLL_S = 0.25


@dataclass(frozen=True)
class Lease:
    """A place held for one call (``granted``), or how long to wait for one."""

    redis_key: str
    lease_id: str
    wait_s: float = 0.0

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0


class ConcurrencyCap:
    """Leases under a cap per (provider, key) in Redis (see the module doc)."""

    def __init__(
        self,
        redis_client,
        key_prefix: str,
        clock=time.time,
        ttl_s: float = 15.0,
        poll_s=LEASE_POLL_S,
    ):
        self.redis = redis_client
        self.keys = Keys(key_prefix)
        self.clock = clock
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self._lease = LuaScript(redis_client, "lease")

    def acquire(self, provider: str, key: str, cap: int) -> Lease:
        """Hold a place for one call, or say how long to wait for one."""
        redis_key = self.keys.concurrency(provider, key)
        lease_id = uuid.uuid4().hex
        held, wait = self._run(redis_key, "acquire", lease_id, cap)
        return Lease(redis_key, lease_id, 0.0 if held else max(float(wait), 1e-3))

    def queue_acquire(self, batch, provider: str, key: str, cap: int):
        """``acquire`` as a step of a ``state.batch.Batch``: its ``Reply`` holds the ``Lease``."""
        redis_key = self.keys.concurrency(provider, key)
        lease_id = uuid.uuid4().hex

        def read(reply) -> Lease:
            held, wait = int(reply[0]), _text(reply[1])
            return Lease(redis_key, lease_id, 0.0 if held else max(float(wait), 1e-3))

        return self._lease.queue(
            batch,
            keys={"leases": redis_key},
            args=self._args("acquire", lease_id, cap),
            read=read,
        )

    def release(self, lease: Lease, batch=None) -> None:
        """Give back a held place (the call was answered, or not sent)."""
        if not lease.granted:
            return
        self._run(lease.redis_key, "release", lease.lease_id, 1, batch)

    def held(self, provider: str, key: str) -> int:
        """Leases held now, expired ones left out (ops and tests)."""
        redis_key = self.keys.concurrency(provider, key)
        return self.redis.zcount(redis_key, f"({self.clock():.6f}", "+inf")

    def _args(self, mode: str, lease_id: str, cap: int) -> dict:
        return {
            "now": round(self.clock(), 6),
            "mode": mode,
            "lease": lease_id,
            "cap": cap,
            "ttl": self.ttl_s,
            "poll": self.poll_s,
        }

    def _run(self, redis_key: str, mode: str, lease_id: str, cap: int, batch=None):
        args = self._args(mode, lease_id, cap)
        if batch is not None:
            return self._lease.queue(batch, keys={"leases": redis_key}, args=args)
        held, wait = self._lease(keys={"leases": redis_key}, args=args)
        return int(held), _text(wait)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
