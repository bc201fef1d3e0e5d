"""Stall recovery: a sync whose pages stopped moving gets its pending pages sent again.

A page's message can vanish: its worker was killed (``kill -9``, an OOM kill,
a deploy whose grace period ran out) and, on the Redis broker, the unacked
message only comes back after the visibility timeout; a broker flushed or
restored from an older file loses it for good. The store knows what every
sync still needs (its pending cursors), so the sweep sends those again. Pages
are idempotent (a page already in the done set is a no-op, and a redelivered
page that launches its successors again is told apart from a repeated cursor
by the store), so sending a page twice stores it once.

A sync counts as *stalled* when, for ``stall_seconds``:

- its progress signature (pages stored, calls made, status) did not change,
- no page of it is parked in the delayed set past that time (waiting for
  quota or a provider's reset is not stalling),
- and no recovery re-sent its pages within that time.

After ``max_recoveries`` recoveries without progress, or when no credential
is left, the sync fails (kind ``stalled`` / ``no_credentials``) and
the previous network stays as it was.

The scheduler process runs a sweep every ``sweep_interval`` seconds
(``sync.scheduler``); ``flask --app service syncs sweep`` runs one (cron).
A lock in Redis lets one sweep run at a time.

While the broker is unreachable nothing can move and nothing sent would
arrive: a sweep that finds it so (one connection attempt before any
re-send) skips its round and says so. It counts no recovery, so no sync is
failed for the broker's outage, and no delivery, so no page is taken for a
poison page; once the broker is back, the next sweep re-sends what stalled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import queues
from state.progress import Observation, SyncProgress
from state.store import ACTIVE
from sync import callbacks

log = logging.getLogger("netsync.recovery")

#: send_task(name, args, queue, priority)
Send = Callable[[str, list, str, int], None]
#: raises when the broker cannot be reached (connects once, briefly)
BrokerCheck = Callable[[], None]


@dataclass
class SweepReport:
    watched: int = 0
    recovered: list = field(default_factory=list)
    pages_resent: int = 0
    failed: list = field(default_factory=list)
    skipped: bool = False
    #: the round was skipped: the broker did not answer (why, in a word)
    broker_unreachable: str = ""

    def summary(self) -> str:
        if self.skipped:
            return "another sweep is running"
        if self.broker_unreachable:
            return (
                f"skipped: the broker is unreachable ({self.broker_unreachable}); "
                f"nothing re-sent, {self.watched} active syncs left as they were"
            )
        return (
            f"watched={self.watched} recovered={len(self.recovered)} "
            f"pages_resent={self.pages_resent} failed={len(self.failed)}"
        )


class StallSweeper:
    def __init__(
        self,
        svc,
        send: Send,
        broker_url: str,
        notify: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        broker_check: BrokerCheck | None = None,
    ):
        self.svc = svc
        self.notify = notify
        self.broker_check = broker_check
        self.progress: SyncProgress = svc.progress
        self.send = send
        self.broker_url = broker_url
        self.clock = clock
        settings = svc.settings
        self.stall_s = settings.stall_seconds
        self.max_recoveries = settings.max_recoveries

    def sweep(self, use_lock: bool = True) -> SweepReport:
        report = SweepReport()
        if use_lock and not self.progress.try_lock(max(1.0, self.svc.settings.sweep_interval / 2)):
            report.skipped = True
            return report
        active = self.progress.active()
        report.watched = len(active)
        if active and self.broker_check is not None:
            try:
                self.broker_check()
            except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
                report.broker_unreachable = type(exc).__name__
                log.warning("stall sweep: %s", report.summary())
                return report
        for sync_id in active:
            self.check(sync_id, report)
        if report.recovered or report.failed:
            log.warning("stall sweep: %s", report.summary())
        return report

    def check(self, sync_id: str, report: SweepReport) -> None:
        store, now = self.svc.store, self.clock()
        record = store.get_sync(sync_id)
        if record is None or record.get("status") not in ACTIVE:
            self.progress.forget(sync_id)
            return
        signature = f"{record.get('status')}:{record.get('pages_fetched')}:{record.get('calls')}"
        seen = self.progress.observation(sync_id)
        if seen is None or seen.signature != signature:
            self.progress.observe(sync_id, Observation(signature, now))
            return
        quiet_since = max(seen.since, seen.recovered_at, self.progress.waiting_until(sync_id))
        if now - quiet_since < self.stall_s:
            return
        if not self.svc.credentials.exists(record["provider"], record["user_id"]):
            return self.give_up(
                record,
                "no_credentials",
                "stalled and no credential is stored to resume with",
                report,
            )
        if seen.recoveries >= self.max_recoveries:
            return self.give_up(
                record,
                "stalled",
                f"no progress after {seen.recoveries} recoveries of {self.stall_s:.0f} s each",
                report,
            )
        report.pages_resent += self.resend(record)
        report.recovered.append(sync_id)
        seen.recoveries += 1
        seen.recovered_at = now
        self.progress.observe(sync_id, seen)
        store.update(
            sync_id, recoveries=int(record.get("recoveries") or 0) + 1, recovered_at=repr(now)
        )

    def resend(self, record: dict) -> int:
        """Send the sync's pending pages again (round one if it has none yet)."""
        sync_id, provider = record["sync_id"], record["provider"]
        queue = queues.queue_name(
            record.get("queue") or "normal", provider, self.svc.settings.provider_regions
        )
        priority = queues.priority_for(record.get("trigger", "api"), self.broker_url)
        cursors = self.svc.store.pending_cursors(sync_id)
        if record.get("finalizing"):
            # every page is complete but the finalization never got through (its worker died and
            # the message is gone): any page task of the sync finalizes it (exactly once)
            messages = [(f"{provider}.page", [sync_id, ""], "")]
        elif not cursors and not self.svc.store.pages_done(sync_id):
            messages = [(f"{provider}.profile", [sync_id], "")]
        else:
            messages = [(f"{provider}.page", [sync_id, cursor], cursor) for cursor in cursors]
        for name, args, cursor in messages:
            # a re-send is a delivery again: a page that kills its worker every
            # time is dead-lettered after MAX_DELIVERIES (``sync.outcomes.dead_lettered``)
            self.progress.delivered_again(sync_id, cursor)
            self.send(name, args, queue, priority)
        sent = len(messages)
        log.warning(
            "stalled sync=%s provider=%s: re-sent %d pending pages", sync_id, provider, sent
        )
        return sent

    def give_up(self, record: dict, kind: str, message: str, report: SweepReport) -> None:
        sync_id = record["sync_id"]
        if self.svc.store.fail(sync_id, "failed", kind, message):
            self.svc.metrics.count("syncs_finished", provider=record["provider"], status="failed")
            log.warning("stalled sync=%s provider=%s failed: %s", sync_id, record["provider"], kind)
            report.failed.append(sync_id)
            if self.notify is not None:
                self.notify(sync_id, record["provider"])
        self.progress.forget(sync_id)


def celery_send(celery_app) -> Send:
    def send(name: str, args: list, queue: str, priority: int) -> None:
        celery_app.send_task(name, args=args, queue=queue, priority=priority)

    return send


def celery_broker_check(celery_app, timeout_s: float = 3.0) -> BrokerCheck:
    """One connection to ``celery_app``'s broker, without Celery's retries (a sweep
    waits for no broker: the next one looks again)."""

    def check() -> None:
        with celery_app.connection_for_write(connect_timeout=timeout_s) as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0.2, timeout=timeout_s
            )

    return check


def sweeper_for(celery_app) -> StallSweeper:
    return StallSweeper(
        celery_app.netsync_services,
        celery_send(celery_app),
        celery_app.conf.broker_url,
        notify=lambda sync_id, provider: callbacks.notify(celery_app, sync_id, provider),
        broker_check=celery_broker_check(celery_app),
    )
