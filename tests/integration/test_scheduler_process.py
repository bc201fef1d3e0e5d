"""The scheduler as a real process, sending to a real Celery worker process.

Kill -9 mid-way loses nothing (a restart finishes the job, leases bring back
what a dead scheduler had claimed), and a wait longer than the broker's
visibility timeout runs exactly once, because it waits in our delayed set and
not in the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from state.delayed import DelayedSet

ROOT = Path(__file__).resolve().parents[2]
TASK = "sched_tasks.record"
LEASE_S = 3.0


@pytest.fixture
def sched_stack(redis_url, tmp_path):
    """Names, a client and a process starter; every process is stopped afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "SCHED_TEST_BROKER_URL": redis_url,
        "SCHED_TEST_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}-{len(processes)}.log", "w")  # noqa: SIM115 - the child process writes to it after we return
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(proc)
        return proc

    yield prefix, f"testq-{prefix}", redis_url, client, start
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    for log in sorted(tmp_path.glob("*.log")):  # shown by pytest only when the test failed
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_killed_scheduler_loses_nothing_and_long_waits_run_once(sched_stack):
    prefix, queue, redis_url, client, start = sched_stack
    runs = lambda: client.hgetall(f"{prefix}:runs")  # noqa: E731
    start(
        "worker",
        "celery",
        "-A",
        "tests.integration.sched_tasks",
        "worker",
        "--pool",
        "solo",
        "-Q",
        queue,
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    )
    scheduler_args = (
        "sync.scheduler",
        "--app",
        "tests.integration.sched_tasks:app",
        "--redis-url",
        redis_url,
        "--key-prefix",
        prefix,
        "--lease",
        str(LEASE_S),
        "--batch",
        "20",
    )
    delayed = DelayedSet(client, prefix)
    wait_for(lambda: client.exists(f"{prefix}:worker-ready"), 30, "the worker")

    # a scheduler that died between claim and send: the worst moment
    stranded = [delayed.park(TASK, [f"stranded-{i}"], {}, queue, delay_s=0) for i in range(10)]
    assert sorted(p.id for p in delayed.claim_due(limit=10, lease_s=LEASE_S)) == sorted(stranded)
    expected = {f"stranded-{i}" for i in range(10)} | {f"e-{i}" for i in range(200)} | {"late"}
    for i in range(200):
        delayed.park(TASK, [f"e-{i}"], {}, queue, delay_s=(i % 40) * 0.1, reason="test")
    # longer than the 2 s visibility timeout: Celery's own delay would redeliver this
    delayed.park(TASK, ["late"], {}, queue, delay_s=5.0)

    first = start("scheduler", *scheduler_args)
    wait_for(lambda: len(runs()) >= 60, 20, "the first scheduler to send part of the work")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(runs()) < len(expected), "killed too late to prove anything"

    second = start("scheduler", *scheduler_args)
    wait_for(lambda: expected <= set(runs()), 30, "every entry to run")
    wait_for(lambda: delayed.size() == 0, 10, "the delayed set to empty")
    ran_late = time.monotonic()

    # two visibility timeouts later, the long wait has still run only once
    time.sleep(max(0.0, ran_late + 4.5 - time.monotonic()))
    counts = runs()
    assert counts["late"] == "1"
    assert set(counts) == expected
    duplicates = {key: n for key, n in counts.items() if n != "1"}
    assert len(duplicates) <= 20 + 10, (
        duplicates
    )  # at most a claimed batch, re-sent after its lease

    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0  # clean exit on SIGTERM
