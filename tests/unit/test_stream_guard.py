"""The streams role's guards (``sync.streams.guard``): a flooding or babbling stream is
cut; reconnects back off with full jitter."""

from __future__ import annotations

import pytest

from sync.streams.guard import Backoff, FrameGuard, StreamCut


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_more_frames_in_a_second_than_allowed_is_a_flood():
    clock = Clock()
    guard = FrameGuard(max_per_second=5, clock=clock)
    for _ in range(5):
        guard.frame()
    clock.now += 1.0  # a new second: the budget again
    for _ in range(5):
        guard.frame()
    with pytest.raises(StreamCut, match="flood"):
        guard.frame()


def test_too_many_malformed_frames_cut_the_stream():
    guard = FrameGuard(max_per_second=100, max_malformed=3)
    for _ in range(3):
        guard.bad_frame()
    with pytest.raises(StreamCut, match="malformed"):
        guard.bad_frame()


def test_backoff_is_full_jitter_under_a_growing_ceiling_and_resets():
    highest = Backoff(base=0.5, cap=4.0, rng=lambda: 1.0)
    assert [highest.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    lowest = Backoff(base=0.5, cap=4.0, rng=lambda: 0.0)
    assert lowest.next_delay() == 0.0  # full jitter: anywhere from 0 to the ceiling
    highest.reset()
    assert highest.next_delay() == 0.5
