"""Commands of several state objects in one round trip (a non-transactional pipeline).

A page task's Redis work is a few small independent steps (the sync's
snapshot, the breaker's verdict, a quota take; later the page's storage,
the counters, an adaptive bucket's lesson). Each step costs a round trip
when sent alone, and on a shared machine a round trip (a send, a context
switch to Redis and back) costs more than the step. A ``Batch`` collects
the steps and sends them together::

    batch = Batch(redis_client)
    snapshot = store.queue_snapshot(batch, sync_id, cursor)
    verdict = breaker.queue_peek(batch, "github")
    batch.execute()
    record, done, blob = snapshot.value

Nothing here is atomic: each step keeps whatever atomicity it had (one
command or one Lua script), and the steps may touch keys of different hash
tags (a non-transactional pipeline is allowed to). On Redis Cluster, redis-py's
cluster pipeline refuses ``EVALSHA``, so there a batch sends each command as it
is queued (``_SentAtOnce``): the same answers, one round trip per command.

A script is queued as ``EVALSHA`` (``state.lua.LuaScript.queue``); one the
server does not know (a restarted Redis) answers ``NOSCRIPT`` without running,
and is then sent again on its own with its text. A step marked
``best_effort`` (the counters) never fails its caller on a reply error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

_UNSET = object()


class Reply:
    """One step's answer, readable once its batch was executed."""

    __slots__ = ("_value", "_error")

    def __init__(self):
        self._value = _UNSET
        self._error: BaseException | None = None

    @property
    def value(self) -> Any:
        if self._error is not None:
            raise self._error
        if self._value is _UNSET:
            raise RuntimeError("the batch of this reply was not executed")
        return self._value


class _Step:
    __slots__ = ("count", "read", "retry", "best_effort", "reply")

    def __init__(self, count, read, retry, best_effort):
        self.count, self.read, self.retry, self.best_effort = count, read, retry, best_effort
        self.reply = Reply()


class _SentAtOnce:
    """A pipeline's interface that sends every command as it is queued.

    For Redis Cluster, whose client pipeline blocks ``EVALSHA``. A reply error is
    kept as that command's reply, as ``execute(raise_on_error=False)`` does; a
    connection error raises at once (nothing after it is sent).
    """

    def __init__(self, client):
        self._client = client
        self._replies: list = []

    def __len__(self) -> int:
        return len(self._replies)

    def __getattr__(self, command: str):
        method = getattr(self._client, command)

        def send(*args, **kwargs):
            try:
                self._replies.append(method(*args, **kwargs))
            except ResponseError as exc:
                self._replies.append(exc)
            return self

        return send

    def execute(self, raise_on_error: bool = True) -> list:
        return list(self._replies)

    def reset(self) -> None:
        self._replies = []


class Batch:
    """Steps queued by several state objects, sent in one round trip by ``execute``."""

    def __init__(self, redis_client):
        self.redis = redis_client
        self._pipe = (
            _SentAtOnce(redis_client)
            if isinstance(redis_client, RedisCluster)
            else redis_client.pipeline(transaction=False)
        )
        self._steps: list[_Step] = []
        self.executed = False

    def __len__(self) -> int:
        return len(self._steps)

    def add(
        self,
        queue: Callable[[Any], None],
        read: Callable[[list], Any] = list,
        retry: Callable[[], Any] | None = None,
        best_effort: bool = False,
    ) -> Reply:
        """Queue a step: ``queue(pipe)`` adds its commands; ``read(replies)`` makes its value.

        ``retry``: a script step's way to run alone when its ``EVALSHA`` found no
        script (its one reply is then ``retry()``'s answer).
        """
        if self.executed:
            raise RuntimeError("this batch was already executed")
        before = len(self._pipe)
        queue(self._pipe)
        step = _Step(len(self._pipe) - before, read, retry, best_effort)
        self._steps.append(step)
        return step.reply

    def execute(self) -> None:
        """Send every step in one round trip and fill their replies.

        A connection error raises (nothing is known about any step). A reply
        error raises too, once every step's reply is filled in (the first
        one; each step's ``value`` raises its own); a best-effort step's is dropped.
        """
        if self.executed:
            raise RuntimeError("this batch was already executed")
        self.executed = True
        if not self._steps:
            return
        try:
            replies = self._pipe.execute(raise_on_error=False)
        finally:
            self._pipe.reset()
        at = 0
        for step in self._steps:
            own = replies[at : at + step.count]
            at += step.count
            try:
                if step.retry is not None and own and isinstance(own[0], NoScriptError):
                    own = [step.retry()]  # the script did not run: run it now, with its text
                error = next((r for r in own if isinstance(r, Exception)), None)
                if error is not None:
                    raise error
                step.reply._value = step.read(own)
            except Exception as exc:  # noqa: BLE001 - handed to whoever reads the reply
                if step.best_effort:
                    step.reply._value = None
                else:
                    step.reply._error = exc
        first_error = next((s.reply._error for s in self._steps if s.reply._error), None)
        if first_error is not None:
            raise first_error
