"""The scheduler's lost-worker sweep: pages of a worker whose beat stopped are sent again at once.

Every worker process beats into Redis and holds the pages it works on
(``sync.heartbeat``, ``state.liveness``). Once a beat has been missing for
``WORKER_LOST_SECONDS`` (its host lost, cut off, its process killed) this
sweep takes over that worker's holds (atomically: one sweep gets them) and
sends each page that its sync still needs, to the sync's queue. Nothing waits
for ``STALL_SECONDS`` or for a broker's visibility or heartbeat timeout; the
stall sweep (``sync.recovery``) stays the backstop.

On the Redis broker it also reads the broker (``sync.broker_ledger``):

- the lost worker's unacked messages are dropped once its pages are handed
  on (they would come back after the visibility timeout to do nothing);
- an unacked message that no live worker holds for ``WORKER_LOST_SECONDS``
  (its worker's channel broke, the give-back failed: ``sync.broker``) is
  dropped when its page is stored or its sync over, else handed on first;
- for the syncs a lost worker held, a page that is pending in the store but
  neither queued nor unacked in the broker, on two looks at least
  ``CONFIRM_S`` apart, was lost by the broker at the partition (BRPOP popped
  it for the worker whose link had just been cut): it is sent again.

A page sent twice is harmless: the store's done set makes the second a no-op,
and the PostgreSQL side of a finalization is keyed by the sync id (a late
worker that comes back finds its page ``duplicate`` or its sync ``inactive``
in ``complete_page``; a late finalization finds the sync's row in
``finalized_syncs``, or waits on the network's row lock for the first one to
commit). It can cost one more provider call, which is what a partition costs.

Only the holder of the ``lost-workers`` lease sweeps (``Liveness.lease``):
with two schedulers, the second takes over when the first stops renewing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import queues
from state.liveness import Liveness
from state.store import ACTIVE

log = logging.getLogger("netsync.lost_workers")

LEASE = "lost-workers"
#: a page missing from the broker is sent again when seen missing this long apart
CONFIRM_S = 1.0
#: how long after a takeover the lost worker's syncs are checked for pages the broker
#: lost (on RabbitMQ that can be told only once their queues have drained)
SUSPECT_S = 30.0

#: send_task(name, args, queue, priority), as ``sync.recovery.Send``
Send = Callable[[str, list, str, int], None]


@dataclass
class Handover:
    """What one sweep did."""

    lost: list = field(default_factory=list)
    pages_sent: int = 0
    #: unacked messages dropped from the Redis broker (handed on, or of syncs over)
    forgotten: int = 0
    #: pages found missing from the broker and sent again
    found_missing: int = 0
    #: parked entries a lost scheduler had claimed, made due again
    parked_due: int = 0
    led: bool = True

    def summary(self) -> str:
        return (
            f"lost={len(self.lost)} pages_sent={self.pages_sent} "
            f"unacked_dropped={self.forgotten} missing_resent={self.found_missing} "
            f"parked_due_again={self.parked_due}"
        )


class LostWorkerSweep:
    def __init__(
        self,
        svc,
        send: Send,
        broker_url: str,
        holder: str,
        ledger=None,
        clock: Callable[[], float] = time.time,
        broker_check: Callable[[], None] | None = None,
    ):
        self.svc = svc
        self.send = send
        #: raises while the broker cannot be reached (``sync.recovery.celery_broker_check``)
        self.broker_check = broker_check
        self.broker_url = broker_url
        self.holder = holder
        self.ledger = ledger
        self.clock = clock
        settings = svc.settings
        self.liveness = Liveness(svc.redis, settings.key_prefix)
        self.lost_s = settings.worker_lost_seconds
        self.lease_s = settings.scheduler_lease_seconds
        #: syncs a lost worker held → until when their pages are checked against the broker
        self._suspects: dict[str, float] = {}
        #: (sync id, cursor) missing from the broker → when first seen missing
        self._missing: dict[tuple[str, str], float] = {}
        #: unacked delivery tag no live worker holds → when first seen so
        self._orphans: dict[str, float] = {}

    def sweep(self) -> Handover:
        report = Handover()
        if not self.liveness.lease(LEASE, self.holder, self.lease_s):
            # another scheduler sweeps; what this one saw is stale by the time it leads again
            self._suspects, self._missing, self._orphans = {}, {}, {}
            report.led = False
            return report
        lost = self.liveness.lost()
        if lost and self.broker_check is not None:
            try:
                self.broker_check()
            except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
                # nothing sent would arrive: the holds stay, the next sweep hands them on
                log.warning("lost workers: the broker is unreachable (%s)", type(exc).__name__)
                return report
        for holder in lost:
            held = self.liveness.take_over(holder)
            if held is None:
                continue
            # a lost scheduler's claimed parked entries: due now, not when their lease ends
            report.parked_due += self.svc.delayed.due_again(holder)
            try:
                report.pages_sent += self.hand_on(list(held.values()))
            except Exception:
                self.liveness.give_back(holder, held)  # for the next sweep (a page twice: no harm)
                raise
            report.lost.append(holder)
            if self.ledger is not None:
                report.forgotten += self.ledger.forget(entry.get("tag") for entry in held.values())
                until = self.clock() + max(SUSPECT_S, 3 * self.lost_s)
                for entry in held.values():
                    if entry.get("args"):
                        self._suspects[str(entry["args"][0])] = until
            log.warning("worker %s lost: its %d page(s) handed on", holder, len(held))
        if self.ledger is not None:
            self.audit_broker(report)
        if report.lost or report.forgotten or report.found_missing or report.parked_due:
            log.warning("lost-worker sweep: %s", report.summary())
        return report

    def stop(self) -> None:
        """Let the lease go (a clean shutdown): another scheduler sweeps at once."""
        self.liveness.give_up(LEASE, self.holder)

    # -- handing pages on ---------------------------------------------------------------
    def hand_on(self, entries: list[dict], counter: str = "handed_on") -> int:
        """Send again what each entry's sync still needs of it; how many were sent (each
        sync's record counts them in ``counter``: ``handed_on`` for pages a lost worker
        held, ``found_missing`` for pages the broker lost)."""
        by_sync: dict[str, list[dict]] = {}
        for entry in entries:
            args = entry.get("args") or []
            if args:
                by_sync.setdefault(str(args[0]), []).append(entry)
        return sum(
            self._hand_on_sync(sync_id, items, counter) for sync_id, items in by_sync.items()
        )

    def _hand_on_sync(self, sync_id: str, entries: list[dict], counter: str) -> int:
        store = self.svc.store
        record = store.get_sync(sync_id)
        if record is None or record.get("status") not in ACTIVE:
            return 0
        pending = set(store.pending_cursors(sync_id))
        messages = {}
        for entry in entries:
            task, args = entry["task"], entry["args"]
            cursor = str(args[1]) if len(args) > 1 else ""
            if record.get("finalizing"):
                # its pages are stored: one page task of the sync finalizes it (once)
                messages.setdefault("finalize", (f"{record['provider']}.page", cursor))
            elif task.endswith(".profile"):
                if not pending and not store.pages_done(sync_id):
                    messages[""] = (task, None)
            elif cursor in pending:
                messages[cursor] = (task, cursor)
        for task, cursor in messages.values():
            self._send(record, task, cursor)
        if messages:
            store.update(sync_id, **{counter: int(record.get(counter) or 0) + len(messages)})
        return len(messages)

    def _send(self, record: dict, task: str, cursor: str | None) -> None:
        sync_id, provider = record["sync_id"], record["provider"]
        queue = queues.queue_name(
            record.get("queue") or "normal", provider, self.svc.settings.provider_regions
        )
        priority = queues.priority_for(record.get("trigger", "api"), self.broker_url)
        # a delivery again: a page whose worker dies every time is dead-lettered
        # after MAX_DELIVERIES (``ProviderTask.poisoned``), as with the stall sweep
        self.svc.progress.delivered_again(sync_id, cursor or "")
        args = [sync_id] if cursor is None else [sync_id, cursor]
        self.send(task, args, queue, priority)

    # -- the Redis broker -----------------------------------------------------------------
    def audit_broker(self, report: Handover) -> None:
        now = self.clock()
        unacked = self.ledger.unacked()
        live_held = [
            entry
            for holder in self.liveness.alive()
            for entry in self.liveness.held(holder).values()
        ]
        held_tags = {entry.get("tag") for entry in live_held}
        self._orphans = {
            tag: self._orphans.get(tag, now) for tag in unacked if tag not in held_tags
        }
        ripe = [tag for tag, since in self._orphans.items() if now - since >= self.lost_s]
        # another deployment's message on a shared broker is left to kombu
        ours = [tag for tag in ripe if self.svc.store.get_sync(unacked[tag].sync_id) is not None]
        if ours:
            report.pages_sent += self.hand_on(
                [
                    {"task": unacked[tag].task, "args": [unacked[tag].sync_id, unacked[tag].cursor]}
                    for tag in ours
                ]
            )
            report.forgotten += self.ledger.forget(ours)
        for tag in ripe:
            self._orphans.pop(tag, None)
        self._suspects = {s: until for s, until in self._suspects.items() if until > now}
        if self._suspects:
            held = {
                (str(e["args"][0]), str(e["args"][1]) if len(e["args"]) > 1 else "")
                for e in live_held
                if e.get("args")
            }
            report.found_missing += self.find_missing(now, unacked, held)

    def find_missing(self, now: float, unacked: dict, held: set) -> int:
        """Pages the suspect syncs need that no live worker holds and the broker has
        neither queued nor unacked (as far as it can be seen: ``sync.broker_ledger``)."""
        needed = {sync_id: self._needed(sync_id, now) for sync_id in list(self._suspects)}
        queue_names = {entry["queue"] for pages in needed.values() for entry in pages.values()}
        queued = self.ledger.pages_of(self._suspects, queue_names)
        if queued is None:
            self._missing.clear()
            return 0
        present = queued | held | {(m.sync_id, m.cursor) for m in unacked.values()}
        missing = {}
        for sync_id, pages in needed.items():
            for key, entry in pages.items():
                if (sync_id, key) not in present and not (
                    key == "" and any(s == sync_id for s, _ in present)
                ):
                    missing[(sync_id, key)] = entry
        self._missing = {k: self._missing.get(k, now) for k in missing}
        confirmed = [k for k, since in self._missing.items() if now - since >= CONFIRM_S]
        for key in confirmed:
            self._missing.pop(key)
        return self.hand_on([missing[k] for k in confirmed], "found_missing") if confirmed else 0

    def _needed(self, sync_id: str, now: float) -> dict[str, dict]:
        """cursor → the message a sync needs somewhere in the broker ("" for round one or
        the finalization); nothing while a page of it is parked (it waits in our delayed
        set, not in the broker) or once it is over."""
        store = self.svc.store
        record = store.get_sync(sync_id)
        if record is None or record.get("status") not in ACTIVE:
            self._suspects.pop(sync_id, None)
            return {}
        if self.svc.progress.waiting_until(sync_id) > now:
            return {}
        provider = record["provider"]
        queue = queues.queue_name(
            record.get("queue") or "normal", provider, self.svc.settings.provider_regions
        )
        if record.get("finalizing"):
            return {"": {"task": f"{provider}.page", "args": [sync_id, ""], "queue": queue}}
        pending = store.pending_cursors(sync_id)
        if not pending and not store.pages_done(sync_id):
            return {"": {"task": f"{provider}.profile", "args": [sync_id], "queue": queue}}
        return {
            c: {"task": f"{provider}.page", "args": [sync_id, c], "queue": queue} for c in pending
        }

    def beat(self):
        """This scheduler beats like a worker, under its lease id (the id its claims of
        parked work name: ``SchedulerLoop.claimer``), so if its host is lost the other
        scheduler makes its claims due again once the beat has expired."""
        import os
        import socket

        from sync.heartbeat import WorkerBeat

        settings = self.svc.settings
        beat = WorkerBeat(
            self.liveness,
            self.holder,
            settings.worker_beat_seconds,
            settings.worker_lost_seconds,
            {"role": "scheduler", "pid": os.getpid(), "host": socket.gethostname()},
        )
        beat.start()
        return beat


def every(jobs: list[tuple[Callable[[], object], float]], clock=time.monotonic):
    """One callable that runs each job when its own interval is due, each failure on its
    own (the scheduler calls it as its ``sweep``, at the shortest interval)."""
    due = [0.0] * len(jobs)

    def run() -> None:
        now = clock()
        for i, (job, interval) in enumerate(jobs):
            if now >= due[i]:
                due[i] = now + interval
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - Redis or the broker away: next time
                    log.warning("%s failed (%s)", getattr(job, "__name__", job), type(exc).__name__)

    return run


def lost_worker_sweep_for(celery_app) -> LostWorkerSweep:
    """The sweep of the service's scheduler process (``sync.scheduler``)."""
    import socket

    from sync.broker_ledger import ledger_for
    from sync.heartbeat import holder_id
    from sync.recovery import celery_broker_check, celery_send

    svc = celery_app.netsync_services
    conf = celery_app.conf
    ledger = ledger_for(
        conf.broker_url,
        conf.broker_transport_options or {},
        queues.all_queue_names(svc.settings.provider_regions),
    )
    return LostWorkerSweep(
        svc,
        celery_send(celery_app),
        conf.broker_url,
        holder_id(f"scheduler@{socket.gethostname()}"),
        ledger,
        broker_check=celery_broker_check(celery_app),
    )
