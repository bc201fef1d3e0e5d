"""The scheduler process: sends parked tasks to their queues when they are due.

``python -m sync.scheduler [--app module:attr]`` runs until SIGTERM or
SIGINT. Each round claims due entries from the delayed set (``state.delayed``),
sends them with ``send_task`` and releases them; when nothing is due it waits
on an Event (until the next due time, at most ``--idle`` seconds), so a stop
signal ends it at once. With the service's own app it also runs the stall
sweep (``sync.recovery``) every ``SWEEP_INTERVAL_SECONDS``: syncs whose pages
stopped moving get them sent again; and copies each provider's spend day to
the PostgreSQL ledger (``sync.ledger``). Several schedulers may run: claims are atomic and
leased, so a killed scheduler's entries are sent by another after the lease.
Logs carry counts and task names, never arguments (they may name accounts).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import threading
import time
from collections.abc import Callable

import redis

from state.delayed import DelayedSet, ParkedTask

log = logging.getLogger("netsync.scheduler")

DEFAULT_APP = "service.make_celery:celery_app"
#: the longest a round waits when nothing is due (new parks may be due sooner)
MAX_IDLE_S = 0.2
#: after a failed send or a Redis error: the broker or Redis is likely down
ERROR_PAUSE_S = 1.0
#: how often the counts are logged (each failure is logged at once)
SUMMARY_EVERY_S = 10.0

Send = Callable[[ParkedTask], None]


def celery_sender(celery_app) -> Send:
    """Send a parked task by name with ``celery_app`` (its module need not be imported)."""

    def send(parked: ParkedTask) -> None:
        options = {"queue": parked.queue}
        if parked.priority is not None:
            options["priority"] = parked.priority
        celery_app.send_task(parked.task_name, args=parked.args, kwargs=parked.kwargs, **options)

    return send


class SchedulerLoop:
    """Claim, send, release; ``run_once`` is one round, ``run`` loops until stopped."""

    def __init__(
        self,
        delayed: DelayedSet,
        send: Send,
        batch: int = 100,
        lease_s: float = 30.0,
        max_idle_s: float = MAX_IDLE_S,
        clock: Callable[[], float] = time.time,
        sweep: Callable[[], object] | None = None,
        sweep_every_s: float = 15.0,
        claimer: str | None = None,
    ):
        self.delayed = delayed
        #: this process' liveness holder id, named in its claims: if its host is lost
        #: between a claim and the release, the other scheduler makes the claimed entries
        #: due again in seconds (``sync.lost_workers``), not when their lease runs out
        self.claimer = claimer
        #: the stall sweep (``sync.recovery``), run every ``sweep_every_s`` seconds
        self.sweep = sweep
        self.sweep_every_s = sweep_every_s
        self._next_sweep = clock()
        self.send = send
        self.batch = batch
        self.lease_s = lease_s
        self.max_idle_s = max_idle_s
        self.clock = clock
        self.sent_total = 0
        self._counts = {"sent": 0, "after lapsed lease": 0, "failed": 0}
        self._last_summary = clock()

    def run_once(self) -> tuple[int, int]:
        """One round: (sent, failed). An unsent entry stays claimed until its lease ends."""
        sent = failed = redelivered = 0
        claimed = self.delayed.claim_due(
            limit=self.batch, lease_s=self.lease_s, claimer=self.claimer
        )
        for parked in claimed:
            try:
                self.send(parked)
            except Exception as exc:  # noqa: BLE001 - the broker is away: the lease brings it back
                failed += 1
                log.warning(
                    "could not send parked %s (%s): %s",
                    parked.task_name,
                    parked.id,
                    type(exc).__name__,
                )
                continue
            self.delayed.release(parked.id)
            sent += 1
            redelivered += parked.claims > 1
        self.sent_total += sent
        for name, n in (("sent", sent), ("after lapsed lease", redelivered), ("failed", failed)):
            self._counts[name] += n
        if self.clock() - self._last_summary >= SUMMARY_EVERY_S:
            self.log_summary()
        if self.sweep is not None and self.clock() >= self._next_sweep:
            self._next_sweep = self.clock() + self.sweep_every_s
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - Redis or the broker away: the next sweep tries again
                log.warning(
                    "stall sweep failed (%s); next in %.0f s",
                    type(exc).__name__,
                    self.sweep_every_s,
                )
        return sent, failed

    def log_summary(self) -> None:
        """Counts since the last summary, and what is still parked."""
        if any(self._counts.values()):
            counts = ", ".join(f"{n} {name}" for name, n in self._counts.items())
            log.info("parked tasks: %s; %d still parked", counts, self.delayed.size())
        self._counts = dict.fromkeys(self._counts, 0)
        self._last_summary = self.clock()

    def idle_wait(self) -> float:
        """Seconds to wait before the next round: until the next due entry, capped."""
        next_due = self.delayed.next_due()
        if next_due is None:
            return self.max_idle_s
        return min(self.max_idle_s, max(0.0, next_due - self.clock()))

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler started (batch %d, lease %.0f s)", self.batch, self.lease_s)
        while not stop.is_set():
            try:
                sent, failed = self.run_once()
                if failed:
                    wait = ERROR_PAUSE_S
                elif sent >= self.batch:
                    wait = 0.0  # more may be due right now
                else:
                    wait = self.idle_wait()
            except redis.RedisError as exc:
                log.warning("redis unavailable (%s); retrying", type(exc).__name__)
                wait = ERROR_PAUSE_S
            if wait > 0:
                stop.wait(wait)
        try:
            self.log_summary()
        except redis.RedisError:
            pass
        log.info("scheduler stopped after sending %d parked tasks", self.sent_total)


def run_scheduler(delayed: DelayedSet, send: Send, stop: threading.Event, **options) -> None:
    """Run a ``SchedulerLoop`` until ``stop`` is set (tests drive it this way)."""
    SchedulerLoop(delayed, send, **options).run(stop)


def load_app(spec: str):
    """``module:attribute`` -> the Celery app object."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "celery_app")


