"""The callback outbox: every completion event, kept in Redis until it is delivered.

An event is written here *before* anything tries to send it, frozen (the
body the receiver gets is the one of the moment the sync finished), under an
id made of the sync and the event, so the same event queued twice is one
delivery, and every retry carries the same id (``webhook-id``). A
delivery is ``pending`` until the receiver answers 2xx (``delivered``) or
it cannot be delivered (``failed``: a 4xx other than 429, or out of
attempts), when it goes to the dead-letter list, to be looked at and sent
again by an operator (``flask --app service callbacks redeliver ID``).

Durable as Redis is: with append-only persistence (README, production) a
pending delivery survives a Redis restart, and it survives any worker or
scheduler restart because the next attempt waits in the delayed set.

Keys (one hash tag)::

    <prefix>:{outbox}:deliveries   HASH  delivery id -> JSON (body, state, attempts, last answer)
    <prefix>:{outbox}:recent       ZSET  delivery id -> created at (listing; trimmed)
    <prefix>:{outbox}:failed       ZSET  delivery id -> failed at (the dead letters)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from state.keys import Keys

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: deliveries kept for listing; older delivered ones are forgotten
KEEP_RECENT = 10_000


@dataclass
class Delivery:
    id: str
    event: str
    sync_id: str
    provider: str
    #: the exact bytes to POST (signed as they are), as text
    body: str
    created_at: float
    state: str = PENDING
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_at: float | None = None
    finished_at: float | None = None
    history: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw) -> Delivery:
        return cls(**json.loads(raw))


class CallbackOutbox:
    def __init__(self, redis_client, key_prefix: str, clock=time.time):
        self.redis = redis_client
        self.clock = clock
        keys = Keys(key_prefix)
        self.deliveries_key, self.recent_key, self.failed_key = (
            keys.outbox("deliveries"),
            keys.outbox("recent"),
            keys.outbox("failed"),
        )

    def add(self, delivery: Delivery) -> bool:
        """Keep a new delivery; False if one with this id exists (the same event again)."""
        if not self.redis.hsetnx(self.deliveries_key, delivery.id, delivery.to_json()):
            return False
        self.redis.zadd(self.recent_key, {delivery.id: delivery.created_at})
        self._trim()
        return True

    def get(self, delivery_id: str) -> Delivery | None:
        raw = self.redis.hget(self.deliveries_key, delivery_id)
        return Delivery.from_json(raw) if raw else None

    def save(self, delivery: Delivery) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.deliveries_key, delivery.id, delivery.to_json())
            if delivery.state == FAILED:
                pipe.zadd(self.failed_key, {delivery.id: delivery.finished_at or self.clock()})
            else:
                pipe.zrem(self.failed_key, delivery.id)
            pipe.execute()

    def record_attempt(
        self,
        delivery: Delivery,
        state: str,
        status: int | None,
        error: str | None,
        next_at: float | None = None,
    ) -> Delivery:
        """One attempt's outcome: the state it leaves the delivery in, kept with its history."""
        now = self.clock()
        delivery.attempts += 1
        delivery.state, delivery.last_status, delivery.last_error = state, status, error
        delivery.next_at = next_at
        delivery.finished_at = now if state != PENDING else None
        delivery.history = (delivery.history + [[round(now, 3), status, error]])[-20:]
        self.save(delivery)
        return delivery

    def reopen(self, delivery_id: str) -> Delivery | None:
        """A failed (or delivered) delivery made pending again, attempts from zero, same id."""
        delivery = self.get(delivery_id)
        if delivery is None:
            return None
        delivery.state, delivery.attempts, delivery.finished_at = PENDING, 0, None
        delivery.next_at = self.clock()
        self.save(delivery)
        return delivery

    def failed(self, limit: int = 100) -> list[Delivery]:
        return self._load(self.redis.zrevrange(self.failed_key, 0, limit - 1))

    def recent(self, limit: int = 100) -> list[Delivery]:
        return self._load(self.redis.zrevrange(self.recent_key, 0, limit - 1))

    def counts(self) -> dict[str, int]:
        """Deliveries per state among the kept ones (pending, delivered, failed)."""
        found = {PENDING: 0, DELIVERED: 0, FAILED: 0}
        for _, raw in self.redis.hscan_iter(self.deliveries_key, count=1000):
            found[json.loads(raw)["state"]] += 1
        return found

    def _load(self, ids) -> list[Delivery]:
        if not ids:
            return []
        return [
            Delivery.from_json(raw) for raw in self.redis.hmget(self.deliveries_key, ids) if raw
        ]

    def _trim(self) -> None:
        excess = self.redis.zcard(self.recent_key) - KEEP_RECENT
        if excess <= 0:
            return
        for delivery in self._load(self.redis.zrange(self.recent_key, 0, excess - 1)):
            if delivery.state == DELIVERED:
                with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hdel(self.deliveries_key, delivery.id)
                    pipe.zrem(self.recent_key, delivery.id)
                    pipe.execute()
