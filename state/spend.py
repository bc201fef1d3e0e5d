"""Spend is a quota: a daily budget per provider that no number of workers can pass.

Since 2026 X bills $0.010 per follower returned: a 10k-follower re-sync costs
about $100, so a sync must not be able to spend without bound. Each provider
may have a price per resource (``PRICE_<PROVIDER>``, defaulting to its
class's ``PRICE_USD``) and a budget per UTC day (``BUDGET_<PROVIDER>``,
``state.spend_settings``).

How. Before a call, ``reserve`` its worst case (the most resources one call
may return × the price) in the provider's day hash in Redis
(``P:spend:{provider:YYYY-MM-DD}``); one script checks ``spent + reserved +
worst ≤ budget`` and adds the reservation, so two workers can never both
take the last dollars. A call that can ask for fewer resources (X's
``max_results``) reserves what the budget has left when that is less than a
full page, in whole resources, and asks for no more (so a $5 budget still
reads 499 followers of X's 1,000-a-page, not none). A refused call waits for
the next UTC day (its sync stays running, ``waiting_for: spend_budget``). On the answer, ``settle``
releases the reservation and adds what was billed (never more than reserved
for a provider that bills per resource returned: a page holds at most
``page size`` of them). A worker that dies mid-call leaves its reservation
held until the day ends: the budget may be under-used, never passed.

The day hash also counts calls, counted calls (those that used the
provider's quota), ``not_modified`` answers and resources: the figures of the
ledger, the dashboard and ``/metrics``. Amounts are integer micro-dollars
(rounded up), so sums are exact.

The ledger (``SpendLedger``, table ``spend_ledger``) is the durable copy,
one row per provider and UTC day. Every column only grows and a write
upserts the larger of what the row and the writer hold, so writes in any
order, from any process, agree (``record``; ``settle``'s totals make a
write-through cheap). If Redis loses a day (a restart without its
append-only file), the next reservation finds the day unseeded and starts it
from the ledger, so the budget survives with at most the spend not yet
written.

Scripts: ``state/lua/spend_{reserve,settle}.lua``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import time
import uuid
from dataclasses import dataclass

from state.keys import Keys
from state.lua import LuaScript

MICRO = 1_000_000
#: a day's hash outlives its day by this much (late settles, the dashboard's yesterday)
DAY_TTL_S = 3 * 86400
#: refused only because of reservations still open: look again this soon (they
#: settle at their calls' answers, most for less than their worst case)
HELD_POLL_S = 1.0
_SEED_FIELDS = ("spent", "calls", "counted", "not_modified", "resources")


def to_micro(usd: float) -> int:
    """USD as whole micro-dollars, rounded up (a budget is never under-counted)."""
    return math.ceil(round(usd * MICRO, 6))


def utc_day(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).date().isoformat()


def next_utc_midnight(moment: float) -> float:
    today = datetime.datetime.fromtimestamp(moment, datetime.UTC).date()
    tomorrow = today + datetime.timedelta(days=1)
    return datetime.datetime.combine(tomorrow, datetime.time(), datetime.UTC).timestamp()


@dataclass(frozen=True)
class DayTotals:
    """One provider's UTC day: what was spent, is reserved, and how calls counted."""

    provider: str
    day: str
    spent_micro: int = 0
    reserved_micro: int = 0
    calls: int = 0
    counted_calls: int = 0
    not_modified: int = 0
    resources: int = 0

    @property
    def spent_usd(self) -> float:
        return self.spent_micro / MICRO

    @property
    def reserved_usd(self) -> float:
        return self.reserved_micro / MICRO

    @classmethod
    def from_fields(cls, provider: str, day: str, fields: dict) -> DayTotals:
        def get(name):
            value = fields.get(name, 0)
            return int(value.decode() if isinstance(value, bytes) else value or 0)

        return cls(
            provider,
            day,
            get("spent"),
            get("reserved"),
            get("calls"),
            get("counted"),
            get("not_modified"),
            get("resources"),
        )


