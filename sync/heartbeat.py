"""A worker process beats into Redis and says which pages it works on (``state.liveness``).

Wired to Celery's signals by ``install`` (``service.celery_app``), so the
tasks know nothing of it:

- ``worker_init`` (the worker's main process, before its pool starts): the
  process gets its holder id, which forked pool processes inherit;
- ``worker_ready``: a daemon thread renews the beat every
  ``WORKER_BEAT_SECONDS``; the beat expires ``WORKER_LOST_SECONDS`` after the
  last renewal, on Redis' clock;
- ``task_prerun`` of a provider task (``<provider>.profile`` / ``.page``), in
  the process or thread that runs it: *hold* the page (task name, arguments,
  the broker's delivery tag) under the holder id;
- ``task_postrun``: the page is let go with the next hold or beat, in the
  same round trip (a finished page still held costs nothing: if its holder
  is lost, a page already stored is not sent again);
- ``worker_shutdown``: the beat ends, so a sweep hands on at once whatever a
  cold shutdown left running.

A hold that fails (Redis away) is logged and the task runs on: the stall sweep
still covers it. The scheduler's side is ``sync.lost_workers``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from celery import signals

from state.liveness import Liveness

log = logging.getLogger("netsync.heartbeat")

#: the tasks whose pages are held: round one and round two of every provider
HELD_TASK_SUFFIXES = (".profile", ".page")


def holder_id(node: str) -> str:
    """Unique per process start, even where host names (and so node names) repeat:
    network namespaces, containers with one image's host name, a reused pid."""
    return f"{node}:{os.getpid()}:{secrets.token_hex(4)}"


class WorkerBeat:
    """One worker's liveness: its holder id, the beat thread, its holds."""

    def __init__(self, liveness: Liveness, holder: str, beat_s: float, lost_s: float, info: dict):
        self.liveness = liveness
        self.holder = holder
        self.beat_s = beat_s
        self.lost_s = lost_s
        self.info = info
        self._released: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- holds, from the task's process or thread ----------------------------------------
    def hold(self, task_id: str, entry: dict) -> None:
        release = self._take_released()
        try:
            self.liveness.hold(self.holder, task_id, entry, release)
        except Exception as exc:  # noqa: BLE001 - Redis away: the task runs on, the stall sweep covers it
            self._give_back(release)
            log.warning("could not hold task=%s (%s)", entry.get("task"), type(exc).__name__)

    def release(self, task_id: str) -> None:
        with self._lock:
            self._released.append(task_id)

    def _take_released(self) -> list[str]:
        with self._lock:
            released, self._released = self._released, []
        return released

    def _give_back(self, released: list[str]) -> None:
        with self._lock:
            self._released[:0] = released

    # -- the beat, from the worker's main process -----------------------------------------
    def beat_once(self) -> None:
        release = self._take_released()
        try:
            self.liveness.beat(self.holder, self.info, self.lost_s)
            self.liveness.let_go(self.holder, release)
        except Exception as exc:  # noqa: BLE001 - Redis away: beat again next time
            self._give_back(release)
            log.warning("heartbeat failed (%s)", type(exc).__name__)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="netsync-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.beat_once()
            self._stop.wait(max(0.0, self.beat_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        try:
            self.liveness.stop(self.holder)
        except Exception as exc:  # noqa: BLE001 - Redis away: the beat expires by itself
            log.warning("could not end the heartbeat (%s)", type(exc).__name__)


#: this process's beat (inherited by forked pool processes); None outside workers
_current: WorkerBeat | None = None


def current() -> WorkerBeat | None:
    return _current


def install(celery_app) -> None:
    """Beat and hold for the workers of ``celery_app`` (the service's app)."""
    celery_app.netsync_heartbeat = True
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    signals.task_prerun.connect(_on_task_prerun, weak=False)
    signals.task_postrun.connect(_on_task_postrun, weak=False)


def _on_worker_init(sender=None, **_):
    global _current
    app = getattr(sender, "app", None)
    if not getattr(app, "netsync_heartbeat", False):
        return
    svc = app.netsync_services
    settings = svc.settings
    node = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    _current = WorkerBeat(
        Liveness(svc.redis, settings.key_prefix),
        holder_id(node),
        settings.worker_beat_seconds,
        settings.worker_lost_seconds,
        {
            "role": "worker",
            "node": node,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
        },
    )
    _current.beat_once()


def _on_worker_ready(**_):
    if _current is not None:
        _current.start()


def _on_worker_shutdown(**_):
    if _current is not None:
        _current.stop()


def _on_task_prerun(sender=None, task_id=None, task=None, args=None, **_):
    beat = _current
    if (
        beat is None
        or not task_id
        or not str(getattr(task, "name", "")).endswith(HELD_TASK_SUFFIXES)
    ):
        return
    request = task.request
    delivery = request.delivery_info or {}
    properties = request.properties or {}
    beat.hold(
        task_id,
        {
            "task": task.name,
            "args": list(args or ()),
            "queue": delivery.get("routing_key") or "",
            # kombu's Redis transport names the message in its unacked hash by this tag
            "tag": properties.get("delivery_tag") or "",
            "at": time.time(),
        },
    )


def _on_task_postrun(sender=None, task_id=None, task=None, **_):
    beat = _current
    if beat is not None and task_id and str(getattr(task, "name", "")).endswith(HELD_TASK_SUFFIXES):
        beat.release(task_id)
