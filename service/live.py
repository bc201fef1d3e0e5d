"""Following a sync live: ``GET /v1/syncs/<id>?wait=N`` and ``GET /v1/syncs/<id>/events``.

Serving model: the web role runs gunicorn's gevent worker (Procfile), so a
held connection is a greenlet waiting on a socket, not an OS thread; one
web process holds hundreds while still answering everything else.
Bounded anyway: at most ``LIVE_MAX_CONNECTIONS`` held per process (a
counter here); past it the answer is ``503`` with ``Retry-After``.

Changes are found by polling the sync's record (one ``HGETALL`` every
``POLL_S`` per held connection), not by pub/sub: the hot path (the page
scripts) stays untouched, no Redis configuration is needed (keyspace
notifications are off on most managed Redis), and the cost is bounded by
the cap (100 connections = 400 cheap reads/s at most).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from flask import Response, jsonify

from service.http_errors import ApiError
from state.store import ACTIVE

#: how often a held connection looks at the record
POLL_S = 0.25
MAX_WAIT_S = 30
#: an event stream ends after this long (EventSource reconnects by itself)
MAX_STREAM_S = 300
#: a comment line this often keeps proxies from closing an idle stream
KEEPALIVE_S = 15
#: what a refused client is told to wait
RETRY_AFTER_S = 5

#: the fields whose change is news to someone following a sync
WATCHED = (
    "status",
    "pages_fetched",
    "connections_fetched",
    "expected_total",
    "queue",
    "wait_reason",
    "wait_until",
)

View = Callable[[dict], dict]


class LiveSlots:
    """A per-process cap on held connections (gevent patches the lock: greenlet-safe)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.held -= 1


_slots: dict[int, LiveSlots] = {}


def slots_for(svc) -> LiveSlots:
    key = id(svc)
    if key not in _slots:
        _slots[key] = LiveSlots(svc.settings.live_max_connections)
    return _slots[key]


def _take_slot(svc) -> LiveSlots:
    slots = slots_for(svc)
    if not slots.take():
        raise ApiError(
            503,
            f"too many live connections on this web process (limit {slots.limit}); "
            "retry later or poll GET /v1/syncs/<id>",
            code="live_capacity",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return slots


def parse_wait(raw: str) -> int:
    whole, dot, fraction = raw.partition(".")
    if dot and fraction and not fraction.strip("0"):
        raw = whole  # "2.0": JSON Schema counts it an integer, as the document does
    if not raw.isascii() or not raw.isdigit() or len(raw) > 4:
        raise ApiError(400, "wait must be an integer number of seconds")
    wait = int(raw)
    if not 1 <= wait <= MAX_WAIT_S:
        raise ApiError(422, f"wait must be between 1 and {MAX_WAIT_S} seconds")
    return wait


def _watched(record: dict) -> tuple:
    return tuple(record.get(name) for name in WATCHED)


def wait_for_change(svc, record: dict, timeout_s: float) -> dict:
    """The record once a watched field changed or the sync vanished, or at ``timeout_s``."""
    seen, deadline = _watched(record), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        current = svc.store.get_sync(record["sync_id"])
        if current is None or _watched(current) != seen:
            return current or record
    return record


def long_poll(svc, record: dict, raw_wait: str, view: View):
    """Answer at once if the sync is final; else when it changes, or after ``wait`` seconds."""
    wait = parse_wait(raw_wait)
    if record.get("status") not in ACTIVE:
        return jsonify(view(record))
    slots = _take_slot(svc)
    try:
        return jsonify(view(wait_for_change(svc, record, wait)))
    finally:
        slots.give_back()


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_stream(svc, record: dict, view: View) -> Response:
    """``progress`` now and on every change, ``final`` at the end (then the stream closes)."""
    slots = _take_slot(svc)

    def events():
        try:
            yield f"retry: {RETRY_AFTER_S * 1000}\n\n"
            current, started = record, time.monotonic()
            while True:
                if current.get("status") not in ACTIVE:
                    yield _event("final", view(current))
                    return
                yield _event("progress", view(current))
                while True:
                    if time.monotonic() - started >= MAX_STREAM_S:
                        return
                    changed = wait_for_change(svc, current, KEEPALIVE_S)
                    if changed is not current:
                        current = changed
                        break
                    yield ": keepalive\n\n"
        finally:
            slots.give_back()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)
