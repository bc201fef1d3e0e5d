"""The stall sweep against a real Redis, with a clock the test moves."""

from __future__ import annotations

from types import SimpleNamespace

import kombu.exceptions
import pytest

import queues
from state.credentials import Credential, CredentialStore
from state.metrics import Metrics
from state.progress import SyncProgress
from state.store import SyncStore
from sync.recovery import StallSweeper
from tests.conftest import CLUSTER, ManualClock

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1kby1ub3QtdXNlLSE="
STALL_S = 60.0
#: an interactive trigger on the Redis broker (queues.priority_for)
PRIORITY = queues.priority_for("webhook", "redis://x")


@pytest.fixture
def world(redis_client, key_prefix):
    clock = ManualClock()
    settings = SimpleNamespace(
        stall_seconds=STALL_S, max_recoveries=2, sweep_interval=15.0, provider_regions={}
    )
    svc = SimpleNamespace(
        settings=settings,
        store=SyncStore(redis_client, key_prefix, clock=clock),
        credentials=CredentialStore(redis_client, key_prefix, (KEY,)),
        progress=SyncProgress(redis_client, key_prefix, clock=clock),
        metrics=Metrics(redis_client, key_prefix),
    )
    sent, finals = [], []
    sweeper = StallSweeper(
        svc,
        lambda *message: sent.append(message),
        "redis://x",
        notify=lambda *final: finals.append(final),
        clock=clock,
    )
    return SimpleNamespace(svc=svc, clock=clock, sent=sent, finals=finals, sweeper=sweeper)


def begin(world, user="u-1", credential=True):
    svc = world.svc
    if credential:
        svc.credentials.save("github", user, Credential("octo", "tok-secret"))
    ticket = svc.store.begin_sync(
        user_id=user,
        provider="github",
        account_id="octo",
        queue="normal",
        trigger="webhook",
        force=True,
        freshness_s=900,
        stale_s=3600,
    )
    svc.progress.track(ticket.sync_id, world.clock())
    return ticket.sync_id


def sweep_after(world, seconds):
    world.clock.now += seconds
    return world.sweeper.sweep(use_lock=False)


def test_a_sync_that_stops_moving_gets_its_pending_pages_again(world):
    sync_id = begin(world)
    store = world.svc.store
    store.add_pending(sync_id, "", ["p1", "p2", "p3"])
    store.complete_page(sync_id, "p1", [("1", "a")])
    sweep_after(world, 1)  # first sight
    assert sweep_after(world, STALL_S - 2).recovered == []
    report = sweep_after(world, 2)
    assert report.recovered == [sync_id]
    assert sorted(world.sent) == [
        ("github.page", [sync_id, c], "normal", PRIORITY) for c in ("p2", "p3")
    ]
    assert store.get_sync(sync_id)["recoveries"] == "1"


def test_a_moving_sync_is_left_alone(world):
    sync_id = begin(world)
    store = world.svc.store
    store.add_pending(sync_id, "", [f"p{i}" for i in range(10)])
    for i in range(9):
        sweep_after(world, STALL_S / 2)
        store.complete_page(sync_id, f"p{i}", [(str(i), "h")])
    assert sweep_after(world, STALL_S / 2).recovered == []
    assert world.sent == []


def test_a_parked_page_is_waiting_not_stalled(world):
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    sweep_after(world, 0)
    world.svc.progress.parked_until(sync_id, world.clock() + 10 * STALL_S)
    assert sweep_after(world, 5 * STALL_S).recovered == []
    assert sweep_after(world, 6 * STALL_S).recovered == [sync_id]


def test_a_lost_round_one_is_sent_again(world):
    sync_id = begin(world)
    sweep_after(world, 0)
    sweep_after(world, STALL_S + 1)
    assert world.sent == [("github.profile", [sync_id], "normal", PRIORITY)]


def test_recoveries_without_progress_end_failed_with_the_reason(world):
    sync_id = begin(world)
    store = world.svc.store
    store.add_pending(sync_id, "", ["p1"])
    sweep_after(world, 0)
    for _ in range(2):
        assert sweep_after(world, STALL_S + 1).recovered == [sync_id]
    report = sweep_after(world, STALL_S + 1)
    assert report.failed == [sync_id]
    record = store.get_sync(sync_id)
    assert record["status"] == "failed" and record["error_kind"] == "stalled"
    assert world.finals == [(sync_id, "github")]
    assert world.svc.progress.active() == []


