"""What keeps a misbehaving stream from hurting the process: frame budgets and backoff."""

from __future__ import annotations

import random
import time


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
