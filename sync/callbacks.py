"""Completion events for the main app: ``POST CALLBACK_URL`` from a durable outbox.

``notify`` freezes the event in the outbox (``state.outbox``) and parks its
first attempt in the delayed set (due at once); the scheduler sends it to
a worker, which POSTs it. So a slow or failing main app never blocks a sync,
and no attempt is lost with a worker, the scheduler or (with append-only
persistence) Redis. Every attempt is signed two ways: ``X-Netsync-Signature``
(as the webhooks netsync receives) and the Standard Webhooks headers
(``webhook-id`` = the delivery id, the same on every retry).

What an answer does: 2xx delivered; 429, 5xx and network errors are retried
with full-jitter backoff, never sooner than the receiver's ``Retry-After``;
any other answer (4xx, a redirect) is not retried: the delivery goes to the
dead-letter list, as it does after ``CALLBACK_MAX_ATTEMPTS`` attempts.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import time

import requests

import queues
from state.admission import CallCost
from state.outbox import DELIVERED, FAILED, PENDING, Delivery
from sync import telemetry
from sync.retry import backoff_delay
from sync.runtime import NetsyncTask
from sync.signatures import DELIVERY_HEADER, SIGNATURE_HEADER, sign, standard_webhook_headers

log = logging.getLogger("netsync.callbacks")

TASK_NAME = "netsync.callback"
EVENTS = {"succeeded", "partial", "failed", "needs_reauth", "cancelled"}
#: a Retry-After further away than this is read as this
MAX_RETRY_AFTER_S = 3600.0
RESPONSE_TIMEOUT_S = 10.0


def callback_queue(svc, provider: str | None) -> str:
    """Completion events ride the sync's provider's ``normal`` queue (regional if it is)."""
    return queues.queue_name("normal", provider or "", svc.settings.provider_regions)


def event_body(svc, record: dict) -> dict | None:
    status = record.get("status")
    if status not in EVENTS:
        return None
    added, removed = (0, 0)
    if status in ("succeeded", "partial"):
        # the counts the finalization committed (``SyncStore.finish`` keeps them)
        added, removed = int(record.get("added") or 0), int(record.get("removed") or 0)
    return {
        "event": f"sync.{status}",
        "sync_id": record["sync_id"],
        "user_id": record["user_id"],
        "provider": record["provider"],
        "relation": record.get("relation"),
        "count": int(record.get("connections_fetched", 0)),
        "added": added,
        "removed": removed,
        # how the sync read the network (CONTRACT): "full" or "incremental", and its cost
        "mode": record.get("mode") or None,
        "cost": CallCost.from_record(record).as_view(),
    }


def notify(celery_app, sync_id: str, provider: str | None = None) -> str | None:
    """Put the completion event of a sync that just finished in the outbox; its delivery id."""
    svc = celery_app.netsync_services
    if not svc.settings.callback_url:
        return None
    record = svc.store.get_sync(sync_id)
    body = event_body(svc, record) if record else None
    if body is None:
        return None
    delivery = Delivery(
        id=f"{sync_id}.{body['event']}",
        event=body["event"],
        sync_id=sync_id,
        provider=record.get("provider", ""),
        created_at=time.time(),
        body=json.dumps(body, separators=(",", ":")),
    )
    if svc.outbox.add(delivery):
        schedule(svc, delivery, 0.0, celery_app.conf.broker_url)
    return delivery.id


def schedule(svc, delivery: Delivery, delay_s: float, broker_url: str) -> None:
    """Park the next attempt of ``delivery`` in the delayed set."""
    svc.delayed.park(
        TASK_NAME,
        [delivery.id],
        {},
        queue=callback_queue(svc, delivery.provider),
        delay_s=delay_s,
        priority=queues.priority_for("api", broker_url),
        reason="callback",
    )


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(MAX_RETRY_AFTER_S, float(value))
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return min(MAX_RETRY_AFTER_S, max(0.0, moment.timestamp() - now))


def signed_headers(settings, delivery: Delivery, raw: bytes, now: float) -> dict:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.webhook_secrets[0], raw, int(now)),
        DELIVERY_HEADER: delivery.id,
        **standard_webhook_headers(settings.callback_keys, delivery.id, raw, now),
    }


def retryable(status: int | None) -> bool:
    """None is a network error; 429 and 5xx are the receiver's passing trouble."""
    return status is None or status == 429 or status >= 500


class DeliverCallback(NetsyncTask):
    """One attempt at one delivery of the outbox."""

    name = TASK_NAME

    def run(self, delivery_id: str):
        svc = self.services
        delivery = svc.outbox.get(delivery_id)
        if delivery is None or delivery.state != PENDING:
            return "nothing to send"
        telemetry.bind_fields(
            sync_id=delivery.sync_id, provider=delivery.provider, delivery_id=delivery.id
        )
        settings = svc.settings
        raw, now = delivery.body.encode(), time.time()
        status, problem, retry_after = None, None, None
        try:
            response = requests.post(
                settings.callback_url,
                data=raw,
                allow_redirects=False,
                headers=signed_headers(settings, delivery, raw, now),
                timeout=(settings.http_connect_timeout, RESPONSE_TIMEOUT_S),
            )
            status = response.status_code
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
            if status < 300:
                svc.outbox.record_attempt(delivery, DELIVERED, status, None)
                svc.metrics.count("callback_deliveries", event=delivery.event, outcome="delivered")
                return "delivered"
            problem = f"HTTP {status}"
        except requests.RequestException as exc:
            problem = type(exc).__name__
        return self.after_failure(svc, delivery, status, problem, retry_after)

    def after_failure(self, svc, delivery: Delivery, status, problem: str, retry_after) -> str:
        settings = svc.settings
        attempts = delivery.attempts + 1
        if not retryable(status) or attempts >= settings.callback_max_attempts:
            svc.outbox.record_attempt(delivery, FAILED, status, problem)
            svc.metrics.count("callback_deliveries", event=delivery.event, outcome="failed")
            log.warning(
                "callback failed delivery=%s sync=%s after %d attempts: %s",
                delivery.id,
                delivery.sync_id,
                attempts,
                problem,
            )
            return "failed"
        delay = backoff_delay(
            delivery.attempts,
            settings.callback_backoff_base_seconds,
            settings.callback_backoff_cap_seconds,
        )
        delay = max(delay, retry_after or 0.0)
        svc.outbox.record_attempt(delivery, PENDING, status, problem, next_at=time.time() + delay)
        svc.metrics.count("callback_deliveries", event=delivery.event, outcome="retry")
        schedule(svc, delivery, delay, self.app.conf.broker_url)
        log.info(
            "callback retry delivery=%s sync=%s in %.1fs: %s",
            delivery.id,
            delivery.sync_id,
            delay,
            problem,
        )
        return "retrying"


def redeliver(celery_app, delivery_id: str) -> Delivery | None:
    """Send a delivery again (from the dead-letter list): attempts from zero, same id."""
    svc = celery_app.netsync_services
    delivery = svc.outbox.reopen(delivery_id)
    if delivery is not None:
        schedule(svc, delivery, 0.0, celery_app.conf.broker_url)
    return delivery
