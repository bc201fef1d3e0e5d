"""Starting a sync: the one path every trigger (webhook, API, CLI) goes through.

Validation and deduplication happen here; the work itself is the provider's
profile task (round one), sent to the queue the account's known size picks.
"""
from __future__ import annotations

import time

from flask import current_app

import queues
from service.config import PROVIDERS
from state.credentials import Credential
from sync.runtime import Services
from sync.tasks import profile_task_name
from state.store import USER_ID_RE, SyncTicket

TRIGGERS = ("webhook", "api", "cli", "stale")


class SyncRequestError(ValueError):
    """A trigger that cannot start a sync; ``code`` is the HTTP-ish kind."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


def validate_target(user_id, provider) -> None:
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise SyncRequestError("user_id must be 1-128 characters of [A-Za-z0-9_.@:+-]")
    if provider not in PROVIDERS:
        raise SyncRequestError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")


def start_sync(svc: Services, *, user_id: str, provider: str, trigger: str,
               force: bool = False, credential: Credential | None = None) -> SyncTicket:
    """Start (or find) the sync for one user's network on one provider.

    ``credential`` comes with a login webhook and is stored (encrypted) even
    when no new sync starts: the newest token is the one to use next time.
    """
    validate_target(user_id, provider)
    assert trigger in TRIGGERS, trigger
    if credential is not None:
        svc.credentials.save(provider, user_id, credential)
    elif not svc.credentials.exists(provider, user_id):
        raise SyncRequestError(
            f"no {provider} account is linked for {user_id}; it arrives with a login webhook",
            code="no_credentials",
        )
    account_id = credential.account_id if credential else svc.credentials.load(provider, user_id).account_id
    settings = svc.settings
    last_size = svc.store.last_sync(provider, user_id).get("size")
    queue_class = queues.queue_class_for(
        int(last_size) if last_size else None, trigger, settings.whale_threshold
    )
    ticket = svc.store.begin_sync(
        user_id=user_id, provider=provider, account_id=account_id,
        queue=queue_class, trigger=trigger, force=force,
        freshness_s=settings.freshness_seconds, stale_s=settings.sync_stale_seconds,
    )
    if ticket.created:
        svc.metrics.count("syncs_started", provider=provider, queue=queue_class, trigger=trigger,
                          relation=getattr(ticket, "relation", None) or "-")
        svc.progress.track(ticket.sync_id, time.time())
        try:
            send_profile_task(svc, ticket.sync_id, provider, queue_class, trigger)
        except Exception as exc:  # broker down: do not leave a sync that blocks the next one
            svc.store.fail(ticket.sync_id, "failed", "broker_unavailable", type(exc).__name__)
            raise
    return ticket


def send_profile_task(svc: Services, sync_id: str, provider: str, queue_class: str,
                      trigger: str) -> None:
    celery_app = current_app.extensions["celery"]
    celery_app.send_task(
        profile_task_name(provider),
        args=[sync_id],
        queue=queues.queue_name(queue_class, provider, svc.settings.provider_regions),
        priority=queues.priority_for(trigger, celery_app.conf.broker_url),
    )
