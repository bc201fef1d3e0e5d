"""Lost workers against a real Redis: beats, holds, the takeover, the lease, the sweep.

A worker is *lost* when its beat key has expired; here the test deletes the
key (what the expiry does) instead of waiting for it, so nothing depends on
timing. The broker side reads messages as kombu's Redis transport wrote them
(published by a real Celery app under the test's own key prefix).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from celery import Celery

import queues
from state.credentials import Credential, CredentialStore
from state.delayed import DelayedSet
from state.liveness import Liveness
from state.progress import SyncProgress
from state.store import SyncStore
from sync.broker_ledger import RedisBrokerLedger, read_message
from sync.heartbeat import WorkerBeat, holder_id
from sync.lost_workers import LostWorkerSweep, every
from tests.conftest import ManualClock

pytestmark = pytest.mark.cluster

KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1kby1ub3QtdXNlLSE="
BROKER = "redis://x"
PRIORITY = queues.priority_for("webhook", BROKER)


def page(sync_id: str, cursor: str, tag: str = "") -> dict:
    return {"task": "github.page", "args": [sync_id, cursor], "queue": "normal", "tag": tag}


def lose(liveness: Liveness, holder: str) -> None:
    """What the beat key's expiry does (WORKER_LOST_SECONDS after the last beat)."""
    liveness.redis.delete(liveness.keys.beat(holder))


@pytest.fixture
def world(redis_client, key_prefix):
    clock = ManualClock()
    settings = SimpleNamespace(
        key_prefix=key_prefix,
        provider_regions={},
        worker_lost_seconds=5.0,
        scheduler_lease_seconds=5.0,
    )
    svc = SimpleNamespace(
        settings=settings,
        redis=redis_client,
        store=SyncStore(redis_client, key_prefix),
        credentials=CredentialStore(redis_client, key_prefix, (KEY,)),
        progress=SyncProgress(redis_client, key_prefix),
        delayed=DelayedSet(redis_client, key_prefix, clock=clock),
    )
    sent = []

    def sweeper(holder="sched-a", ledger=None, send=None):
        return LostWorkerSweep(
            svc, send or (lambda *m: sent.append(m)), BROKER, holder, ledger=ledger, clock=clock
        )

    return SimpleNamespace(
        svc=svc,
        clock=clock,
        sent=sent,
        liveness=Liveness(redis_client, key_prefix),
        sweeper=sweeper,
        prefix=key_prefix,
    )


def begin(world, user="u-1") -> str:
    world.svc.credentials.save("github", user, Credential("octo", "tok-secret"))
    return world.svc.store.begin_sync(
        user_id=user,
        provider="github",
        account_id="octo",
        queue="normal",
        trigger="webhook",
        force=True,
        freshness_s=900,
        stale_s=3600,
    ).sync_id


# -- liveness ---------------------------------------------------------------------------
def test_a_worker_is_lost_once_its_beat_is_gone_and_its_pages_go_to_one_taker(world):
    live = world.liveness
    live.beat("w1", {"node": "whale@h"}, lost_s=60)
    live.beat("w2", {"node": "whale@h"}, lost_s=60)
    live.hold("w1", "t1", page("s_1", "p1"))
    assert sorted(live.alive()) == ["w1", "w2"] and live.lost() == []
    assert live.take_over("w1") is None  # still beating: it keeps its pages
    lose(live, "w1")
    assert live.lost() == ["w1"]
    assert live.take_over("w1") == {"t1": page("s_1", "p1")}
    assert live.take_over("w1") is None  # handed out once
    assert live.lost() == [] and live.held("w1") == {}


def test_a_beat_really_expires_on_redis_clock(world):
    live = world.liveness
    live.beat("w1", {}, lost_s=0.05)
    import time

    time.sleep(0.2)  # the expiry itself is the mechanism under test here
    assert live.lost() == ["w1"]


def test_a_lost_worker_that_beats_again_keeps_what_it_holds_since(world):
    live = world.liveness
    live.beat("w1", {}, lost_s=60)
    live.hold("w1", "t1", page("s_1", "p1"))
    lose(live, "w1")
    assert live.take_over("w1") == {"t1": page("s_1", "p1")}
    live.beat("w1", {}, lost_s=60)  # the partition healed
    live.hold("w1", "t2", page("s_1", "p2"), release=["t1"])
    assert live.lost() == [] and live.held("w1") == {"t2": page("s_1", "p2")}


