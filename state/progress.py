"""What the stall sweep remembers about syncs in flight, in Redis.

A sync's pages are messages in the broker; a worker killed with ``kill -9``
takes its unacked message with it, and on the Redis broker that message only
comes back after the visibility timeout. The sweep (``sync.recovery``)
notices a sync that stopped moving and sends its pending pages again (pages
are idempotent: the store's done set makes a second delivery a no-op). This
module holds the few keys it needs; none is on a page's hot path::

    <prefix>:active                 ZSET  sync id -> created at (every sync begun; the
                                          sweep drops the ones it finds final)
    <prefix>:{sweep}:seen           HASH  sync id -> JSON observation: progress
                                          signature, since when unchanged, recoveries
    <prefix>:{sweep}:parked         ZSET  sync id -> latest due time of a page parked
                                          in the delayed set (waiting is not stalling)
    <prefix>:{sweep}:lock           STR   one sweep at a time across processes
    <prefix>:{sweep}:deliveries:<id> HASH cursor -> deliveries of that page beyond the
                                          first (a page that kills its worker every time)
    <prefix>:{sweep}:dead           HASH  "sync id|cursor" -> JSON: the dead-lettered page
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from state.keys import Keys


@dataclass
class Observation:
    """What the sweep last saw of one sync."""

    #: pages stored and calls made: the sync moved when this changes
    signature: str
    #: when the signature last changed (or the sweep first saw the sync)
    since: float
    #: recoveries since the last progress
    recoveries: int = 0
    #: when the last recovery re-sent its pages
    recovered_at: float = 0.0


class SyncProgress:
    def __init__(self, redis_client, key_prefix: str, clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.clock = clock
        keys = Keys(key_prefix)
        self.active_key = keys.active
        self.seen_key, self.parked_key = keys.sweep("seen"), keys.sweep("parked")
        self.lock_key, self.deliveries_key = keys.sweep("lock"), keys.sweep("deliveries")
        #: how long a sync's delivery counts are kept (they go when the sweep sees it final)
        self.deliveries_ttl_s = 7 * 24 * 3600
        self.dead_key = keys.sweep("dead")

    # -- the index of syncs in flight ---------------------------------------------------
    def track(self, sync_id: str, created_at: float, batch=None) -> None:
        """Watch a new sync; with ``batch``, queued there (``state.batch``)."""
        if batch is None:
            self.redis.zadd(self.active_key, {sync_id: created_at})
        else:
            key = self.active_key
            batch.add(lambda pipe: pipe.zadd(key, {sync_id: created_at}))

    def active(self, limit: int = 10_000) -> list[str]:
        return [_text(s) for s in self.redis.zrange(self.active_key, 0, limit - 1)]

    def forget(self, sync_id: str) -> None:
        """The sync is final (or gone): nothing to watch any more."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.active_key, sync_id)
            pipe.hdel(self.seen_key, sync_id)
            pipe.zrem(self.parked_key, sync_id)
            pipe.delete(f"{self.deliveries_key}:{sync_id}")
            pipe.execute()

    # -- parked pages -----------------------------------------------------------------
    def parked_until(self, sync_id: str, due_at: float) -> None:
        """A page of this sync waits in the delayed set until ``due_at``: not a stall."""
        self.redis.zadd(self.parked_key, {sync_id: due_at}, gt=True)

    def waiting_until(self, sync_id: str) -> float:
        score = self.redis.zscore(self.parked_key, sync_id)
        return float(score) if score is not None else 0.0

    # -- observations -----------------------------------------------------------------
    def observation(self, sync_id: str) -> Observation | None:
        raw = self.redis.hget(self.seen_key, sync_id)
        return Observation(**json.loads(raw)) if raw else None

    def observe(self, sync_id: str, observation: Observation) -> None:
        self.redis.hset(self.seen_key, sync_id, json.dumps(asdict(observation)))

    def try_lock(self, hold_s: float) -> bool:
        """One sweep at a time: True if this process may sweep for ``hold_s`` seconds."""
        return bool(self.redis.set(self.lock_key, "1", nx=True, px=max(1, int(hold_s * 1000))))

    # -- deliveries and dead letters ------------------------------------------------------
    def delivered_again(self, sync_id: str, cursor: str) -> int:
        """Count one more delivery of a page beyond its first; returns that count."""
        key = f"{self.deliveries_key}:{sync_id}"
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, cursor, 1)
            pipe.expire(key, self.deliveries_ttl_s)
            count, _ = pipe.execute()
        return int(count)

    def dead_letter(
        self, sync_id: str, cursor: str, task_name: str, deliveries: int, reason: str
    ) -> None:
        entry = {
            "sync_id": sync_id,
            "cursor": cursor,
            "task": task_name,
            "deliveries": deliveries,
            "reason": reason,
            "at": self.clock(),
        }
        self.redis.hset(self.dead_key, f"{sync_id}|{cursor}", json.dumps(entry))

    def dead_letters(self) -> list[dict]:
        return [json.loads(v) for v in self.redis.hvals(self.dead_key)]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
