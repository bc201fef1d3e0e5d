"""Starting a sync: the one path every trigger (webhook, API, CLI) goes through.

Validation and deduplication happen here; the work itself is the provider's
profile task (round one), sent to the queue the account's known size picks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app

import providers
import queues
from service.config import PROVIDERS
from state.batch import Batch
from state.credentials import Credential
from state.store import USER_ID_RE, BeginStep, SyncTicket
from sync.modes import AUTO, MODES
from sync.runtime import Services
from sync.tasks import profile_task_name

TRIGGERS = ("webhook", "api", "cli", "stale")


class SyncRequestError(ValueError):
    """A trigger that cannot start a sync; ``code`` is the HTTP-ish kind."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


def validate_target(user_id, provider, relation=None) -> str:
    """Refuse a user, provider or relation that names no network; the relation
    (the provider's first where none is named)."""
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise SyncRequestError("user_id must be 1-128 characters of [A-Za-z0-9_.@:+-]")
    if provider not in PROVIDERS:
        raise SyncRequestError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    offered = relations_of(provider)
    if relation is None:
        return offered[0]
    if relation not in offered:
        raise SyncRequestError(
            f"{provider} has no relation {relation!r}; one of {', '.join(offered)}"
        )
    return relation


def relations_of(provider: str) -> tuple[str, ...]:
    """The relations a provider offers, its default first (``Provider.RELATIONS``)."""
    return providers.provider_classes()[provider].RELATIONS


@dataclass(frozen=True)
class SyncRequest:
    """One network to sync in a trigger: a provider, a relation (None: its first) and,
    from a login webhook, the credential that came with it."""

    provider: str
    relation: str | None = None
    credential: Credential | None = None
    #: ``auto``, ``full`` or ``incremental`` (``sync.modes``)
    mode: str = AUTO


def start_sync(
    svc: Services,
    *,
    user_id: str,
    provider: str,
    trigger: str,
    force: bool = False,
    credential: Credential | None = None,
    relation: str | None = None,
    mode: str = AUTO,
) -> SyncTicket:
    """Start (or find) the sync for one user's network on one provider and relation.

    ``credential`` comes with a login webhook and is stored (encrypted) even
    when no new sync starts: the newest token is the one to use next time.
    """
    return start_syncs(
        svc,
        user_id=user_id,
        trigger=trigger,
        force=force,
        requests=[SyncRequest(provider, relation, credential, mode)],
    )[0]


def start_syncs(
    svc: Services, *, user_id: str, trigger: str, requests: list[SyncRequest], force: bool = False
) -> list[SyncTicket]:
    """``start_sync`` for several networks of one user (a login's accounts and relations).

    Every request is validated before anything is written. Then each step is
    sent for all of them in one round trip (``state.batch``): the credentials
    with each new sync id's index entry and the reads the begin script needs;
    the begin scripts; the bookkeeping of the syncs created (tracked by the
    stall sweep before their tasks are sent). Then the profile tasks are sent.
    """
    assert trigger in TRIGGERS, trigger
    for r in requests:
        if r.mode not in MODES:
            raise SyncRequestError(f"mode must be one of {', '.join(MODES)}")
    relations = [validate_target(user_id, r.provider, r.relation) for r in requests]
    account_ids = linked_account_ids(svc, user_id, requests)
    steps = prepare_begins(svc, user_id, requests, relations)
    classes = run_begins(svc, requests, steps, account_ids, trigger, force)
    after = Batch(svc.redis)
    tickets, error = settle_begins(svc, after, steps)
    created = [(t, q) for t, q in zip(tickets, classes) if t is not None and t.created]
    modes = {id(t): r.mode for t, r in zip(tickets, requests) if t is not None}
    for ticket, _ in created:
        # the mode asked for; the profile task resolves it (``sync.modes``) into ``mode``
        svc.store.update_in(
            after, ticket.sync_id, ticket.provider, user_id, {"mode_requested": modes[id(ticket)]}
        )
    track_started(svc, after, created, trigger)
    after.execute()
    send_profile_tasks(svc, created, trigger)
    if error is not None:
        raise error
    return tickets


