"""Worker hosts cut off and lost, each worker in a network namespace of its own.

Redis, the broker, PostgreSQL and the simulator are on the services host; two
whale-capable workers on hosts ``w1`` and ``w2``; the web app and the scheduler
on hosts of their own. The stall sweep and the broker's redelivery are out of
reach (an hour), so whatever brings a lost page back is the lost-worker sweep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from devtools.devstack import ROOT
from state.liveness import Liveness
from state.store import ACTIVE
from sync.broker_ledger import ledger_for
from tests.hosts.helpers import (
    SIZE,
    assert_exact,
    extra_calls,
    host_stack,
    pages_of,
    record_figure,
    seed_previous_network,
    wait_pages,
)
from tests.integration.conftest import Stack, new_user
from tests.integration.test_rabbitmq import AMQP_URL, rabbitmq_reachable

BROKERS = [
    "redis",
    pytest.param(
        "amqp",
        marks=pytest.mark.skipif(
            not rabbitmq_reachable(), reason=f"RabbitMQ not reachable at {AMQP_URL}"
        ),
    ),
]


@pytest.mark.parametrize("seconds", [8, 20])
def test_a_worker_cut_off_then_healed_does_no_harm(network, tmp_path, seconds):
    """w1 loses Redis, the broker, PostgreSQL and the provider mid-sync. Its pages are
    handed on once its beat expires (5 s) and w2 finishes the sync during the
    partition; when the link heals, w1 beats again and its late results are no-ops:
    still exact, each feed entry once. Cut for 8 s, w1's Redis calls of the moment
    outlast the partition (10 s socket timeout): they go through late (a page stored
    again is ``duplicate``, one of a finished sync ``inactive``). Cut for 20 s, they
    time out first and their messages are requeued, to find their pages stored."""
    dev = host_stack(network, tmp_path)
    with dev:
        stack = Stack(dev)
        live = Liveness(dev.redis_client(), "netsync")
        account = stack.add_account("github", SIZE)
        user = new_user()
        diff = seed_previous_network(dev, user, stack.truth("github", account["id"]))
        (sync,) = stack.login(user, account).json()["syncs"]
        before = wait_pages(stack, sync["sync_id"], pages_of(SIZE) // 2)
        (w1,) = [
            h
            for h, info in live.workers().items()
            if info["node"].startswith(dev.node_names["w1"] + "@")
        ]
        network.cut("w1")
        cut = time.monotonic()
        final_at = None
        while time.monotonic() - cut < seconds:  # the partition itself: the fault
            if final_at is None and stack.sync(sync["sync_id"])["status"] not in ACTIVE:
                final_at = time.monotonic()
            time.sleep(0.2)
        network.heal("w1")
        healed = time.monotonic()
        record = assert_exact(stack, user, account, sync["sync_id"], diff)
        assert before["status"] == "running"
        assert not record.get("recoveries"), record  # not the stall sweep
        # w1 was not restarted: it beats again, under the same id, and its late tasks
        # end (it holds nothing any more); then the network is still the truth
        dev.wait_until(lambda: w1 in live.workers(), 60, "w1 beating again")
        back = time.monotonic()
        dev.wait_until(lambda: not live.held(w1), 60, "w1's late tasks ending")
        assert_exact(stack, user, account, sync["sync_id"], diff)
        assert all(proc.poll() is None for proc in dev.processes.values())
        record_figure(
            f"partition-{seconds}s",
            broker="redis",
            cut_at_page=before["pages_fetched"],
            handed_on=int(record.get("handed_on") or 0),
            extra_provider_calls=extra_calls(stack, account),
            seconds_cut_to_final=round(final_at - cut, 1) if final_at else None,
            seconds_heal_to_worker_back=round(back - healed, 1),
        )


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_host_lost_for_good_its_pages_are_done_by_another(network, tmp_path, broker):
    """w1's link is cut at 75 % of the pages and never healed (its processes run on,
    unreachable, as a lost host's would). Nothing closes a connection, so the broker
    keeps w1's unacked messages; the sync finishes exact through w2, because the
    scheduler saw w1's beat stop."""
    # on Redis both workers get one node name, ``whale@<host>``, as one Procfile line on
    # two hosts of one host name would (RabbitMQ refuses the second one's control queue)
    dev = host_stack(
        network, tmp_path, broker=broker, node_name="whale" if broker == "redis" else None
    )
    with dev:
        stack = Stack(dev)
        live = Liveness(dev.redis_client(), "netsync")
        assert len(live.workers()) == 2  # two holders, whatever their node names
        account = stack.add_account("github", SIZE)
        user = new_user()
        diff = seed_previous_network(dev, user, stack.truth("github", account["id"]))
        began = time.monotonic()
        (sync,) = stack.login(user, account).json()["syncs"]
        before = wait_pages(stack, sync["sync_id"], pages_of(SIZE) * 3 // 4)
        network.cut("w1")
        cut = time.monotonic()
        record = assert_exact(stack, user, account, sync["sync_id"], diff)
        done = time.monotonic()
        assert not record.get("recoveries"), record  # not the stall sweep
        assert int(record.get("handed_on") or 0) >= 1, record  # the heartbeat's work
        assert len(live.workers()) == 1  # w1 is gone from the registry, w2 beats
        # the time the rest of the work needed of w2 alone: its pace before the cut
        # (it did about half of the pages so far)
        remaining = pages_of(SIZE) - before["pages_fetched"]
        pace = (before["pages_fetched"] / 2) / (cut - began)
        record_figure(
            "worker-host-lost",
            broker=broker,
            cut_at_page=before["pages_fetched"],
            handed_on=int(record.get("handed_on") or 0),
            extra_provider_calls=extra_calls(stack, account),
            seconds_cut_to_final=round(done - cut, 1),
            remaining_work_seconds=round(remaining / pace, 1),
            loss_overhead_seconds=round((done - cut) - remaining / pace, 1),
        )
        dev.kill("w1")  # the lost host's processes, for the teardown


@pytest.mark.parametrize("broker", BROKERS)
def test_a_message_the_broker_lost_at_a_partition_is_found(network, tmp_path, broker):
    """A consumer on w1 has just been handed a page when w1's link goes: on Redis BRPOP
    popped it (neither queued nor unacked any more), on RabbitMQ it is unacked on a
    connection now dead. No worker holds it, so it is not among w1's holds; the
    scheduler finds it missing from the broker for the syncs w1 held, and sends it."""
    dev = host_stack(network, tmp_path, broker=broker)
    with dev:
        stack = Stack(dev)
        account = stack.add_account("github", SIZE)
        user = new_user()
        (sync,) = stack.login(user, account).json()["syncs"]
        wait_pages(stack, sync["sync_id"], 10)
        rogue = subprocess.Popen(
            network.exec_prefix("w1")
            + [sys.executable, "-m", "tests.hosts.rogue", dev.broker_url]
            + [dev.broker_queue(q) for q in ("whale", "normal")],
            cwd=ROOT,
            env=dev.process_env("w1"),
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            took = rogue.stdout.readline().decode().split()
            assert took[:3] == ["took", "github.page", sync["sync_id"]], took
            network.cut("w1")
            cut = time.monotonic()
            record = assert_exact(stack, user, account, sync["sync_id"])
            done = time.monotonic()
        finally:
            os.killpg(rogue.pid, signal.SIGKILL)
            rogue.wait()
        assert int(record.get("found_missing") or 0) >= 1, record  # the rogue's page
        assert not record.get("recoveries"), record
        if broker == "redis":
            # nothing of the finished sync is left unacked in the broker
            ledger = ledger_for(dev.broker_url, {}, ["whale", "normal"])
            assert not [m for m in ledger.unacked().values() if m.sync_id == sync["sync_id"]]
        record_figure(
            "broker-lost-message",
            broker=broker,
            found_missing=int(record.get("found_missing") or 0),
            handed_on=int(record.get("handed_on") or 0),
            extra_provider_calls=extra_calls(stack, account),
            seconds_cut_to_final=round(done - cut, 1),
        )
        dev.kill("w1")
