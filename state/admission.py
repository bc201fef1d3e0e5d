"""One gate before every outbound call, and one step after its answer.

The task layer asks ``CallGate.before`` whether a call may go now. It may
when (1) the provider's spend budget for the UTC day holds the call's worst
case (``state.spend``), (2) a place is free under the provider's cap on
concurrent calls (``state.concurrency``), and (3) every announced rule that
applies to the call has room (``state.announced``); else nothing is held
and the answer is how long to park the task and why: ``spend_budget``,
``concurrency`` or ``quota``. The cheapest refusal to undo comes first: a
call parked until tomorrow for its budget touches no quota.

After the answer (or a failure to get one), ``CallGate.after`` accounts the
call where it may have landed and applies what its headers announced, gives
the concurrency place back, and settles the spend with what was billed. It
returns the call's ``CallCost`` (for the sync's ``cost``), the headers as
read (unreadable ones listed for a metric, never raised) and the rules the
report corrected. ``abandon`` gives everything back for a call granted and
then not sent.

Providers that announce no limits (Facebook's usage percentages, LinkedIn's
silence) keep the configured, adaptive ``state.quota`` gate for step (3).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.announced import AnswerReport
from providers.provider import HttpCall, Provider
from state.announced import (
    DEFAULT_MAX_MARGIN_S,
    RESET_SKEW_S,
    AnnouncedGate,
    AnnouncedGrant,
    BoundRules,
    Caller,
    scope_key,
)
from state.concurrency import ConcurrencyCap, Lease
from state.spend import MICRO, DayTotals, Reservation, SpendBook, to_micro
from state.spend_settings import SpendSettings

#: why a call waits (the sync record's ``waiting_for``)
QUOTA, SPEND_BUDGET, CONCURRENCY = "quota", "spend_budget", "concurrency"

#: a sync record's cost fields, in ``CallCost``'s order (``SyncStore.add_cost`` adds to them)
COST_FIELDS = (
    "cost_calls",
    "cost_counted_calls",
    "cost_not_modified",
    "cost_resources",
    "cost_usd_micro",
)


@dataclass(frozen=True)
class CallCost:
    """What calls cost a sync (CONTRACT ``cost``): added up call by call."""

    calls: int = 0
    counted_calls: int = 0
    not_modified: int = 0
    resources: int = 0
    usd_micro: int = 0

    @property
    def usd(self) -> float:
        return self.usd_micro / MICRO

    def __add__(self, other: CallCost) -> CallCost:
        return CallCost(
            self.calls + other.calls,
            self.counted_calls + other.counted_calls,
            self.not_modified + other.not_modified,
            self.resources + other.resources,
            self.usd_micro + other.usd_micro,
        )

    def as_increments(self) -> dict:
        """Integer fields to add to a sync record (``HINCRBY``)."""
        return dict(
            zip(
                COST_FIELDS,
                (
                    self.calls,
                    self.counted_calls,
                    self.not_modified,
                    self.resources,
                    self.usd_micro,
                ),
            )
        )

    @classmethod
    def from_record(cls, record: dict) -> CallCost:
        """What a sync record's cost fields add up to (zeros where none were added)."""

        def get(name: str) -> int:
            try:
                return int(record.get(name) or 0)
            except (TypeError, ValueError):
                return 0

        return cls(*(get(name) for name in COST_FIELDS))

    def as_view(self) -> dict:
        """CONTRACT's ``cost``: ``calls``, ``counted_calls``, ``not_modified``, ``resources``, ``usd``."""
        return {
            "calls": self.calls,
            "counted_calls": self.counted_calls,
            "not_modified": self.not_modified,
            "resources": self.resources,
            "usd": round(self.usd, 6),
        }


@dataclass(frozen=True)
class Admission:
    """``before``'s answer: granted (and what ``after`` must settle), or a wait and its reason."""

    provider: Provider
    wait_s: float
    reason: str | None = None
    bound: BoundRules | None = None
    grant: AnnouncedGrant | None = None
    lease: Lease | None = None
    reservation: Reservation | None = None
    #: USD per resource this call is billed at
    price: float = 0.0
    #: the spend budget can never allow this call (its worst case exceeds a day's budget)
    never: bool = False
    #: the most resources the call may ask for (the spend budget held less than its
    #: worst case: the task asks the provider for this many, ``Provider.sized``);
    #: None: as many as it asks for
    most_resources: int | None = None

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0


