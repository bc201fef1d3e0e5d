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

import sentry_sdk

#: the fields every line of a sync carries
FIELDS = ("sync_id", "provider", "relation", "queue")

_current: contextvars.ContextVar[dict | None] = contextvars.ContextVar("netsync_sync", default=None)


def bind_sync(sync_id: str, provider: str, relation: str | None, queue: str | None) -> None:
    fields = {"sync_id": sync_id, "provider": provider, "relation": relation or "-",
              "queue": queue or "-"}
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
