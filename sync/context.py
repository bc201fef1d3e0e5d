"""What one task run knows about its sync: a ``SyncContext``, made per run by ``load``.

A Celery task object is shared by every run of its kind, so nothing about
one sync lives on it: the run's record, provider, credential, the counters
its message carried (``Tries``), and what its one call leaves for later
(the rate fields, a quota take sent ahead, the lessons for Redis) live on
the context, which lives as long as the run. What outlives a run in this
process is in ``sync.memory.WorkerMemory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import queues
from providers import pagination
from providers.provider import HttpCall, Provider
from state.admission import Admission, Prefetch
from state.announced import Caller
from state.batch import Batch
from state.quota import scope_keys
from state.store import ACTIVE
from sync import instances, telemetry
from sync.modes import split_head


@dataclass(frozen=True)
class Tries:
    """The counters a task's message carries (its kwargs): what this call went through."""

    #: BACKOFF retries so far
    attempt: int = 0
    #: WAITs so far (a provider wait with no reset time doubles with each)
    waits: int = 0
    #: 1 once the token was refreshed for this call (a second refusal is REAUTH)
    refreshed: int = 0
    #: times the pagination restarted (a page task's; the cursor's generation rules)
    restarts: int = 0
    #: when this call started failing (BACKOFF or an open circuit); 0: it has not
    failing_since: float = 0.0

    @property
    def first(self) -> bool:
        """The call's first go (neither retried nor re-sent after a refresh)."""
        return not self.attempt and not self.refreshed


#: the counters of a message that went through nothing yet
FIRST_TRY = Tries()


class SyncContext:
    """What one task run knows about its sync (made per run: no state on the task)."""

    def __init__(
        self,
        svc,
        record: dict,
        provider: Provider,
        credential_blob=None,
        cursor: str | None = None,
        tries: Tries = FIRST_TRY,
    ):
        self.svc = svc
        self.record = record
        self.provider = provider
        self.sync_id = record["sync_id"]
        self.user_id = record["user_id"]
        self.account_id = record["account_id"]
        #: the direction of the network this sync fetches (a sync is one relation)
        self.relation = record.get("relation") or provider.RELATIONS[0]
        #: the page this run fetches (None: round one, the profile)
        self.cursor = cursor
        #: the counters the run's message carried
        self.tries = tries
        self._credential = None
        self._credential_blob = credential_blob
        #: what the last answer's rate-limit headers said, for the sync record
        self.rate_fields: dict = {}
        #: the breaker's verdict, peeked in the first round trip (a ``state.batch.Reply``)
        self.peeked_verdict = None
        #: the quota take of the call's first bucket, sent in the first round trip
        #: (``state.quota.Prefetched``): the call uses it, ``settle`` gives it back
        self.prefetched = None
        #: the gate's lease and announced take, sent in the first round trip
        #: (``state.admission.Prefetch``): the call uses it, ``settle`` gives it back
        self.admission_ahead: Prefetch | None = None
        #: the call asked for fewer items than a page: the spend budget left paid for no more
        self.sized_call = False
        #: the account's instance could not be found (``sync.instances``): the call fails
        #: with this instead of sending the token anywhere else
        self.instance_error = None
        #: what the call left to tell Redis (counters, the quota's lessons): sent with
        #: the page's storage (``state.batch.Batch``), or by ``settle``
        self.deferred: Batch | None = None

    @property
    def credential(self):
        if self._credential is None:
            if self._credential_blob is not None:
                self._credential = self.svc.credentials.decode(
                    self.provider.NAME, self._credential_blob
                )
            else:
                self._credential = self.svc.credentials.load(self.provider.NAME, self.user_id)
        return self._credential

    @property
    def queue_class(self) -> str:
        return self.record.get("queue") or "normal"

    @property
    def queue_name(self) -> str:
        return queues.queue_name(
            self.queue_class, self.provider.NAME, self.svc.settings.provider_regions
        )

    def priority(self, broker_url: str) -> int:
        return queues.priority_for(self.record.get("trigger", "api"), broker_url)

    def quota_scopes(self) -> dict:
        """The bucket key of each scope the provider's quota counts this call under."""
        return scope_keys(self.provider.quota_scopes(), self.credential.fingerprint())

    def caller(self) -> Caller:
        """Who the call counts against, as the provider counts (``state.announced``)."""
        return Caller(self.account_id, self.credential.fingerprint(), api_host(self.provider))

    def take_admission(self, call: HttpCall, kind: str) -> Admission | None:
        """The gate's admission sent ahead, if it was for this very call; else None
        (and what was sent ahead is given back). Remembers the caller either way, so
        this sync's next task in this process sends its admission ahead."""
        ahead, self.admission_ahead = self.admission_ahead, None
        caller = self.caller()
        self.svc.memory.remember_caller(self.sync_id, caller, self.queue_class)
        if ahead is None:
            return None
        if ahead.fits(call, caller, self.queue_class, kind):
            return self.svc.gate.resolve(ahead)
        self.svc.gate.release(ahead)
        return None

    def take_prefetched(self):
        first, self.prefetched = self.prefetched, None
        return first

    def take_deferred(self) -> Batch | None:
        batch, self.deferred = self.deferred, None
        return batch

    def settle(self) -> None:
        """Give back a prefetched quota take or admission no call used; send what the
        call deferred."""
        first = self.take_prefetched()
        if first is not None:
            self.svc.quota.release(first)
        ahead, self.admission_ahead = self.admission_ahead, None
        if ahead is not None:
            self.svc.gate.release(ahead)
        batch = self.take_deferred()
        if batch is not None:
            batch.execute()