@dataclass(frozen=True)
class Reservation:
    """A call's worst case held against its provider's day (``granted``), or a refusal."""

    provider: str
    day: str
    #: None when nothing needed reserving (a free provider, or no budget)
    reservation_id: str | None
    #: micro-USD held (granted: at most the call's worst case; refused: what it needed)
    worst_micro: int = 0
    #: seconds until the budget may allow it (the next UTC day); 0 when granted
    wait_s: float = 0.0
    #: the call's worst case alone is more than a whole day's budget
    never: bool = False

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0


class SpendBook:
    """Reservations and day totals in Redis, seeded from the ledger (see the module doc)."""

    def __init__(self, redis_client, key_prefix: str, clock=time.time, ledger=None):
        self.redis = redis_client
        self.keys = Keys(key_prefix)
        self.clock = clock
        self.ledger = ledger
        self._reserve = LuaScript(redis_client, "spend_reserve")
        self._settle = LuaScript(redis_client, "spend_settle")

    def reserve(
        self,
        provider: str,
        worst_usd: float,
        budget_usd: float | None,
        *,
        least_usd: float | None = None,
        unit_usd: float | None = None,
    ) -> Reservation:
        """Hold ``worst_usd`` for one call, or say how long to wait (the next UTC day).

        A call that can ask the provider for fewer resources (X's ``max_results``)
        gives ``least_usd`` (one resource) and ``unit_usd`` (the price of one):
        when the day's budget left holds less than the worst case, the
        reservation is what it holds, in whole resources (``worst_micro`` says
        how much), so a budget smaller than one full page still buys a page.
        """
        now = self.clock()
        day = utc_day(now)
        worst = to_micro(worst_usd)
        least = worst if least_usd is None else min(worst, to_micro(least_usd))
        unit = max(1, to_micro(unit_usd)) if unit_usd else max(1, worst)
        budget = None if budget_usd is None else math.floor(round(budget_usd * MICRO, 6))
        reservation_id = uuid.uuid4().hex
        args = {
            "reservation": reservation_id,
            "worst": worst,
            "least": least,
            "unit": unit,
            "budget": budget,
            "seed": None,
            "ttl": DAY_TTL_S,
        }
        keys = {"day": self.keys.spend_day(provider, day)}
        reply = self._reserve(keys=keys, args=args)
        if _s(reply[1]) == "unseeded":
            reply = self._reserve(keys=keys, args={**args, "seed": self._seed(provider, day)})
        if int(reply[0]):
            return Reservation(provider, day, reservation_id, int(_s(reply[1])))
        if _s(reply[1]) == "held":
            return Reservation(provider, day, None, least, wait_s=HELD_POLL_S)
        wait = max(next_utc_midnight(now) - now, 1e-3)
        never = budget is not None and least > budget
        return Reservation(provider, day, None, least, wait_s=wait, never=never)

    def _seed(self, provider: str, day: str) -> dict:
        """What the ledger holds for the day (zeros without a ledger or a row)."""
        found = self.ledger.read(provider, day) if self.ledger is not None else None
        if found is None:
            return dict.fromkeys(_SEED_FIELDS, 0)
        return {
            "spent": found.spent_micro,
            "calls": found.calls,
            "counted": found.counted_calls,
            "not_modified": found.not_modified,
            "resources": found.resources,
        }

    def settle(
        self,
        reservation: Reservation | None,
        provider: str,
        billed_usd: float = 0.0,
        *,
        sent: bool = True,
        counted: bool = True,
        not_modified: bool = False,
        resources: int = 0,
        batch=None,
    ):
        """Release ``reservation`` (if any) and count the call; returns the day's ``DayTotals``.

        The day is the reservation's (a call out across midnight is billed to
        the day it was reserved in). With ``batch``: queued there, its
        ``Reply`` returned.
        """
        held = reservation is not None and reservation.granted
        day = reservation.day if held else utc_day(self.clock())
        args = {
            "reservation": reservation.reservation_id if held else None,
            "billed": to_micro(billed_usd),
            "calls": int(sent),
            "counted": int(sent and counted),
            "not_modified": int(not_modified),
            "resources": int(resources),
            "ttl": DAY_TTL_S,
        }
        keys = {"day": self.keys.spend_day(provider, day)}

        def read(reply) -> DayTotals:
            return DayTotals.from_fields(provider, day, json.loads(_s(reply)))

        if batch is not None:
            return self._settle.queue(batch, keys=keys, args=args, read=read)
        return read(self._settle(keys=keys, args=args))

    def totals(self, provider: str, day: str | None = None) -> DayTotals:
        """A provider's day as Redis holds it (today by default)."""
        return self.totals_of([provider], day)[0]

    def totals_of(self, providers, day: str | None = None) -> list[DayTotals]:
        """Several providers' day (today by default), in one round trip."""
        day = day or utc_day(self.clock())
        with self.redis.pipeline(transaction=False) as pipe:
            for provider in providers:
                pipe.hgetall(self.keys.spend_day(provider, day))
            found = pipe.execute()
        return [
            DayTotals.from_fields(provider, day, _decoded(raw))
            for provider, raw in zip(providers, found)
        ]

    def flush(self, providers, day: str | None = None) -> list[DayTotals]:
        """Write these providers' day (today by default) to the ledger; returns what was written."""
        if self.ledger is None:
            return []
        written = [totals for totals in self.totals_of(providers, day) if totals.calls]
        for totals in written:
            self.ledger.record(totals)
        return written


