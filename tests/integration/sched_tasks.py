"""A Celery app for tests/integration/test_scheduler_process.py.

One task that counts its runs in Redis, on the test's Redis as broker with a
visibility timeout of 2 s (so a Celery-side delay longer than that would be
delivered again), all of kombu's keys under the test's own prefix.
"""

from __future__ import annotations

import os

import redis
from celery import Celery, signals

BROKER_URL = os.environ.get("SCHED_TEST_BROKER_URL", "redis://127.0.0.1:6379/3")
PREFIX = os.environ.get("SCHED_TEST_PREFIX", "sched-test")
RUNS_KEY = f"{PREFIX}:runs"
READY_KEY = f"{PREFIX}:worker-ready"

app = Celery("sched_tasks", broker=BROKER_URL)
app.conf.update(
    broker_transport_options={"visibility_timeout": 2, "global_keyprefix": f"{PREFIX}:kombu:"},
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
_redis = redis.Redis.from_url(BROKER_URL)


@app.task(name="sched_tasks.record")
def record(entry_key: str) -> None:
    """Count one run of ``entry_key`` (a set would hide duplicates; we want to see them)."""
    _redis.hincrby(RUNS_KEY, entry_key, 1)


@signals.worker_ready.connect
def _announce_ready(**_) -> None:
    _redis.set(READY_KEY, os.getpid())
