"""Finalize a sync: the network into PostgreSQL, then the record final (words: ``sync.finish``).

The last page's completion (``SyncStore.complete_page``) marks the record
``finalizing`` with the status it will have; its status stays ``running``.
``finalize_sync`` then runs the one PostgreSQL transaction
(``NetworkStore.finalize``: network replaced, diff computed by the
database, change-feed entries appended, the sync id recorded) and only then
makes the Redis record final (``SyncStore.finish``). A worker killed between
those steps leaves a record that is still ``running`` + ``finalizing``; the
redelivered page task (acks_late) finds it so and calls this again: the
PostgreSQL side answers with the first commit's result (the sync id is the
idempotency key) and writes nothing, so the sync finalizes exactly once.
"""

from __future__ import annotations

import logging
import time

from state.admission import CallCost
from state.networks import Finalized
from sync.incremental import replace_cache
from sync.modes import FULL

log = logging.getLogger("netsync.finalize")


def finalize_sync(svc, record: dict) -> tuple[Finalized, bool]:
    """Finalize one sync; (what was committed, True if this call made it final)."""
    sync_id = record["sync_id"]
    status = record.get("finalizing") or "succeeded"
    started = time.perf_counter()
    stated = record.get("expected_total")
    result = svc.networks.finalize(
        sync_id=sync_id,
        user_id=record["user_id"],
        provider=record["provider"],
        relation=record["relation"],
        status=status,
        finished_at=time.time(),
        connections=svc.store.staged_connections(sync_id),
        # how the pages read it (``sync.modes``); a record from before modes read in full
        mode=record.get("mode") or FULL,
        stated_count=int(stated) if stated not in (None, "") else None,
        head=record.get("new_head") or None,
        cost=CallCost.from_record(record).as_view(),
        # a change a stream applied after this is newer than what the pages read
        started_at=_epoch(record.get("started_at")),
        # the account the pages were read from: another one later is read in full
        account=record.get("account") or None,
    )
    # the conditional cache this sync kept now describes the network (after the commit:
    # a finalization run again replaces it again, harmlessly)
    replace_cache(svc, record)
    first = svc.store.finish(
        sync_id, result.status, result.count, result.added, result.removed, result.initial
    )
    log.info(
        "sync finalized sync=%s mode=%s count=%d added=%d removed=%d initial=%s again=%s in %.3fs",
        sync_id,
        result.mode,
        result.count,
        result.added,
        result.removed,
        result.initial,
        result.already,
        time.perf_counter() - started,
    )
    return result, first


def _epoch(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
