"""What an operator can do to running work: cancel a sync, pause or resume a provider.

One implementation behind the API (``POST /v1/syncs/<id>/cancel``), the CLI
(``syncs cancel``, ``providers pause/resume``) and the dashboard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from state.admission import SPEND_BUDGET
from state.control import PAUSED_REASON
from state.store import FINAL
from sync import callbacks, telemetry
from sync.runtime import Services

log = logging.getLogger("netsync.operations")

CANCELLED_KIND = "cancelled"


@dataclass(frozen=True)
class CancelOutcome:
    #: "cancelled" (it was active and is now cancelled), "final" (already final), "unknown"
    outcome: str
    record: dict | None


def _parked_of_sync(svc: Services, sync_id: str) -> list[str]:
    """Parked provider calls of one sync (a provider task's first argument is its sync id)."""
    return [
        entry.id
        for entry in svc.delayed.entries()
        if entry.args and entry.args[0] == sync_id and not entry.task_name.startswith("netsync.")
    ]


def cancel_sync(svc: Services, celery_app, sync_id: str, reason: str = "") -> CancelOutcome:
    """Cancel an active sync: its queued pages do nothing, its parked calls are dropped.

    The status becomes ``cancelled`` in the same atomic step that drops the
    staging data (``SyncStore.fail``), so the previous network stays as it
    was; a page finishing meanwhile finds the sync inactive and stores nothing.
    """
    record = svc.store.get_sync(sync_id)
    if record is None:
        return CancelOutcome("unknown", None)
    message = f"cancelled by an operator{': ' + reason if reason else ''}"
    if not svc.store.fail(sync_id, "cancelled", CANCELLED_KIND, message):
        return CancelOutcome("final", svc.store.get_sync(sync_id))
    dropped = svc.delayed.drop(_parked_of_sync(svc, sync_id))
    provider = record.get("provider", "")
    telemetry.count_finished(svc.metrics, record, "cancelled")
    log.info("sync cancelled sync=%s provider=%s parked_dropped=%d", sync_id, provider, dropped)
    callbacks.notify(celery_app, sync_id, provider)
    return CancelOutcome("cancelled", svc.store.get_sync(sync_id))


def pause_provider(svc: Services, provider: str, reason: str = "") -> bool:
    """Stop every call to ``provider`` (they park) until resumed; False if already paused."""
    changed = svc.switches.pause(provider, reason)
    log.warning("provider paused provider=%s reason=%s", provider, reason or "-")
    return changed


def resume_provider(svc: Services, provider: str) -> tuple[bool, int]:
    """Let calls to ``provider`` go again; (was paused, parked calls made due now).

    Calls parked for the day's spend budget are made due too: after a raised
    ``BUDGET_<PROVIDER>`` (a restart), they go now; those that still do not fit
    park again until the next UTC day.
    """
    changed = svc.switches.resume(provider)
    # ``provider`` may be one instance's switch (``mastodon@fosstodon.org``): the parked
    # calls of every instance go again, those of an instance still paused park again
    provider_name = provider.partition("@")[0]
    waiting = [
        entry.id
        for entry in svc.delayed.entries()
        if entry.reason in (PAUSED_REASON, SPEND_BUDGET)
        and entry.task_name.startswith(f"{provider_name}.")
    ]
    released = svc.delayed.make_due(waiting)
    log.warning("provider resumed provider=%s parked_released=%d", provider, released)
    return changed, released


def is_final(record: dict | None) -> bool:
    return bool(record) and record.get("status") in FINAL
