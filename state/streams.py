"""What the ``streams`` role keeps in Redis: cursors, maps, membership, pending callbacks.

Every key is single-key (no script, no tag; names in ``state.keys``). A cursor
only ever records what was already applied in PostgreSQL, so after any crash
the channel is read again from at most there (the events' idempotency keys,
``stream_events``, make the overlap harmless).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from state.keys import Keys


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamState:
    def __init__(self, redis_client, key_prefix: str, clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.keys = Keys(key_prefix).streams()
        self.clock = clock

    # -- Jetstream --------------------------------------------------------------------
    def jetstream_cursor(self) -> int | None:
        raw = _text(self.redis.get(self.keys.jetstream_cursor))
        return int(raw) if raw and raw.isdigit() else None

    def save_jetstream_cursor(self, time_us: int) -> None:
        self.redis.set(self.keys.jetstream_cursor, str(int(time_us)))

    def remember_follow(self, follower: str, rkey: str, subject: str) -> None:
        """The follow record ``rkey`` of ``follower`` names ``subject`` (a delete won't)."""
        self.redis.hset(self.keys.follow_records(follower), rkey, subject)

    def follow_subject(self, follower: str, rkey: str) -> str | None:
        return _text(self.redis.hget(self.keys.follow_records(follower), rkey))

    # -- Mastodon ------------------------------------------------------------------------
    def mastodon_since(self, account: str) -> str | None:
        return _text(self.redis.hget(self.keys.mastodon_since, account))

    def save_mastodon_since(self, account: str, notification_id: str) -> None:
        self.redis.hset(self.keys.mastodon_since, account, notification_id)

    # -- X --------------------------------------------------------------------------------
    def x_last(self) -> float | None:
        raw = _text(self.redis.get(self.keys.x_last))
        return float(raw) if raw else None

    def save_x_last(self, moment: float) -> None:
        self.redis.set(self.keys.x_last, repr(moment))

    def x_subscriptions(self) -> dict[str, dict]:
        raw = self.redis.hgetall(self.keys.x_subscriptions)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def save_x_subscription(self, uid: str, entry: dict) -> None:
        self.redis.hset(self.keys.x_subscriptions, uid, json.dumps(entry))

    def drop_x_subscription(self, uid: str) -> None:
        self.redis.hdel(self.keys.x_subscriptions, uid)

    # -- membership (how many streams processes share the accounts) ---------------------
    def join(self, member: str, ttl_s: float) -> int:
        """Renew ``member`` for ``ttl_s``; how many members are alive now."""
        key, now = self.keys.members, self.clock()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {member: now + ttl_s})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            return int(pipe.execute()[-1])

    def leave(self, member: str) -> None:
        self.redis.zrem(self.keys.members, member)

    # -- the debounced network.changed callback ---------------------------------------------
    def note_changed(self, network: str, added: int, removed: int) -> None:
        key = self.keys.changed
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, f"{network}#added", added)
            pipe.hincrby(key, f"{network}#removed", removed)
            pipe.execute()

    def take_changed(self, network: str) -> tuple[int, int]:
        """The counts noted for ``network`` since the last take, and zero them."""
        key = self.keys.changed
        fields = (f"{network}#added", f"{network}#removed")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(key, *fields)
            pipe.hdel(key, *fields)
            values = pipe.execute()[0]
        return tuple(int(_text(v) or 0) for v in values)

    def pending_changed(self) -> list[str]:
        """Networks with counts not yet called back (``user|provider|relation``): a user's
        callback takes those of its networks; a new process those a dead one left."""
        fields = self.redis.hkeys(self.keys.changed)
        return sorted({_text(f).rsplit("#", 1)[0] for f in fields})