def test_holder_ids_are_unique_per_process_start_even_for_one_node_name():
    ids = {holder_id("whale@same-host") for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("whale@same-host:") for i in ids)


def test_one_lease_holder_at_a_time_and_the_other_takes_it_when_it_goes(world):
    live = world.liveness
    assert live.lease("sweep", "a", 60)
    assert not live.lease("sweep", "b", 60)
    assert live.lease("sweep", "a", 60)  # renewed
    world.svc.redis.delete(live.keys.lease("sweep"))  # a's host lost: the lease expires
    assert live.lease("sweep", "b", 60) and live.lease_holder("sweep") == "b"
    live.give_up("sweep", "a")  # not a's to give up
    assert live.lease_holder("sweep") == "b"
    live.give_up("sweep", "b")
    assert live.lease_holder("sweep") is None


def test_a_worker_lets_go_of_finished_tasks_with_its_next_hold_or_beat(world):
    beat = WorkerBeat(world.liveness, "w1", beat_s=1, lost_s=60, info={})
    beat.beat_once()
    beat.hold("t1", page("s_1", "p1"))
    beat.release("t1")
    assert set(world.liveness.held("w1")) == {"t1"}  # deferred: no round trip of its own
    beat.hold("t2", page("s_1", "p2"))
    assert set(world.liveness.held("w1")) == {"t2"}
    beat.release("t2")
    beat.beat_once()
    assert world.liveness.held("w1") == {}
    beat.stop()
    assert world.liveness.lost() == ["w1"]  # a clean stop: handed on at the next sweep


# -- the sweep ----------------------------------------------------------------------------
def test_the_pages_a_lost_worker_held_are_sent_again_if_still_pending(world):
    sync_id = begin(world)
    store, live = world.svc.store, world.liveness
    store.add_pending(sync_id, "", ["p1", "p2", "p3"])
    live.beat("w1", {}, lost_s=60)
    for i, cursor in enumerate(("p1", "p2", "p3")):
        live.hold("w1", f"t{i}", page(sync_id, cursor))
    store.complete_page(sync_id, "p1", [("1", "a")])  # stored before the host went
    assert world.sweeper().sweep().pages_sent == 0  # alive: nothing to do
    lose(live, "w1")
    report = world.sweeper().sweep()
    assert report.lost == ["w1"] and report.pages_sent == 2
    assert sorted(world.sent) == [
        ("github.page", [sync_id, c], "normal", PRIORITY) for c in ("p2", "p3")
    ]
    assert store.get_sync(sync_id)["handed_on"] == "2"
    assert world.sweeper().sweep().pages_sent == 0  # once


def test_a_lost_round_one_a_lost_finalization_and_a_finished_sync(world):
    live = world.liveness
    store = world.svc.store
    fresh, finalizing, over = begin(world, "u-1"), begin(world, "u-2"), begin(world, "u-3")
    store.add_pending(finalizing, "", ["p1"])
    assert store.complete_page(finalizing, "p1", [("1", "a")]) == "finalize"
    store.fail(over, "cancelled", "cancelled", "by an operator")
    live.beat("w1", {}, lost_s=60)
    live.hold("w1", "t1", {"task": "github.profile", "args": [fresh]})
    live.hold("w1", "t2", page(finalizing, "p1"))
    live.hold("w1", "t3", page(over, "p9"))
    lose(live, "w1")
    assert world.sweeper().sweep().pages_sent == 2
    assert sorted(world.sent) == sorted(
        [
            ("github.profile", [fresh], "normal", PRIORITY),
            ("github.page", [finalizing, "p1"], "normal", PRIORITY),
        ]
    )


def test_only_the_lease_holder_sweeps_and_the_other_takes_over_when_it_is_lost(world):
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    a, b = world.sweeper("sched-a"), world.sweeper("sched-b")
    assert a.sweep().led and not b.sweep().led
    world.liveness.beat("w1", {}, lost_s=60)
    world.liveness.hold("w1", "t1", page(sync_id, "p1"))
    lose(world.liveness, "w1")
    world.svc.redis.delete(world.liveness.keys.lease("lost-workers"))  # sched-a's host lost
    report = b.sweep()
    assert report.led and report.pages_sent == 1
    assert not a.sweep().led  # back from its partition: b leads now


