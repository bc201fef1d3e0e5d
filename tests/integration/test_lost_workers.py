"""A lost worker is noticed by its missing heartbeat, with real processes on one machine.

The stall sweep and the broker's own redelivery are pushed out of reach
(``STALL_SECONDS`` and the visibility timeout one hour), so a sync that
finishes did so because the scheduler saw the worker's beat stop and sent the
pages it held again. Across hosts (a link cut, a partition) the same is shown
by tests/hosts.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from state.liveness import Liveness
from state.store import SyncStore
from tests.integration.conftest import Stack, new_user
from tests.integration.test_faults import (
    BROKERS,
    IN_FLIGHT_LATENCY,
    fault_stack,
    wait_pages,
)
from tests.integration.test_rabbitmq import delete_amqp_queues

#: only the heartbeat can bring the pages back within the test's patience
LOST_ENV = {
    "STALL_SECONDS": "3600",
    "BROKER_VISIBILITY_TIMEOUT": "3600",
    "WORKER_BEAT_SECONDS": "0.5",
    "WORKER_LOST_SECONDS": "3",
}
PATIENCE_S = 120


@pytest.mark.parametrize("broker", BROKERS)
def test_a_killed_workers_pages_are_handed_on_by_its_missing_beat(tmp_path, broker):
    from devtools.devstack import WorkerSpec

    dev, queue_names = fault_stack(
        tmp_path, broker, pool="threads", scenario=IN_FLIGHT_LATENCY, env=LOST_ENV
    )
    dev.workers.append(
        WorkerSpec(",".join(queue_names), pool="threads", concurrency=8, name="second")
    )
    try:
        with dev:
            stack = Stack(dev)
            live = Liveness(redis.Redis.from_url(dev.redis_url), "netsync")
            account = stack.add_account("github", 10_000)
            user = new_user()
            (sync,) = stack.login(user, account).json()["syncs"]
            wait_pages(stack, sync["sync_id"], 10)
            assert len(live.workers()) == 2
            os.killpg(dev.processes["first"].pid, signal.SIGKILL)  # the worker and its pool
            dev.processes["first"].wait()
            record = stack.wait_final(sync["sync_id"], timeout=PATIENCE_S)
            assert record["status"] == "succeeded", record
            ids = stack.network_ids(user, "github")
            assert len(ids) == len(set(ids)) == 10_000
            assert set(ids) == stack.truth("github", account["id"])
            stored = SyncStore(redis.Redis.from_url(dev.redis_url), "netsync")
            final = stored.get_sync(sync["sync_id"])
            if broker == "redis":
                # the broker keeps the dead worker's messages for an hour: the beat's work
                # (RabbitMQ requeues them itself when a killed process' connection closes;
                # a host lost without a word is tests/hosts' case)
                assert int(final.get("handed_on") or 0) >= 1, final
            assert not final.get("recoveries"), final  # not the stall sweep's
            # the killed worker is taken over and forgotten; the other beats on
            deadline = time.monotonic() + 30
            while len(live.workers()) != 1 or live.lost():
                assert time.monotonic() < deadline, (live.workers(), live.lost())
                time.sleep(0.2)
    finally:
        if broker == "amqp":
            delete_amqp_queues(queue_names)