def test_progress_after_a_recovery_resets_the_count(world):
    sync_id = begin(world)
    store = world.svc.store
    store.add_pending(sync_id, "", ["p1", "p2", "p3"])
    sweep_after(world, 0)
    for cursor in ("p1", "p2"):
        assert sweep_after(world, STALL_S + 1).recovered == [sync_id]
        store.complete_page(sync_id, cursor, [])
        sweep_after(world, 1)  # sees the progress
    assert sweep_after(world, STALL_S + 1).recovered == [sync_id]


def test_no_credential_ends_failed(world):
    sync_id = begin(world, credential=False)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    sweep_after(world, 0)
    report = sweep_after(world, STALL_S + 1)
    assert report.failed == [sync_id] and world.sent == []
    assert world.svc.store.get_sync(sync_id)["error_kind"] == "no_credentials"


def test_final_syncs_leave_the_index(world):
    sync_id = begin(world)
    store = world.svc.store
    store.add_pending(sync_id, "", ["p1"])
    assert store.complete_page(sync_id, "p1", []) == "finalize"
    assert store.finish(sync_id, "succeeded", 0, 0, 0, True)  # as sync.finalize does
    sweep_after(world, 0)
    assert world.svc.progress.active() == []


def test_one_sweep_at_a_time(world):
    assert world.sweeper.sweep().skipped is False
    assert world.sweeper.sweep().skipped is True


# -- the broker away ------------------------------------------------------------------
def test_nothing_is_sent_again_while_the_broker_is_unreachable(world):
    """A sweep that cannot reach the broker skips its round: no re-send, no recovery or
    delivery counted (the sync is not failed, no page is made a poison page); the
    first sweep after the broker is back re-sends the pages, once."""
    broker = SimpleNamespace(up=True, checks=0)

    def check():
        broker.checks += 1
        if not broker.up:
            raise kombu.exceptions.OperationalError("[Errno 111] Connection refused")

    world.sweeper.broker_check = check
    sync_id = begin(world)
    store, progress = world.svc.store, world.svc.progress
    store.add_pending(sync_id, "", ["p1", "p2"])
    sweep_after(world, 0)  # first sight
    broker.up = False
    for _ in range(3 * world.svc.settings.max_recoveries):
        report = sweep_after(world, STALL_S + 1)
        assert report.broker_unreachable == "OperationalError" and report.watched == 1
        assert "broker is unreachable" in report.summary()
    assert world.sent == [] and report.recovered == [] and report.failed == []
    record = store.get_sync(sync_id)
    assert record["status"] in ("queued", "running") and "recoveries" not in record
    broker.up = True
    report = sweep_after(world, STALL_S + 1)
    assert report.recovered == [sync_id] and not report.broker_unreachable
    assert sorted(world.sent) == [
        ("github.page", [sync_id, c], "normal", PRIORITY) for c in ("p1", "p2")
    ]
    # the skipped rounds counted no delivery: this re-send is each page's first
    assert progress.delivered_again(sync_id, "p1") == 2


def test_no_active_sync_no_broker_check(world):
    world.sweeper.broker_check = lambda: pytest.fail("the broker was checked for nothing")
    assert sweep_after(world, STALL_S).watched == 0


def test_the_celery_broker_check_fails_fast_on_a_refused_broker_and_passes_on_a_live_one(
    redis_url,
):
    from celery import Celery

    from sync.recovery import celery_broker_check

    refused = Celery("sweep-refused", broker="redis://127.0.0.1:9/0")  # discard port
    with pytest.raises(Exception) as raised:
        celery_broker_check(refused, timeout_s=1)()
    assert isinstance(raised.value, (OSError, kombu.exceptions.OperationalError))
    if CLUSTER:  # kombu's Redis transport cannot use a cluster (the broker is RabbitMQ there)
        return
    live = Celery("sweep-live", broker=redis_url)
    celery_broker_check(live, timeout_s=3)()  # no exception