def test_every_runs_each_job_on_its_own_interval_and_a_failure_stays_its_own():
    clock = ManualClock()
    runs = []

    def broken():
        runs.append("broken")
        raise ConnectionError("redis away")

    run = every([(lambda: runs.append("stall"), 15.0), (broken, 1.0)], clock=clock)
    for _ in range(4):
        run()
        clock.now += 5
    assert runs == ["stall", "broken", "broken", "broken", "stall", "broken"]


# -- the Redis broker -----------------------------------------------------------------------
@pytest.fixture
def broker(world, redis_url):
    """A real Celery app publishing to the test's Redis under the test's own prefix."""
    from tests.conftest import CLUSTER

    if CLUSTER:
        pytest.skip("kombu's Redis transport cannot use a cluster")
    prefix = f"{world.prefix}:kombu:"
    app = Celery("lost-workers-test", broker=redis_url)
    app.conf.update(
        broker_transport_options={
            "global_keyprefix": prefix,
            "priority_steps": list(range(10)),
            "sep": ":",
        }
    )
    ledger = RedisBrokerLedger(world.svc.redis, ["normal"], key_prefix=prefix)

    def publish(sync_id, cursor):
        app.send_task("github.page", args=[sync_id, cursor], queue="normal", priority=PRIORITY)

    def take(sync_id, cursor) -> str:
        """What a worker's BRPOP and unacked bookkeeping do: queue → unacked; its tag."""
        for key in ledger.lists:
            for raw in world.svc.redis.lrange(key, 0, -1):
                message = read_message(raw)
                if (message.sync_id, message.cursor) == (sync_id, cursor):
                    world.svc.redis.lrem(key, 1, raw)
                    tag = json.loads(raw)["properties"]["delivery_tag"]
                    world.svc.redis.hset(
                        ledger.unacked_key, tag, json.dumps([json.loads(raw), "", "normal"])
                    )
                    world.svc.redis.zadd(ledger.unacked_index_key, {tag: 1.0})
                    return tag
        raise AssertionError("not queued")

    def send(name, args, queue, priority):
        world.sent.append((name, args, queue, priority))
        app.send_task(name, args=args, queue=queue, priority=priority)

    yield SimpleNamespace(
        ledger=ledger,
        publish=publish,
        take=take,
        sweeper=lambda: world.sweeper(ledger=ledger, send=send),
    )
    app.close()


def test_the_ledger_reads_what_kombu_wrote(world, broker):
    broker.publish("s_1", "p1")
    broker.publish("s_2", "p1")
    assert broker.ledger.pages_of(["s_1"]) == {("s_1", "p1")}
    tag = broker.take("s_1", "p1")
    assert broker.ledger.pages_of(["s_1"]) == set()
    assert broker.ledger.unacked() == {tag: read_message_of("s_1", "p1")}
    assert broker.ledger.forget([tag]) == 1 and broker.ledger.unacked() == {}


def read_message_of(sync_id, cursor):
    from sync.broker_ledger import BrokerMessage

    return BrokerMessage("github.page", sync_id, cursor)


def test_a_lost_workers_unacked_messages_are_dropped_once_handed_on(world, broker):
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    broker.publish(sync_id, "p1")
    tag = broker.take(sync_id, "p1")
    world.liveness.beat("w1", {}, lost_s=60)
    world.liveness.hold("w1", "t1", page(sync_id, "p1", tag=tag))
    lose(world.liveness, "w1")
    report = broker.sweeper().sweep()
    assert report.pages_sent == 1 and report.forgotten == 1
    assert broker.ledger.unacked() == {}


def test_an_unacked_message_nobody_holds_is_handed_on_or_dropped(world, broker):
    live_sync, over = begin(world, "u-1"), begin(world, "u-2")
    world.svc.store.add_pending(live_sync, "", ["p1"])
    world.svc.store.add_pending(over, "", ["p1"])
    for sync_id in (live_sync, over):
        broker.publish(sync_id, "p1")
        broker.take(sync_id, "p1")  # taken by a worker whose channel then broke
    world.svc.store.fail(over, "cancelled", "cancelled", "by an operator")
    sweeper = broker.sweeper()
    assert sweeper.sweep().forgotten == 0  # first sight
    world.clock.now += 5.0  # WORKER_LOST_SECONDS later, still nobody's
    report = sweeper.sweep()
    assert report.forgotten == 2 and report.pages_sent == 1
    assert world.sent == [("github.page", [live_sync, "p1"], "normal", PRIORITY)]
    assert broker.ledger.unacked() == {}


