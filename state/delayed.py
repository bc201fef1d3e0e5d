"""Work that must wait (a quota, a provider's reset, a backoff), parked in Redis.

Celery's own delays (countdown / ETA) hold the message inside a worker until
it is due, and on the Redis broker a delay longer than the visibility timeout
is handed out again and again. So a task that must wait is *parked* here
instead: a sorted set scored by due time, plus a hash of entries, and the
scheduler process (``sync.scheduler``) sends each entry to its queue when
it is due. No worker slot is held while waiting.

Delivery is at least once. ``claim_due`` moves a due entry's score to
now + lease in the same atomic script that reads it, so a second scheduler
cannot take it, and if the claiming scheduler dies before ``release`` the
entry becomes due again when the lease runs out. The only duplicate is an
entry sent, then not released before its lease expired; tasks are idempotent.

Keys (one hash tag, so the claim script, ``state/lua/claim.lua``, stays in
one Redis Cluster slot; names in ``state.keys``)::

    <prefix>:{delayed}:due      ZSET  entry id -> due time (or lease end), epoch s
    <prefix>:{delayed}:entries  HASH  entry id -> JSON of the task to send
    <prefix>:{delayed}:claims   HASH  entry id -> times claimed (1 = first send)
    <prefix>:{delayed}:claimed_by HASH entry id -> the scheduler that claimed it, until released

A scheduler whose host is lost between claim and release would leave its
claims waiting for their lease; the claim names the claimer (its liveness
holder id, ``state.liveness``), so the other scheduler, seeing its beat gone,
makes them due at once (``due_again``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from state.keys import Keys
from state.lua import LuaScript

#: argument names that would carry a credential into Redis and the broker
FORBIDDEN_KWARGS = frozenset(
    {"access_token", "refresh_token", "token_secret", "client_secret", "password", "authorization"}
)


@dataclass(frozen=True)
class ParkedTask:
    """One parked Celery task: what to send, where, and why it waited."""

    id: str
    task_name: str
    args: list
    kwargs: dict
    queue: str
    priority: int | None
    reason: str
    parked_at: float
    due_at: float
    #: how many times a scheduler has claimed it (above 1: a lease ran out)
    claims: int = 1


class DelayedSet:
    """The parked tasks of one deployment (``key_prefix``), ordered by due time."""

    def __init__(self, redis_client, key_prefix: str, clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.clock = clock
        keys = Keys(key_prefix).delayed()
        self.due_key, self.entries_key, self.claims_key = keys.due, keys.entries, keys.claims
        self.claimed_by_key = keys.claimed_by
        self._claim = LuaScript(redis_client, "claim")

    def park(
        self,
        task_name: str,
        args: list,
        kwargs: dict,
        queue: str,
        delay_s: float,
        priority: int | None = None,
        reason: str = "",
    ) -> str:
        """Keep a task until ``delay_s`` from now; returns the entry id.

        Only JSON primitives are accepted, and no credential-named kwargs: the
        task looks its secrets up itself when it runs.
        """
        leaked = FORBIDDEN_KWARGS.intersection(kwargs)
        if leaked:
            raise ValueError(f"credentials must not be parked: {sorted(leaked)}")
        now = self.clock()
        entry_id = uuid.uuid4().hex
        due_at = now + max(0.0, float(delay_s))
        payload = json.dumps(
            {
                "task": task_name,
                "args": list(args),
                "kwargs": dict(kwargs),
                "queue": queue,
                "priority": priority,
                "reason": reason,
                "parked_at": now,
                "due_at": due_at,
            },
            allow_nan=False,  # plus json's own refusal of non-primitive objects
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.entries_key, entry_id, payload)
            pipe.zadd(self.due_key, {entry_id: due_at})
            pipe.execute()
        return entry_id

    def claim_due(
        self, limit: int = 100, lease_s: float = 30.0, claimer: str | None = None
    ) -> list[ParkedTask]:
        """Take up to ``limit`` due entries, earliest first, leased for ``lease_s`` (and
        recorded as ``claimer``'s, if given, in the same step)."""
        now = self.clock()
        raw = self._claim(
            keys={
                "due": self.due_key,
                "entries": self.entries_key,
                "claims": self.claims_key,
                "claimed_by": self.claimed_by_key if claimer else None,
            },
            args={
                "now": now,
                "lease_until": now + lease_s,
                "limit": int(limit),
                "claimer": claimer,
            },
        )
        claimed = []
        for i in range(0, len(raw), 3):
            entry_id, payload, claims = _text(raw[i]), json.loads(raw[i + 1]), int(raw[i + 2])
            claimed.append(_parked(entry_id, payload, claims))
        return claimed

    def release(self, entry_id: str) -> bool:
        """Forget an entry once its task was sent; False if it was already gone."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.due_key, entry_id)
            pipe.hdel(self.entries_key, entry_id)
            pipe.hdel(self.claims_key, entry_id)
            pipe.hdel(self.claimed_by_key, entry_id)
            removed, _, _, _ = pipe.execute()
        return bool(removed)

    def due_again(self, claimer: str) -> int:
        """Make the entries ``claimer`` claimed and never released due now (its host was
        lost between the two); how many. One that was released meanwhile stays gone."""
        mine = [
            _text(entry_id)
            for entry_id, who in self.redis.hscan_iter(self.claimed_by_key, count=500)
            if _text(who) == claimer
        ]
        if not mine:
            return 0
        again = self.make_due(mine)
        self.redis.hdel(self.claimed_by_key, *mine)
        return again

    def size(self) -> int:
        """Entries parked or claimed and not yet released."""
        return int(self.redis.zcard(self.due_key))

    def entries(self, limit: int = 10_000) -> list[ParkedTask]:
        """What is parked (for ops: the dashboard, cancel, resume), in no order."""
        found = []
        for entry_id, payload in self.redis.hscan_iter(self.entries_key, count=500):
            found.append(_parked(_text(entry_id), json.loads(payload)))
            if len(found) >= limit:
                break
        return found

    def drop(self, entry_ids) -> int:
        """Forget parked entries without sending them (a cancelled sync's waits)."""
        return sum(self.release(entry_id) for entry_id in entry_ids)

    def make_due(self, entry_ids) -> int:
        """Bring parked entries forward to now (a resumed provider's parked calls).

        ``XX`` only touches entries still there: a released one is not revived.
        """
        ids = list(entry_ids)
        if not ids:
            return 0
        now = self.clock()
        return int(self.redis.zadd(self.due_key, dict.fromkeys(ids, now), xx=True, ch=True))

    def next_due(self) -> float | None:
        """The earliest due time (or lease end), epoch seconds; None when empty."""
        first = self.redis.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None


def _parked(entry_id: str, payload: dict, claims: int = 1) -> ParkedTask:
    return ParkedTask(
        id=entry_id,
        task_name=payload["task"],
        args=payload["args"],
        kwargs=payload["kwargs"],
        queue=payload["queue"],
        priority=payload["priority"],
        reason=payload["reason"],
        parked_at=payload["parked_at"],
        due_at=payload["due_at"],
        claims=claims,
    )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
