"""What a task tells the logs and Sentry about the sync it works on.

``bind_sync`` is called once a task knows its sync: every log line the task
writes afterwards carries ``sync_id``, ``provider``, ``relation`` and
``queue`` (``SyncLogContext``, a logging filter reading a context variable),
and a Sentry event raised in it is tagged with the same four. The Celery
integration gives each task its own Sentry scope, and Celery runs one task
at a time per thread or process, so the context never leaks between tasks;
``clear`` ends it anyway when the task returns.
"""

from __future__ import annotations

import contextvars
import logging
import time

import sentry_sdk

from state.metrics import DURATION_BUCKETS, FIRST_CALL_BUCKETS

#: the fields every line of a sync carries
FIELDS = ("sync_id", "provider", "relation", "queue")

_current: contextvars.ContextVar[dict | None] = contextvars.ContextVar("netsync_sync", default=None)


def bind_sync(sync_id: str, provider: str, relation: str | None, queue: str | None) -> None:
    fields = {
        "sync_id": sync_id,
        "provider": provider,
        "relation": relation or "-",
        "queue": queue or "-",
    }
    _current.set(fields)
    sentry_sdk.set_tags(fields)


def bind_fields(**fields) -> None:
    """Other tasks' context (a callback delivery): the same mechanism, their own fields."""
    _current.set({key: value for key, value in fields.items() if value is not None})
    sentry_sdk.set_tags(fields)


def clear() -> None:
    _current.set(None)


def current() -> dict:
    return dict(_current.get() or {})


class SyncLogContext(logging.Filter):
    """Adds the bound sync's fields to every record (the formatters print them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_current.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# -- metrics of a sync (``state.metrics``; read by ``/metrics``) -------------------------
def sync_labels(record: dict) -> dict:
    return {
        "provider": record.get("provider") or "-",
        "relation": record.get("relation") or "-",
        "queue": record.get("queue") or "-",
        "trigger": record.get("trigger") or "-",
    }


def _since_created(record: dict) -> float | None:
    try:
        return max(0.0, time.time() - float(record["created_at"]))
    except (KeyError, TypeError, ValueError):
        return None


def count_finished(metrics, record: dict, status: str) -> None:
    """A sync reached ``status``: its counter and its duration since the trigger."""
    labels = sync_labels(record)
    metrics.count("syncs_finished", status=status, **labels)
    elapsed = _since_created(record)
    if elapsed is not None:
        metrics.observe(
            "sync_duration_seconds",
            elapsed,
            DURATION_BUCKETS,
            provider=labels["provider"],
            queue=labels["queue"],
            status=status,
        )


def full_reread(count: int, page_size: int, price_micro: int) -> tuple[int, int]:
    """What reading a network of ``count`` in full costs: (counted calls, micro-USD):
    the profile and every page, every connection and the profile billed."""
    calls = 1 + max(1, -(-count // page_size))
    return calls, (count + 1) * price_micro


def count_mode(metrics, record: dict, count: int, mode: str, page_size: int, price_usd: float):
    """A finalized sync's mode and cost, and (incremental) what it saved against reading
    the same network in full (``/metrics``, the dashboard's Sync modes panel)."""
    from state.admission import MICRO, CallCost

    provider = record.get("provider") or "-"
    cost = CallCost.from_record(record)
    labels = {"provider": provider, "mode": mode}
    series = [
        ("sync_mode_syncs", labels, 1),
        ("sync_mode_calls", labels, cost.calls),
        ("sync_mode_counted_calls", labels, cost.counted_calls),
        ("sync_mode_usd_micro", labels, cost.usd_micro),
    ]
    if mode == "incremental":
        calls, usd_micro = full_reread(count, page_size, round(price_usd * MICRO))
        series += [
            ("sync_mode_calls_saved", {"provider": provider}, max(0, calls - cost.counted_calls)),
            (
                "sync_mode_usd_saved_micro",
                {"provider": provider},
                max(0, usd_micro - cost.usd_micro),
            ),
        ]
    metrics.add_many(series)


def observe_first_call(metrics, record: dict) -> None:
    elapsed = _since_created(record)
    if elapsed is not None:
        metrics.observe(
            "trigger_to_first_call_seconds",
            elapsed,
            FIRST_CALL_BUCKETS,
            provider=record.get("provider") or "-",
            queue=record.get("queue") or "-",
        )


def count_answer(
    metrics,
    provider: str,
    queue: str,
    error,
    page: bool,
    batch=None,
    unreadable=(),
    instance: str | None = None,
) -> None:
    """One provider answer by the action it led to, a fetched page, and each of its
    rate-limit headers that did not parse (ignored for the call: ``unreadable``); one
    round trip, or with ``batch`` none of its own: queued there. ``instance``: the
    server of a federated provider that answered (``instance_answers``, its rank)."""
    action = error.action.name.lower() if error is not None else "ok"
    series = [("provider_answers", {"provider": provider, "action": action})]
    if instance is not None:
        labels = {"provider": provider, "instance": instance, "action": action}
        series.append(("instance_answers", labels))
        metrics.note_instance(provider, instance, batch=batch)
    if page and error is None:
        series.append(("pages_fetched", {"provider": provider, "queue": queue}))
    for header in unreadable:
        series.append(("rate_headers_unreadable", {"provider": provider, "header": header}))
    metrics.count_many(series, batch=batch)