@dataclass(frozen=True)
class Prefetch:
    """``CallGate.queue_before``'s steps, for the call they were sent for."""

    provider: Provider
    call: HttpCall
    caller: Caller
    queue_class: str
    kind: str
    #: the ``Reply`` of the concurrency lease (a ``Lease``), or None
    lease: object
    bound: BoundRules | None
    #: the ``Reply`` of the announced take (an ``AnnouncedGrant``), or None
    take: object

    def fits(self, call: HttpCall, caller: Caller, queue_class: str, kind: str) -> bool:
        """Whether it was sent for this very call, caller, class and kind."""
        return (call, caller, queue_class, kind) == (
            self.call,
            self.caller,
            self.queue_class,
            self.kind,
        )


@dataclass(frozen=True)
class CallOutcome:
    """``after``'s answer."""

    cost: CallCost
    report: AnswerReport = field(default_factory=AnswerReport)
    #: ids of the announced rules the headers corrected (a ``Reply`` when batched)
    applied: object = ()
    #: the provider's day after this call (a ``Reply`` when batched; None: not counted)
    day: object = None


class CallGate:
    """Spend, concurrency and announced limits for every outbound call (see the module doc)."""

    def __init__(
        self,
        redis_client,
        key_prefix: str,
        spend: SpendSettings,
        *,
        clock=time.time,
        ledger=None,
        shares: Mapping[str, Mapping[str, float]] | None = None,
        max_margin_s: float = DEFAULT_MAX_MARGIN_S,
        skew_s: float = RESET_SKEW_S,
        windows: Mapping[str, Mapping[int, float]] | None = None,
    ):
        self.clock = clock
        self.settings = spend
        self.announced = AnnouncedGate(
            redis_client,
            key_prefix,
            clock,
            shares=shares,
            max_margin_s=max_margin_s,
            skew_s=skew_s,
            windows=windows,
        )
        self.leases = ConcurrencyCap(redis_client, key_prefix, clock, ttl_s=max_margin_s + 2)
        self.spend = SpendBook(redis_client, key_prefix, clock, ledger)

    def before(
        self,
        provider: Provider,
        call: HttpCall,
        caller: Caller,
        queue_class: str = "normal",
        kind: str = "page",
    ) -> Admission:
        """May ``call`` go now? Granted, holding what ``after`` settles; else the wait and why.

        ``kind``: ``profile`` or ``page`` (how many resources it may be billed).
        A call the provider lets ask for fewer resources (``Provider.sized``)
        is granted what the day's budget has left when that is less than its
        worst case: ``most_resources`` says how many to ask for.
        """
        name, price = provider.NAME, self.settings.price(provider.NAME)
        budget = self.settings.budget(name)
        reservation, most = None, None
        if price > 0 and budget is not None:
            reservation = self._reserve(provider, call, kind, price, budget)
            if not reservation.granted:
                return Admission(
                    provider, reservation.wait_s, SPEND_BUDGET, never=reservation.never
                )
            most = _most_resources(provider, kind, reservation, price)
        lease = None
        if provider.CONCURRENCY_CAP is not None:
            key = scope_key("account", provider, call, caller)  # per provider account
            lease = self.leases.acquire(name, key, provider.CONCURRENCY_CAP)
            if not lease.granted:
                self._release_spend(provider, reservation)
                return Admission(provider, lease.wait_s, CONCURRENCY)
        bound = self.announced.bind(provider, call, caller)
        grant = self.announced.take(bound, queue_class) if bound is not None else None
        if grant is not None and not grant.granted:
            self._release_spend(provider, reservation)
            if lease is not None:
                self.leases.release(lease)
            return Admission(provider, grant.wait_s, QUOTA, bound)
        return Admission(provider, 0.0, None, bound, grant, lease, reservation, price, False, most)

    def _reserve(self, provider: Provider, call: HttpCall, kind: str, price: float, budget):
        worst = provider.worst_resources(kind)
        least = 1 if worst > 1 and provider.sized(call, 1) is not None else worst
        return self.spend.reserve(
            provider.NAME, worst * price, budget, least_usd=least * price, unit_usd=price
        )

    def after(
        self,
        admission: Admission,
        headers=None,
        *,
        resources: int = 0,
        not_modified: bool = False,
        sent: bool = True,
        answered: bool = True,
        ok: bool = False,
        batch=None,
    ) -> CallOutcome:
        """The granted call was answered (``headers``), or failed without one, or (``sent``
        False) was never sent: account it and give back what it held.

        ``resources``: items billed (a page's items; 1 for a profile). ``not_modified``:
        a conditional answer (304). ``answered=False`` (a timeout): billed at its worst
        case. ``ok``: a success (a probe's that announces nothing quiets its rules).
        With ``batch``: queued there (send it soon).
        """
        provider, now = admission.provider, self.clock()
        report = provider.announced(headers, now) if headers is not None else AnswerReport()
        counted = sent and not (not_modified and provider.NOT_MODIFIED_IS_FREE)
        billed = _billed(admission, resources, sent, answered)
        cost = CallCost(
            int(sent), int(counted), int(sent and not_modified), resources * sent, to_micro(billed)
        )
        applied: object = ()
        if admission.bound is not None:
            applied = self.announced.answer(
                admission.bound, admission.grant, report, counted=counted, batch=batch, ok=ok
            )
        if admission.lease is not None:
            self.leases.release(admission.lease, batch=batch)
        day = self.spend.settle(
            admission.reservation,
            provider.NAME,
            billed,
            sent=sent,
            counted=counted,
            not_modified=bool(cost.not_modified),
            resources=cost.resources,
            batch=batch,
        )
        return CallOutcome(cost, report, applied, day)

    # -- sent ahead: the lease and the announced take in the task's first round trip ---------
    def queue_before(
        self,
        batch,
        provider: Provider,
        call: HttpCall,
        caller: Caller,
        queue_class: str = "normal",
        kind: str = "page",
    ) -> Prefetch | None:
        """``before``'s concurrency lease and announced take, as steps of ``batch``.

        For a task that sends them with its other reads before it knows it will
        call (``sync.context.load``): ``resolve`` makes the ``Admission`` (giving
        back what a later step's refusal makes useless), ``release`` gives all
        back. None when there is nothing to send ahead, or when the spend budget
        must be asked first (a priced provider with a budget: its refusal touches
        no quota).
        """
        if (
            self.settings.price(provider.NAME) > 0
            and self.settings.budget(provider.NAME) is not None
        ):
            return None
        lease = None
        if provider.CONCURRENCY_CAP is not None:
            key = scope_key("account", provider, call, caller)
            lease = self.leases.queue_acquire(batch, provider.NAME, key, provider.CONCURRENCY_CAP)
        bound = self.announced.bind(provider, call, caller)
        take = self.announced.queue_take(batch, bound, queue_class) if bound is not None else None
        if lease is None and take is None:
            return None
        return Prefetch(provider, call, caller, queue_class, kind, lease, bound, take)

    def resolve(self, ahead: Prefetch) -> Admission:
        """The ``Admission`` of a ``queue_before`` whose batch was executed."""
        lease = ahead.lease.value if ahead.lease is not None else None
        grant = ahead.take.value if ahead.take is not None else None
        provider, price = ahead.provider, self.settings.price(ahead.provider.NAME)
        if lease is not None and not lease.granted:
            if grant is not None and grant.granted:
                self.announced.answer(ahead.bound, grant, counted=False)
            return Admission(provider, lease.wait_s, CONCURRENCY)
        if grant is not None and not grant.granted:
            if lease is not None:
                self.leases.release(lease)
            return Admission(provider, grant.wait_s, QUOTA, ahead.bound)
        return Admission(provider, 0.0, None, ahead.bound, grant, lease, None, price)

    def release(self, ahead: Prefetch) -> None:
        """Give back a ``queue_before`` no call used."""
        self.abandon(self.resolve(ahead))

    def abandon(self, admission: Admission) -> None:
        """A granted call that will not be sent: give back all it held."""
        if admission.granted:
            self.after(admission, sent=False)

    def _release_spend(self, provider: Provider, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.spend.settle(reservation, provider.NAME, sent=False)

    def day(self, provider: str, day: str | None = None) -> DayTotals:
        """A provider's spend and calls today (or ``day``), for the dashboard and ``/metrics``."""
        return self.spend.totals(provider, day)

    def days(self, providers, day: str | None = None) -> list[DayTotals]:
        """``day`` of several providers, in one round trip."""
        return self.spend.totals_of(providers, day)


def _most_resources(provider: Provider, kind: str, reservation: Reservation, price: float):
    """How many resources the reservation pays for, when fewer than the call's worst case."""
    if reservation.reservation_id is None:
        return None
    most = int(reservation.worst_micro // max(1, to_micro(price)))
    return most if most < provider.worst_resources(kind) else None


def _billed(admission: Admission, resources: int, sent: bool, answered: bool) -> float:
    """USD a call was billed: its resources × price; without an answer (the provider
    may have billed a full page), its worst case; never sent, nothing."""
    if not sent:
        return 0.0
    if not answered and admission.reservation is not None:
        return admission.reservation.worst_micro / MICRO
    return resources * admission.price