def test_an_unacked_message_a_live_worker_holds_is_left_alone(world, broker):
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    broker.publish(sync_id, "p1")
    tag = broker.take(sync_id, "p1")
    world.liveness.beat("w1", {}, lost_s=60)
    world.liveness.hold("w1", "t1", page(sync_id, "p1", tag=tag))
    sweeper = broker.sweeper()
    sweeper.sweep()
    world.clock.now += 60
    assert sweeper.sweep().forgotten == 0 and world.sent == []


def test_a_page_the_broker_lost_at_a_partition_is_found_and_sent_again(world, broker):
    """BRPOP popped p3 for the worker whose link had just been cut: the reply never
    arrived, so p3 is neither queued nor unacked. The lost worker's sync is checked."""
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1", "p2", "p3", "p4"])
    for cursor in ("p1", "p2", "p3", "p4"):
        broker.publish(sync_id, cursor)
    tag = broker.take(sync_id, "p1")
    broker.ledger.forget([broker.take(sync_id, "p3")])  # p3: gone for good
    world.liveness.beat("w1", {}, lost_s=60)
    world.liveness.hold("w1", "t1", page(sync_id, "p1", tag=tag))
    lose(world.liveness, "w1")
    sweeper = broker.sweeper()
    first = sweeper.sweep()
    assert first.pages_sent == 1 and first.found_missing == 0  # p1 at once; p3 suspected
    world.clock.now += 1.0
    second = sweeper.sweep()
    assert second.found_missing == 1
    assert sorted(world.sent) == [
        ("github.page", [sync_id, c], "normal", PRIORITY) for c in ("p1", "p3")
    ]
    for _ in range(3):
        world.clock.now += 1.0
        assert sweeper.sweep().found_missing == 0  # both are queued again: found once


def test_while_the_broker_is_unreachable_the_holds_wait_for_the_next_sweep(world):
    sync_id = begin(world)
    world.svc.store.add_pending(sync_id, "", ["p1"])
    live = world.liveness
    live.beat("w1", {}, lost_s=60)
    live.hold("w1", "t1", page(sync_id, "p1"))
    lose(live, "w1")
    down = LostWorkerSweep(
        world.svc,
        lambda *m: world.sent.append(m),
        BROKER,
        "sched-a",
        clock=world.clock,
        broker_check=lambda: (_ for _ in ()).throw(ConnectionError("broker away")),
    )
    assert down.sweep().pages_sent == 0 and live.lost() == ["w1"]

    def failing_send(*message):
        raise ConnectionError("the broker went away mid-sweep")

    with pytest.raises(ConnectionError):
        world.sweeper(send=failing_send).sweep()
    assert live.lost() == ["w1"] and set(live.held("w1")) == {"t1"}  # given back
    assert world.sweeper().sweep().pages_sent == 1  # the broker is back


def test_a_lost_schedulers_claimed_entries_are_due_again_at_once(world):
    """Its host went between claim and release: the other scheduler's sweep makes them
    due again once its beat expired, not when the claim's 30 s lease runs out."""
    delayed = world.svc.delayed
    for i in (1, 2):
        delayed.park("github.page", [f"s_{i}", "p1"], {}, "normal", 0)
    (b_claimed,) = delayed.claim_due(limit=1, lease_s=30, claimer="sched-b")
    (a_claimed,) = delayed.claim_due(limit=1, lease_s=30, claimer="sched-a")
    world.liveness.beat("sched-b", {}, lost_s=60)
    lose(world.liveness, "sched-b")
    assert delayed.claim_due() == []  # both leased for 30 s
    report = world.sweeper("sched-a").sweep()
    assert report.parked_due == 1 and report.pages_sent == 0
    assert [p.id for p in delayed.claim_due()] == [b_claimed.id]  # a's stays a's
    delayed.release(b_claimed.id)
    assert delayed.due_again("sched-b") == 0


def test_the_scheduler_loop_names_itself_in_its_claims(world):
    from sync.scheduler import SchedulerLoop

    delayed = DelayedSet(world.svc.redis, world.prefix, clock=world.clock)
    entry = delayed.park("github.page", ["s_1", "p1"], {}, "normal", 0)
    sent = []
    loop = SchedulerLoop(delayed, sent.append, claimer="sched-a", clock=world.clock)
    assert loop.run_once() == (1, 0) and [p.id for p in sent] == [entry]
    assert world.svc.redis.hlen(delayed.claimed_by_key) == 0  # released: forgotten
