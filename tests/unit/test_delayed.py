"""DelayedSet and SchedulerLoop against a real Redis (embedded, or REDIS_URL db 3)."""

from __future__ import annotations

import threading
import uuid

import pytest

from state.delayed import DelayedSet
from sync.scheduler import SchedulerLoop, run_scheduler
from tests.conftest import redis_connect

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

T0 = 1_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def delayed(redis_url, clock):
    client = redis_connect(redis_url)
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    yield DelayedSet(client, prefix, clock=clock)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_park_claim_release(delayed, clock):
    entry = delayed.park(
        "providers.github.page",
        ["sync-1", 3],
        {"cursor": "abc"},
        "whale",
        delay_s=5,
        priority=3,
        reason="quota github token",
    )
    assert delayed.size() == 1 and delayed.next_due() == pytest.approx(T0 + 5)
    assert delayed.claim_due() == []  # not due yet
    clock.now = T0 + 5
    [parked] = delayed.claim_due()
    assert (parked.id, parked.task_name, parked.args, parked.kwargs) == (
        entry,
        "providers.github.page",
        ["sync-1", 3],
        {"cursor": "abc"},
    )
    assert (parked.queue, parked.priority, parked.reason, parked.claims) == (
        "whale",
        3,
        "quota github token",
        1,
    )
    assert parked.due_at == pytest.approx(T0 + 5) and parked.parked_at == pytest.approx(T0)
    assert delayed.release(entry) is True
    assert delayed.release(entry) is False
    assert delayed.size() == 0 and delayed.next_due() is None


def test_claims_come_in_due_order_and_respect_the_limit(delayed, clock):
    ids = {delay: delayed.park("t", [delay], {}, "normal", delay_s=delay) for delay in (3, 1, 2, 9)}
    clock.now = T0 + 5
    first = delayed.claim_due(limit=2)
    second = delayed.claim_due(limit=10)
    assert [p.id for p in first + second] == [ids[1], ids[2], ids[3]]


def test_a_claim_is_leased_and_comes_back_if_never_released(delayed, clock):
    entry = delayed.park("t", [], {}, "normal", delay_s=0)
    assert [p.id for p in delayed.claim_due(lease_s=30)] == [entry]
    clock.now = T0 + 29
    assert delayed.claim_due() == []  # another scheduler cannot take it
    clock.now = T0 + 31  # the claimer died: the entry is due again
    [again] = delayed.claim_due(lease_s=30)
    assert (again.id, again.claims) == (entry, 2)


def test_two_claimers_never_get_the_same_entry(delayed):
    ids = {delayed.park("t", [i], {}, "normal", delay_s=0) for i in range(500)}
    got: list[list[str]] = [[] for _ in range(4)]

    def claimer(mine: list[str]) -> None:
        while batch := delayed.claim_due(limit=7, lease_s=300):
            mine.extend(p.id for p in batch)

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [entry for mine in got for entry in mine]
    assert len(everything) == len(set(everything)) == 500 and set(everything) == ids


@pytest.mark.parametrize(
    "kwargs", [{"access_token": "x"}, {"when": object()}, {"ratio": float("nan")}]
)
def test_only_primitives_and_no_credentials(delayed, kwargs):
    with pytest.raises((ValueError, TypeError)):
        delayed.park("t", [], kwargs, "normal", delay_s=1)
    assert delayed.size() == 0


def test_scheduler_round_sends_due_entries_and_keeps_failed_ones(delayed, clock):
    sent = []
    ok = delayed.park("t.ok", [1], {}, "normal", delay_s=0)
    bad = delayed.park("t.bad", [2], {}, "normal", delay_s=0)
    delayed.park("t.later", [3], {}, "normal", delay_s=60)

    def send(parked):
        if parked.task_name == "t.bad":
            raise ConnectionError("broker away")
        sent.append(parked.id)

    loop = SchedulerLoop(delayed, send, lease_s=10, clock=clock)
    assert loop.run_once() == (1, 1)
    assert sent == [ok] and delayed.size() == 2
    clock.now = T0 + 11  # the failed one's lease ran out: it is tried again
    assert [p.id for p in delayed.claim_due()] == [bad]
    assert loop.idle_wait() == pytest.approx(0.2)


def test_run_scheduler_stops_on_the_event(redis_url):
    client = redis_connect(redis_url)
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    delayed, sent, stop = DelayedSet(client, prefix), [], threading.Event()
    for i in range(5):
        delayed.park("t", [i], {}, "normal", delay_s=0.1 * i)

    def send(parked):
        sent.append(parked.args[0])
        if len(sent) == 5:
            stop.set()

    thread = threading.Thread(target=run_scheduler, args=(delayed, send, stop))
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and sorted(sent) == [0, 1, 2, 3, 4]
    assert delayed.size() == 0
