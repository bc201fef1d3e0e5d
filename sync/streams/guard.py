"""What keeps a misbehaving stream from hurting the process: frame budgets, backoff, and
the one reconnect loop every channel runs."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp

#: what ends a connection without being a bug: the network, the peer, a timeout
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


class StreamCut(Exception):
    """The stream broke its budget (a flood, malformed frames): close it, count it, back off."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FrameGuard:
    """Counts one connection's frames per second and its malformed ones.

    More than ``max_per_second`` frames in a second, or more than
    ``max_malformed`` malformed frames on one connection, cuts it: a real
    channel that floods or speaks nonsense is closed, logged and counted, and
    reconnected after a backoff, never allowed to starve the other streams
    or crash the process.
    """

    def __init__(self, max_per_second: int, max_malformed: int = 20, clock=time.monotonic):
        self.max_per_second = max_per_second
        self.max_malformed = max_malformed
        self.clock = clock
        self.window = clock()
        self.in_window = 0
        self.malformed = 0

    def frame(self) -> None:
        now = self.clock()
        if now - self.window >= 1.0:
            self.window, self.in_window = now, 0
        self.in_window += 1
        if self.in_window > self.max_per_second:
            raise StreamCut("flood")

    def bad_frame(self) -> None:
        self.malformed += 1
        if self.malformed > self.max_malformed:
            raise StreamCut("malformed")


class Backoff:
    """Full-jitter exponential backoff between reconnects; reset once a connection works."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng=random.random):
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return ceiling * self.rng()

    def reset(self) -> None:
        self.attempt = 0


async def keep_reconnecting(
    channel,
    connect: Callable[[Backoff], Awaitable[None]],
    log: logging.Logger,
    describe: str,
    *,
    errors: tuple[type[BaseException], ...] = CONNECTION_ERRORS,
    interpret: Callable[[BaseException], tuple[str, float | None] | None] | None = None,
    level: int = logging.WARNING,
) -> None:
    """Run ``connect(backoff)`` for ever: each time it returns or fails (a ``StreamCut``
    or one of ``errors``) the channel is marked disconnected, the reason counted
    (``stream_disconnects``) and logged, and the next attempt waits. ``interpret``
    names a channel's own outcomes: ``(reason, delay)`` (delay None: the backoff's),
    or None for the default (the cut's reason, or the error's type)."""
    backoff = Backoff()
    while True:
        try:
            await connect(backoff)
            reason, delay = "closed", None
        except (StreamCut, *errors) as exc:
            named = interpret(exc) if interpret is not None else None
            if named is not None:
                reason, delay = named
            else:
                reason = exc.reason if isinstance(exc, StreamCut) else type(exc).__name__
                delay = None
        channel.connected.clear()
        if delay is None:
            delay = backoff.next_delay()
        channel.role.count("stream_disconnects", provider=channel.provider, reason=reason)
        log.log(level, "%s: disconnected (%s); again in %.1fs", describe, reason, delay)
        await asyncio.sleep(delay)