class SpendLedger:
    """The ``spend_ledger`` table: one row per provider and UTC day, columns only grow.

    ``pool``: a psycopg ``ConnectionPool``; ``of(networks)`` follows a
    ``state.networks.NetworkStore``'s pool, one per process (fork-safe).
    """

    def __init__(self, pool):
        self._pool = lambda: pool

    @classmethod
    def of(cls, networks) -> SpendLedger:
        ledger = cls(None)
        ledger._pool = lambda: networks.pool
        return ledger

    @property
    def pool(self):
        return self._pool()

    def record(self, totals: DayTotals) -> None:
        """Upsert the larger of each figure (idempotent, order-free)."""
        usd = decimal.Decimal(totals.spent_micro) / MICRO
        with self.pool.connection() as conn:
            conn.execute(
                """
                INSERT INTO spend_ledger AS l
                    (day, provider, calls, counted_calls, not_modified, resources, usd)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (day, provider) DO UPDATE SET
                    calls = GREATEST(l.calls, EXCLUDED.calls),
                    counted_calls = GREATEST(l.counted_calls, EXCLUDED.counted_calls),
                    not_modified = GREATEST(l.not_modified, EXCLUDED.not_modified),
                    resources = GREATEST(l.resources, EXCLUDED.resources),
                    usd = GREATEST(l.usd, EXCLUDED.usd),
                    updated_at = now()
                """,
                (
                    totals.day,
                    totals.provider,
                    totals.calls,
                    totals.counted_calls,
                    totals.not_modified,
                    totals.resources,
                    usd,
                ),
            )

    def read(self, provider: str, day: str) -> DayTotals | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT calls, counted_calls, not_modified, resources, usd"
                " FROM spend_ledger WHERE day = %s AND provider = %s",
                (day, provider),
            ).fetchone()
        if row is None:
            return None
        calls, counted, not_modified, resources, usd = row
        spent = int((decimal.Decimal(usd) * MICRO).to_integral_value(decimal.ROUND_CEILING))
        return DayTotals(provider, day, spent, 0, calls, counted, not_modified, resources)


def _decoded(raw: dict) -> dict:
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
