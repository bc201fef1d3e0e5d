"""What every netsync task reaches: the services its Celery app carries.

The service layer builds one ``Services`` per process from its settings and
hangs it on the Celery app (``celery_app.netsync_services``); tasks read it
from there, so the engine needs neither Flask nor an app context, and a
task never imports the layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Task

from state.admission import CallGate
from state.breaker import CircuitBreaker
from state.control import ProviderSwitches
from state.credentials import CredentialStore
from state.delayed import DelayedSet
from state.metrics import Metrics
from state.networks import NetworkStore
from state.outbox import CallbackOutbox
from state.progress import SyncProgress
from state.quota import QuotaGate
from state.spend import SpendLedger
from state.store import SyncStore
from sync import telemetry
from sync.memory import WorkerMemory


@dataclass
class Services:
    #: ``service.config.Settings``; the engine only reads its attributes
    settings: Any
    redis_url: str
    redis: Any
    store: SyncStore
    credentials: CredentialStore
    quota: QuotaGate
    delayed: DelayedSet
    metrics: Metrics
    #: operators' kill switches (paused providers)
    switches: ProviderSwitches
    #: completion events until delivered (``state.outbox``)
    outbox: CallbackOutbox
    #: what the stall sweep watches (``sync.recovery``)
    progress: SyncProgress
    #: one circuit breaker per provider, shared by every worker
    breaker: CircuitBreaker
    #: the networks, linked accounts and change feed (PostgreSQL)
    networks: NetworkStore
    #: spend, concurrency and announced limits before every call (``state.admission``)
    gate: CallGate | None = None
    #: the spend ledger in PostgreSQL (``state.spend``): the durable copy of each day
    ledger: SpendLedger | None = None
    database_url: str = ""
    #: what this process' tasks remember from one run to the next (bounded)
    memory: WorkerMemory = field(default_factory=WorkerMemory)


class NetsyncTask(Task):
    """The base of every netsync task (a task object is shared: no per-request state)."""

    #: a worker that dies mid-task gives the message back (every task is idempotent)
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    @property
    def services(self) -> Services:
        return self.app.netsync_services

    def after_return(self, *args, **kwargs):
        # the next task on this thread starts with no sync's log context
        telemetry.clear()