def delayed_set_for(celery_app, redis_url: str | None, key_prefix: str | None) -> DelayedSet:
    """The delayed set the workers park into.

    The service's own Celery app carries its services (built from the
    settings), which hold the delayed set; other apps (tests) name the Redis
    URL and prefix as options.
    """
    services = getattr(celery_app, "netsync_services", None)
    if services is not None and not redis_url and not key_prefix:
        return services.delayed
    if not redis_url:
        raise SystemExit("scheduler: this app carries no netsync services; give --redis-url")
    return DelayedSet(redis.Redis.from_url(redis_url), key_prefix or "netsync")


def service_sweep(celery_app) -> Callable[[], None]:
    """The periodic work of the service's own scheduler: the stall sweep, then the spend
    ledger's copy (``sync.ledger``), each whatever the other did."""
    from sync import ledger
    from sync.recovery import sweeper_for

    sweeper, svc = sweeper_for(celery_app), celery_app.netsync_services

    def sweep() -> None:
        try:
            sweeper.sweep()
        finally:
            ledger.flush_days(svc)

    return sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync.scheduler", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--app", default=DEFAULT_APP, help="Celery app, module:attribute")
    parser.add_argument("--redis-url", help="Redis holding the delayed set (default: the app's)")
    parser.add_argument("--key-prefix", help="key prefix of the delayed set (default: the app's)")
    parser.add_argument("--batch", type=int, default=100, help="entries claimed per round")
    parser.add_argument("--lease", type=float, default=30.0, help="seconds a claim holds an entry")
    parser.add_argument("--idle", type=float, default=MAX_IDLE_S, help="longest idle wait, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    celery_app = load_app(args.app)
    delayed = delayed_set_for(celery_app, args.redis_url, args.key_prefix)
    sweep_options, lost_workers = {}, None
    if getattr(celery_app, "netsync_services", None) is not None:
        from sync.lost_workers import every, lost_worker_sweep_for

        settings = celery_app.netsync_services.settings
        lost_workers = lost_worker_sweep_for(celery_app)
        # the stall sweep and the spend ledger every SWEEP_INTERVAL_SECONDS; lost workers
        # every beat
        sweep_options = {
            "sweep": every(
                [
                    (service_sweep(celery_app), settings.sweep_interval),
                    (lost_workers.sweep, settings.worker_beat_seconds),
                ]
            ),
            "sweep_every_s": settings.worker_beat_seconds,
            # this process beats like a worker and names itself in its claims
            "claimer": lost_workers.holder,
        }
        beat = lost_workers.beat()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_scheduler(
        delayed,
        celery_sender(celery_app),
        stop,
        batch=args.batch,
        lease_s=args.lease,
        max_idle_s=args.idle,
        **sweep_options,
    )
    if lost_workers is not None:
        with contextlib.suppress(redis.RedisError):
            lost_workers.stop()  # the other scheduler, if any, sweeps at once
        beat.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
