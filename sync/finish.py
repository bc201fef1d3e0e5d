"""How a sync ends, and the one word for each step of it.

These words are used for these steps only, in ``sync/``, ``state/`` and
``service/`` (names, docstrings and log lines):

- **complete** a page: its connections join the sync's staging set and it
  leaves the pending set, in one script (``SyncStore.complete_page``); a
  page completed again (a redelivery) changes nothing. The last page to
  complete marks the record ``finalizing`` (with the status it will get)
  and answers ``"finalize"``: its task finalizes (``after_complete``).
- **finalize** a sync: its staged network replaces the stored one in
  PostgreSQL, once (``NetworkStore.finalize``; the sync id makes a second
  commit a no-op), then the record finishes ``succeeded`` or ``partial``
  (``SyncStore.finish``). ``sync.finalize.finalize_sync`` runs both; a
  worker killed in between leaves the record ``finalizing``, and the next
  page task of the sync finalizes it again.
- **fail** a sync: it finishes ``failed``, ``needs_reauth`` or
  ``cancelled``; its staging is dropped and the stored network stays as it
  was (``SyncStore.fail``). A ``finalizing`` sync can no longer fail.
- **finish**: the record takes its final status and ``finished_at``, by
  finalizing or failing, exactly once. Whoever finished it counts it
  (``syncs_finished``) and announces it to the main app (the callback):
  ``after_finish``.
"""

from __future__ import annotations

import logging

from providers.errors import ProviderError
from state.store import ACTIVE
from sync import callbacks, telemetry
from sync.context import SyncContext
from sync.finalize import finalize_sync

log = logging.getLogger("netsync.finish")


def fail(app, ctx: SyncContext, status: str, error: ProviderError) -> str:
    """Finish the sync with a failing ``status``; the stored network stays as it was."""
    if ctx.svc.store.fail(ctx.sync_id, status, error.rule.kind, error.message):
        after_finish(app, ctx, status, error)
    return status


def finalize(app, ctx: SyncContext) -> str:
    """Every page is complete: commit the network (once) and finish the sync."""
    record = ctx.svc.store.get_sync(ctx.sync_id) or ctx.record
    if record.get("status") not in ACTIVE:
        return record.get("status", "inactive")
    result, first = finalize_sync(ctx.svc, record)
    if first:
        svc = ctx.svc
        telemetry.count_mode(
            svc.metrics,
            record,
            result.count,
            result.mode,
            ctx.provider.PAGE_SIZE,
            svc.settings.spend.price(ctx.provider.NAME),
        )
        after_finish(app, ctx, result.status)
    return result.status


def after_complete(app, ctx: SyncContext, result: str) -> str:
    """What ``complete_page`` answered, carried on: the last page finalizes."""
    return finalize(app, ctx) if result == "finalize" else result


def after_finish(app, ctx: SyncContext, status: str, error: ProviderError | None = None) -> None:
    """The sync finished (by this run): count it and tell the main app."""
    telemetry.count_finished(ctx.svc.metrics, ctx.record, status)
    ctx.svc.memory.forget(ctx.sync_id)
    log.info(
        "sync finished sync=%s provider=%s status=%s kind=%s",
        ctx.sync_id,
        ctx.provider.NAME,
        status,
        error.rule.kind if error else "-",
    )
    callbacks.notify(app, ctx.sync_id, ctx.provider.NAME)