def linked_account_ids(svc: Services, user_id: str, requests: list[SyncRequest]) -> dict:
    """The account id per provider: the login's credential, else the one stored.
    A provider with neither is refused (``no_credentials``)."""
    account_ids: dict[str, str] = {}
    for r in requests:  # one credential per provider: a login lists each provider once
        if r.credential is not None:
            account_ids.setdefault(r.provider, r.credential.account_id)
    for r in requests:
        if r.provider in account_ids:
            continue
        if not svc.credentials.exists(r.provider, user_id):
            raise SyncRequestError(
                f"no {r.provider} account is linked for {user_id}; it arrives with a login webhook",
                code="no_credentials",
            )
        account_ids[r.provider] = svc.credentials.load(r.provider, user_id).account_id
    return account_ids


def prepare_begins(
    svc: Services, user_id: str, requests: list[SyncRequest], relations: list[str]
) -> list[BeginStep]:
    """First round trip: the login's credentials (stored even when no sync starts: the
    newest token is the one to use next time), and each begin's index entry and reads."""
    first = Batch(svc.redis)
    saved = set()
    for r in requests:
        if r.credential is not None and r.provider not in saved:
            svc.credentials.save(r.provider, user_id, r.credential, batch=first)
            saved.add(r.provider)
    steps = [
        svc.store.prepare_begin(first, user_id=user_id, provider=r.provider, relation=relation)
        for r, relation in zip(requests, relations)
    ]
    first.execute()
    return steps


def run_begins(
    svc: Services,
    requests: list[SyncRequest],
    steps: list[BeginStep],
    account_ids: dict,
    trigger: str,
    force: bool,
) -> list[str]:
    """Second round trip: every begin script, each on the queue class the network's last
    known size and the trigger pick. Returns those queue classes."""
    settings = svc.settings
    begins = Batch(svc.redis)
    classes = []
    for r, step in zip(requests, steps):
        last_size = step.last.get("size")
        queue_class = queues.queue_class_for(
            int(last_size) if last_size else None, trigger, settings.whale_threshold
        )
        classes.append(queue_class)
        svc.store.queue_begin(
            begins,
            step,
            account_id=account_ids[r.provider],
            queue=queue_class,
            trigger=trigger,
            force=force,
            freshness_s=settings.freshness_seconds,
            stale_s=settings.sync_stale_seconds,
        )
    begins.execute()
    return classes


def settle_begins(
    svc: Services, after: Batch, steps: list[BeginStep]
) -> tuple[list[SyncTicket | None], RuntimeError | None]:
    """What each begin script said (None where its in-flight marker kept moving: the
    others still start), and the first such error, raised once the rest is done."""
    tickets, error = [], None
    for step in steps:
        try:
            tickets.append(svc.store.settle_begin(after, step))
        except RuntimeError as exc:
            tickets.append(None)
            error = error or exc
    return tickets, error


def track_started(svc: Services, after: Batch, created: list, trigger: str) -> None:
    """The syncs created: counted, and tracked by the stall sweep before their tasks go."""
    for ticket, queue_class in created:
        svc.metrics.count_many(
            [
                (
                    "syncs_started",
                    {
                        "provider": ticket.provider,
                        "queue": queue_class,
                        "trigger": trigger,
                        "relation": ticket.relation or "-",
                    },
                )
            ],
            batch=after,
        )
        svc.progress.track(ticket.sync_id, time.time(), batch=after)


def send_profile_tasks(svc: Services, created: list, trigger: str) -> None:
    """Round one of each created sync; if the broker fails, the syncs not sent fail
    (``broker_unavailable``) instead of blocking the next ones."""
    for i, (ticket, queue_class) in enumerate(created):
        try:
            send_profile_task(svc, ticket.sync_id, ticket.provider, queue_class, trigger)
        except Exception as exc:  # broker down: do not leave syncs that block the next ones
            for unsent, _ in created[i:]:
                svc.store.fail(unsent.sync_id, "failed", "broker_unavailable", type(exc).__name__)
            raise


def send_profile_task(
    svc: Services, sync_id: str, provider: str, queue_class: str, trigger: str
) -> None:
    celery_app = current_app.extensions["celery"]
    celery_app.send_task(
        profile_task_name(provider),
        args=[sync_id],
        queue=queues.queue_name(queue_class, provider, svc.settings.provider_regions),
        priority=queues.priority_for(trigger, celery_app.conf.broker_url),
    )
