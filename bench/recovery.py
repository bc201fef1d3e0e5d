"""Recovery benchmark: ``kill -9`` of the worker running a 30,000-follower sync.

Each run: a stack of its own (embedded Redis, the simulator, the web app, one
prefork worker × 2 processes, the scheduler) with the production defaults for
recovery (``STALL_SECONDS`` 60, ``SWEEP_INTERVAL_SECONDS`` 15,
``BROKER_VISIBILITY_TIMEOUT`` 300), a GitHub sync of 30,000 followers, the
worker and its pool killed with SIGKILL after 20 pages and a new worker
started at once. Figure: seconds from the kill to the sync's final status,
and whether the network equals the simulator's truth. Three runs per broker
(Redis; RabbitMQ where one is reachable), median reported, and one run without
the kill: the remaining work's own time from page 20 on (the recovery's cost is
the difference).

``python -m bench.recovery [redis|amqp …]`` writes bench/results/recovery.json.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import time
from pathlib import Path

from devtools.devstack import DevStack, WorkerSpec, temp_var_dir
from tests.integration.conftest import Stack, new_user
from tests.integration.test_faults import delete_amqp_queues
from tests.integration.test_rabbitmq import AMQP_URL, rabbitmq_reachable

RESULTS = Path(__file__).resolve().parent / "results" / "recovery.json"
RUNS = 3
SIZE = 30_000


def one_run(broker: str, kill: bool = True) -> dict:
    env, queue_names = {"NETSYNC_ENV": "bench"}, "normal,whale,trickle"
    if broker == "amqp":
        region = "b" + secrets.token_hex(4)
        queue_names = ",".join(f"{region}.{c}" for c in ("normal", "whale", "trickle"))
        env.update({"CELERY_BROKER_URL": AMQP_URL, "PROVIDER_REGIONS": f"github:{region}"})
    dev = DevStack(
        var_dir=temp_var_dir("netsync-recovery-"),
        env=env,
        embedded_redis=True,
        workers=[WorkerSpec(queue_names, concurrency=2, name="first")],
    )
    try:
        with dev:
            stack = Stack(dev)
            account = stack.add_account("github", SIZE)
            user = new_user()
            (sync,) = stack.login(user, account).json()["syncs"]
            deadline = time.monotonic() + 120
            while stack.sync(sync["sync_id"])["pages_fetched"] < 20:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the sync did not start; see {dev.var_dir}")
                time.sleep(0.05)
            killed_at = time.monotonic()
            if kill:
                os.killpg(dev.processes["first"].pid, signal.SIGKILL)
                dev.processes["first"].wait()
                dev.start_worker(WorkerSpec(queue_names, concurrency=2, name="second"))
            record = stack.wait_final(sync["sync_id"], timeout=600)
            seconds = time.monotonic() - killed_at
            exact = set(stack.network_ids(user, "github")) == stack.truth("github", account["id"])
            return {
                "seconds": round(seconds, 1),
                "status": record["status"],
                "exact": exact,
                "pages_at_kill": 20,
            }
    finally:
        if broker == "amqp":
            delete_amqp_queues(queue_names.split(","))


def main(brokers: list[str] | None = None) -> dict:
    """Run the given brokers (default: Redis, and RabbitMQ where reachable); the
    results of brokers not run this time are kept from the last file."""
    brokers = brokers or ["redis"] + (["amqp"] if rabbitmq_reachable() else [])
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = {b: previous[b] for b in ("redis", "amqp") if b in previous}
    for broker in brokers:
        runs = [one_run(broker) for _ in range(RUNS)]
        # the same sync from page 20 on without the kill: the remaining work's own time
        baseline = one_run(broker, kill=False)
        median = statistics.median(r["seconds"] for r in runs)
        results[broker] = {
            "median_s": median,
            "remaining_work_s": baseline["seconds"],
            "recovery_overhead_s": round(median - baseline["seconds"], 1),
            "runs": runs,
        }
        print(
            f"recovery after kill -9 on {broker}: median {median} s "
            f"({[r['seconds'] for r in runs]}), of which the remaining work's own "
            f"{baseline['seconds']} s",
            flush=True,
        )
    if "amqp" not in results and not rabbitmq_reachable():
        results["amqp"] = {"skipped": f"RabbitMQ not reachable at {AMQP_URL}"}
    RESULTS.write_text(
        json.dumps(
            {
                "size": SIZE,
                "defaults": {
                    "STALL_SECONDS": 60,
                    "SWEEP_INTERVAL_SECONDS": 15,
                    "BROKER_VISIBILITY_TIMEOUT": 300,
                    "WORKER_BEAT_SECONDS": 1,
                    "WORKER_LOST_SECONDS": 5,
                    "BROKER_HEARTBEAT_SECONDS": 10,
                },
                **results,
            },
            indent=2,
        )
        + "\n"
    )
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
