"""Which worker processes are alive, and which pages each one is working on, in Redis.

A worker host can vanish without a word: its link cut, its machine gone. Its
unacked messages then wait in the broker (the Redis transport's visibility
timeout, RabbitMQ's heartbeat timeout) and the stall sweep notices the sync
only after ``STALL_SECONDS``. So every worker process *beats*: a key that
expires ``lost_s`` after its last renewal. While a page task runs, the process
*holds* it: an entry under its holder id naming the task and its arguments.
The scheduler (``sync.lost_workers``) takes over the holds of a process whose
beat expired and sends those pages again at once.

Keys (one hash tag, so ``state/lua/take_over.lua`` stays in one Redis Cluster
slot; the lease is ``state/lua/leader.lua``; names in ``state.keys.LiveKeys``)::

    <prefix>:{live}:holders        ZSET  holder id -> when it first beat
    <prefix>:{live}:beat:<holder>  STR   JSON about the process; expires after lost_s
    <prefix>:{live}:held:<holder>  HASH  task id -> JSON {task, args, tag, queue, at}
    <prefix>:{live}:lease:<name>   STR   the holder of a lease (one sweeping scheduler)

Expiry is Redis' own clock, never a comparison of two hosts' clocks: a worker
whose clock is off by minutes beats just the same. A holder id is unique per
process start (``sync.heartbeat.holder_id``: node name, pid and a random part),
so two hosts with one host name, or a restarted process with the same pid,
never share one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from state.keys import Keys
from state.lua import LuaScript


class Liveness:
    def __init__(self, redis_client, key_prefix: str, clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.clock = clock
        self.keys = Keys(key_prefix).live()
        self._take_over = LuaScript(redis_client, "take_over")
        self._lease = LuaScript(redis_client, "leader")

    # -- the worker side ----------------------------------------------------------------
    def beat(self, holder: str, info: dict, lost_s: float) -> None:
        """Renew ``holder``'s heartbeat for ``lost_s`` seconds (registering it the first time)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.beat(holder), json.dumps(info), px=_ms(lost_s))
            pipe.zadd(self.keys.holders, {holder: self.clock()}, nx=True)
            pipe.execute()

    def hold(self, holder: str, task_id: str, entry: dict, release: Iterable[str] = ()) -> None:
        """``holder`` works on ``entry`` (task id ``task_id``); in the same round trip it
        lets go of the finished tasks ``release`` (``sync.heartbeat`` defers those)."""
        key = self.keys.held(holder)
        gone = list(release)
        with self.redis.pipeline(transaction=False) as pipe:
            if gone:
                pipe.hdel(key, *gone)
            pipe.hset(key, task_id, json.dumps(entry))
            pipe.execute()

    def let_go(self, holder: str, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if ids:
            self.redis.hdel(self.keys.held(holder), *ids)

    def stop(self, holder: str) -> None:
        """A clean shutdown: the beat ends now, so whatever is still held is sent again
        by the next sweep instead of after ``lost_s``."""
        self.redis.delete(self.keys.beat(holder))

    # -- the sweeping side ----------------------------------------------------------------
    def holders(self) -> list[str]:
        return [_text(h) for h in self.redis.zrange(self.keys.holders, 0, -1)]

    def alive(self) -> dict[str, dict]:
        """Every registered holder whose beat has not expired → what it said about itself."""
        holders = self.holders()
        if not holders:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for holder in holders:
                pipe.get(self.keys.beat(holder))
            infos = pipe.execute()
        return {h: json.loads(i) for h, i in zip(holders, infos) if i is not None}

    def workers(self) -> dict[str, dict]:
        """The live holders that are workers (schedulers beat too: ``role``)."""
        return {h: info for h, info in self.alive().items() if info.get("role") == "worker"}

    def lost(self) -> list[str]:
        """Registered holders whose beat expired (their pages are up for ``take_over``)."""
        holders = self.holders()
        if not holders:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for holder in holders:
                pipe.exists(self.keys.beat(holder))
            beating = pipe.execute()
        return [h for h, alive in zip(holders, beating) if not alive]

    def held(self, holder: str) -> dict[str, dict]:
        """What ``holder`` works on: task id → entry."""
        raw = self.redis.hgetall(self.keys.held(holder))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def take_over(self, holder: str) -> dict[str, dict] | None:
        """The pages a lost holder held (task id → entry), handed out once and forgotten;
        None if it beats again or another sweep took them first."""
        raw = self._take_over(
            keys={
                "holders": self.keys.holders,
                "beat": self.keys.beat(holder),
                "held": self.keys.held(holder),
            },
            args={"holder": holder},
        )
        if raw is None:
            return None
        return {_text(raw[i]): json.loads(raw[i + 1]) for i in range(0, len(raw), 2)}

    def give_back(self, holder: str, held: dict[str, dict]) -> None:
        """Undo a ``take_over`` whose pages could not be sent (the broker went away):
        the holder is lost again, with its pages, for the next sweep."""
        with self.redis.pipeline(transaction=True) as pipe:
            if held:
                pipe.hset(
                    self.keys.held(holder),
                    mapping={task_id: json.dumps(entry) for task_id, entry in held.items()},
                )
            pipe.zadd(self.keys.holders, {holder: self.clock()}, nx=True)
            pipe.execute()

    # -- leases ------------------------------------------------------------------------
    def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s``; False while another holds it."""
        return bool(
            self._lease(
                keys={"lease": self.keys.lease(name)},
                args={"holder": holder, "ttl_ms": _ms(ttl_s)},
            )
        )

    def give_up(self, name: str, holder: str) -> None:
        """Let the lease go now (a clean shutdown), if ``holder`` has it."""
        self._lease(keys={"lease": self.keys.lease(name)}, args={"holder": holder, "ttl_ms": 0})

    def lease_holder(self, name: str) -> str | None:
        raw = self.redis.get(self.keys.lease(name))
        return _text(raw) if raw is not None else None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
