"""Completion events for the main app: ``POST CALLBACK_URL``, signed like webhooks.

Sent by their own task so a slow or failing main app never blocks a sync;
retried with backoff through the delayed set (no countdown), then dropped
with a log line.
"""
from __future__ import annotations

import json
import logging
import time

import requests

import queues
from sync.retry import backoff_delay, exhausted
from sync.runtime import NetsyncTask
from sync.signatures import sign

log = logging.getLogger("netsync.callbacks")

TASK_NAME = "netsync.callback"
MAX_ATTEMPTS = 8
EVENTS = {"succeeded", "partial", "failed", "needs_reauth"}


def callback_queue(svc, provider: str | None) -> str:
    """Completion events ride the sync's provider's ``normal`` queue (regional if it is)."""
    return queues.queue_name("normal", provider or "", svc.settings.provider_regions)


def notify(celery_app, sync_id: str, provider: str | None = None) -> None:
    """Queue the completion event for a sync that just ended (if anyone listens)."""
    svc = celery_app.netsync_services
    if not svc.settings.callback_url:
        return
    celery_app.send_task(TASK_NAME, args=[sync_id], queue=callback_queue(svc, provider))


def event_body(svc, record: dict) -> dict | None:
    status = record.get("status")
    if status not in EVENTS:
        return None
    added, removed = (0, 0)
    if status in ("succeeded", "partial"):
        # the counts the finalization committed (``SyncStore.finish`` keeps them)
        added, removed = int(record.get("added") or 0), int(record.get("removed") or 0)
    return {"event": f"sync.{status}", "sync_id": record["sync_id"],
            "user_id": record["user_id"], "provider": record["provider"],
            "relation": record.get("relation"),
            "count": int(record.get("connections_fetched", 0)), "added": added,
            "removed": removed}


class DeliverCallback(NetsyncTask):
    name = TASK_NAME

    def run(self, sync_id: str, attempt: int = 0):
        svc = self.services
        record = svc.store.get_sync(sync_id)
        body = event_body(svc, record) if record else None
        if body is None:
            return "nothing to send"
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json",
                   "X-Netsync-Signature": sign(svc.settings.webhook_secrets[0], raw, int(time.time())),
                   "X-Netsync-Delivery": f"{sync_id}.{body['event']}"}
        try:
            response = requests.post(svc.settings.callback_url, data=raw, headers=headers,
                                     timeout=(svc.settings.http_connect_timeout, 10))
            if response.status_code < 300:
                return "delivered"
            problem = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            problem = type(exc).__name__
        if exhausted(attempt, MAX_ATTEMPTS):
            log.warning("callback dropped sync=%s after %d attempts: %s", sync_id, attempt + 1, problem)
            return "dropped"
        svc.delayed.park(self.name, [sync_id], {"attempt": attempt + 1},
                         queue=callback_queue(svc, record.get("provider")),
                         delay_s=backoff_delay(attempt, 2.0, 300.0),
                         priority=queues.priority_for("api", self.app.conf.broker_url),
                         reason="callback")
        return "retrying"


def register_tasks(celery_app) -> None:
    celery_app.register_task(DeliverCallback())
