"""The spend ledger's write-through: each provider's UTC day, from Redis to PostgreSQL.

Every call counts into its provider's day hash in Redis (``state.spend``:
spent, calls, counted calls, ``304``s, billed resources); the ledger
(``SpendLedger``, table ``spend_ledger``) is its durable copy, which seeds a
day Redis lost. The scheduler copies every provider's day with its stall
sweep (``sync.scheduler``, every ``SWEEP_INTERVAL_SECONDS``), and in the
first sweeps of a UTC day yesterday's last figures too. A write upserts the
larger of each figure, so several schedulers, or a late copy, agree.
"""

from __future__ import annotations

import logging
import time

import providers
from state.spend import next_utc_midnight, utc_day

log = logging.getLogger("netsync.ledger")

#: how long into a UTC day yesterday is still copied (its last calls settle late)
YESTERDAY_FOR_S = 300.0


def flush_days(svc, now: float | None = None) -> int:
    """Copy today's (and early in a day, yesterday's) figures of every provider; rows written."""
    if svc.ledger is None or svc.gate is None:
        return 0
    now = time.time() if now is None else now
    names = list(providers.names())
    days = [utc_day(now)]
    since_midnight = now - (next_utc_midnight(now) - 86400)
    if since_midnight < YESTERDAY_FOR_S:
        days.append(utc_day(now - 86400))
    written = sum(len(svc.gate.spend.flush(names, day)) for day in days)
    log.debug("spend ledger: %d provider day(s) written", written)
    return written