def load(
    svc, provider: Provider, sync_id: str, cursor: str | None = None, tries: Tries = FIRST_TRY
) -> SyncContext | None:
    """The sync's context, or None when there is nothing (more) to do.

    One round trip (``state.batch``): the record (still active?), whether
    ``cursor`` was already stored (a redelivery), the encrypted credential,
    the provider's breaker verdict (peeked: a probe is claimed by the call)
    and, for a sync whose last call in this process named its quota scopes
    (``WorkerMemory.quota_hint``), the take of its first quota bucket, and for
    one whose last call named its caller (``WorkerMemory.caller_hint``), the
    gate's concurrency lease and announced take for this page's call
    (``CallGate.queue_before``): the call uses them if they were for it, its
    caller and queue class; ``SyncContext.settle`` gives back what no call
    used. The quota buckets and the gate's keys have hash tags of their own
    (``state.keys``), so the takes cannot join the sync's keys in one script;
    a pipeline may mix slots.
    """
    # A federated account's instance is in its credential, read in this round trip:
    # the breaker peek and the takes sent ahead use the instance this process saw
    # the sync call last (none the first time; a mismatch is given back below).
    called = svc.memory.sync_provider(sync_id) if provider.FEDERATED else provider
    batch = Batch(svc.redis)
    snapshot = svc.store.queue_snapshot(batch, sync_id, cursor)
    if snapshot is None:
        return None
    verdict = first = ahead = None
    if called is not None:
        verdict = svc.breaker.queue_peek(batch, called.scope_name)
        first = _queue_quota_take(svc, batch, called, sync_id)
        ahead = _queue_admission(svc, batch, called, sync_id, cursor)
    batch.execute()
    record, done, blob = snapshot.value
    if (
        record is None
        or record.get("status") not in ACTIVE
        or (done and not record.get("finalizing"))
    ):
        _give_back(svc, first, ahead)
        return None
    ctx = SyncContext(svc, record, provider, blob, cursor, tries)
    if provider.FEDERATED:
        ctx.provider = instances.provider_for(svc, provider, ctx)
        svc.memory.remember_sync_provider(sync_id, ctx.provider)
        if called is None or called.base_url != ctx.provider.base_url:
            _give_back(svc, first, ahead)
            verdict = first = ahead = None
    ctx.peeked_verdict, ctx.prefetched, ctx.admission_ahead = verdict, first, ahead
    telemetry.bind_sync(sync_id, provider.NAME, record.get("relation"), ctx.queue_class)
    return ctx


def _give_back(svc, first, ahead) -> None:
    if first is not None:
        svc.quota.release(first)
    if ahead is not None:
        svc.gate.release(ahead)


def _queue_quota_take(svc, batch: Batch, provider: Provider, sync_id: str):
    """The first bucket's take, queued in ``batch``, when this process may guess it."""
    hint = svc.memory.quota_hint(sync_id)
    if (
        hint is None
        or svc.memory.breaker_said_wait(provider.scope_name)
        or svc.switches.is_paused(provider.NAME, provider.instance)
    ):
        return None
    return svc.quota.queue_take_first(batch, provider.NAME, *hint)


def _queue_admission(svc, batch: Batch, provider: Provider, sync_id: str, cursor: str | None):
    """The gate's lease and announced take for the page's call, queued in ``batch``,
    when this process may guess its caller (a page of a sync it called for before)."""
    hint = svc.memory.caller_hint(sync_id)
    if (
        hint is None
        or cursor is None
        or svc.memory.breaker_said_wait(provider.scope_name)
        or svc.switches.is_paused(provider.NAME, provider.instance)
    ):
        return None
    # the provider's own cursor: without the restart generation and the head's size
    bare = split_head(pagination.split_generation(cursor)[1])[1]
    call = provider.page_call(hint.caller.account, bare)
    return svc.gate.queue_before(batch, provider, call, hint.caller, hint.queue_class, "page")


def api_host(provider: Provider) -> str:
    """The API a provider object calls, as the announced rules key it: host and base
    path (a Mastodon instance, a Bluesky PDS)."""
    parts = urlsplit(provider.base_url)
    return f"{parts.netloc}{parts.path}" or provider.NAME
