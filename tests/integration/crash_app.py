"""The service's Celery app with a worker that dies in a finalization, once, where a
test asks: SIGKILL (no clean-up, as the OOM killer or a lost host) just before the
PostgreSQL transaction (``before_finalize``) or just after its commit, before the
Redis record goes final (``after_commit``).

A test arms a point for one of its users by creating
``<NETSYNC_VAR_DIR>/crash-<point>-<user_id>``; the worker removes the file as it
dies, so the redelivered task gets through. Used by test_networks_graph only.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from service.make_celery import celery_app  # noqa: F401 - the app the worker runs
from state.networks import NetworkStore

MARKERS = Path(os.environ["NETSYNC_VAR_DIR"])
_finalize = NetworkStore.finalize


def die_if_armed(point: str, user_id: str) -> None:
    try:
        (MARKERS / f"crash-{point}-{user_id}").unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def finalize_or_die(self, *, user_id: str, **fields):
    die_if_armed("before_finalize", user_id)
    result = _finalize(self, user_id=user_id, **fields)
    die_if_armed("after_commit", user_id)
    return result


NetworkStore.finalize = finalize_or_die
