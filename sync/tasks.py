"""The shared Celery task classes: round one (profile) and round two (pages).

One API call per task. A message carries primitives only (sync id, page
cursor, attempt counters); the task looks up the sync record and the
credential itself. Every provider's tasks are these classes with its
``Provider`` description plugged in; the error taxonomy
(``providers.errors``) decides what an error answer does.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time

import kombu.exceptions
import psycopg
import redis.exceptions
from celery.exceptions import Reject, SoftTimeLimitExceeded

import providers
import queues
from providers import pagination
from providers.errors import (
    TRANSPORT_ERROR,
    UNPARSEABLE,
    Action,
    ErrorRule,
    ProviderCallError,
    ProviderError,
)
from providers.provider import Provider
from state.batch import Batch
from state.control import PAUSED_REASON, provider_gate
from state.credentials import CredentialError
from state.page_guard import guard_args
from state.store import ACTIVE
from sync import callbacks, oauth, telemetry
from sync.finalize import finalize_sync
from sync.http import UnparseableAnswer, parsing
from sync.retry import backoff_delay, budget_spent, wait_delay
from sync.runtime import NetsyncTask

log = logging.getLogger("netsync.tasks")


class SyncContext:
    """What one task execution knows about its sync (built per call: no state on the task)."""

    def __init__(self, svc, record: dict, provider: Provider, credential_blob=None):
        self.svc = svc
        self.record = record
        self.provider = provider
        self.sync_id = record["sync_id"]
        self.user_id = record["user_id"]
        self.account_id = record["account_id"]
        #: the direction of the network this sync fetches (a sync is one relation)
        self.relation = record.get("relation") or provider.RELATIONS[0]
        self._credential = None
        self._credential_blob = credential_blob
        #: what the last answer's rate-limit headers said, for the sync record
        self.rate_fields: dict = {}
        #: the breaker's verdict, peeked in the first round trip (a ``state.batch.Reply``)
        self.peeked_verdict = None
        #: the quota take of the call's first bucket, sent in the first round trip
        #: (``state.quota.Prefetched``): ``call`` uses it, ``settle`` gives it back
        self.prefetched = None
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
        names = {"token": self.credential.fingerprint(), "app": "app", "ip": "egress"}
        return {scope: names[scope] for scope in self.provider.quota_scopes()}

    def take_prefetched(self):
        first, self.prefetched = self.prefetched, None
        return first

    def take_deferred(self) -> Batch | None:
        batch, self.deferred = self.deferred, None
        return batch

    def settle(self) -> None:
        """Give back a prefetched quota take no call used; send what the call deferred."""
        first = self.take_prefetched()
        if first is not None:
            self.svc.quota.release(first)
        batch = self.take_deferred()
        if batch is not None:
            batch.execute()


#: the kind a sync failed by our own bug ends with
INTERNAL_ERROR = ErrorRule(Action.FAIL, "internal_error")
#: a page delivered more than MAX_DELIVERIES times: each delivery killed its worker
POISON_PAGE = ErrorRule(Action.FAIL, "poison_page")
#: the provider's circuit is open (it kept failing) and the page's time budget is spent
CIRCUIT_OPEN = ErrorRule(Action.BACKOFF, "unavailable")

#: Redis (the state store) or the broker away: nothing about the page is
#: wrong, so its message goes back to the broker instead of being acked as failed
BACKEND_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    kombu.exceptions.OperationalError,
    psycopg.OperationalError,
)


class ProviderTask(NetsyncTask):
    """Behaviour shared by a provider's tasks; subclasses set ``provider_class``."""

    #: the provider this task talks to
    provider_class: type[Provider] = Provider
    #: round one: its call is the sync's first (trigger-to-first-call histogram)
    starts_sync: bool = False

    _providers: dict = {}
    #: sync id → (quota scopes, queue class) of its last call in this process: its
    #: next task here sends the quota take with its first round trip (``load``)
    _quota_hints: dict = {}
    #: provider → whether its breaker said "wait" at this process' last look
    _breaker_waiting: dict = {}

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except BACKEND_UNAVAILABLE as exc:
            # Not acked: the page is still pending in the store, and its message
            # goes back to the queue (on the Redis broker, if Redis is down, the
            # unacked message stays in its unacked hash; the stall sweep and the
            # visibility timeout bring it back).
            log.warning(
                "backend unavailable in task=%s (%s): message requeued",
                self.name,
                type(exc).__name__,
            )
            raise Reject(exc, requeue=True) from exc

    def provider(self, svc) -> Provider:
        """One Provider per process and base URL (it holds no per-request state)."""
        url = svc.settings.api_url(self.provider_class.NAME)
        key = (self.provider_class, url)
        if key not in self._providers:
            self._providers[key] = self.provider_class(url)
        return self._providers[key]

    def load(self, sync_id: str, cursor: str | None = None):
        """The sync's context, or None when there is nothing (more) to do.

        One round trip (``state.batch``): the record (still active?), whether
        ``cursor`` was already stored (a redelivery), the encrypted credential,
        the provider's breaker verdict (peeked: a probe is claimed by ``call``)
        and, for a sync whose last call in this process named its quota
        scopes, the take of its first quota bucket: ``call`` uses it if the
        scopes and queue class still hold; ``SyncContext.settle`` gives back
        what no call used. The quota buckets have hash tags of their own
        (``state.keys``), so the take cannot join the sync's keys in one
        script; a pipeline may mix slots.
        """
        svc = self.services
        provider = self.provider(svc)
        batch = Batch(svc.redis)
        snapshot = svc.store.queue_snapshot(batch, sync_id, cursor)
        if snapshot is None:
            return None
        verdict = svc.breaker.queue_peek(batch, provider.NAME)
        hint = self._quota_hints.get(sync_id)
        first = None
        if (
            hint is not None
            and not self._breaker_waiting.get(provider.NAME)
            and not svc.switches.is_paused(provider.NAME)
        ):
            first = svc.quota.queue_take_first(batch, provider.NAME, *hint)
        batch.execute()
        record, done, blob = snapshot.value
        if (
            record is None
            or record.get("status") not in ACTIVE
            or (done and not record.get("finalizing"))
        ):
            if first is not None:
                svc.quota.release(first)
            return None
        ctx = SyncContext(svc, record, provider, blob)
        ctx.peeked_verdict, ctx.prefetched = verdict, first
        telemetry.bind_sync(sync_id, ctx.provider.NAME, record.get("relation"), ctx.queue_class)
        return ctx

    def poisoned(self, ctx: SyncContext, cursor: str) -> bool:
        """A page that was delivered too often without finishing goes to the dead letters.

        Its worker died each time (a crash, an OOM kill, the hard time limit), so
        the broker handed it back (acks late). Only redeliveries are counted (the
        first delivery costs nothing); after ``MAX_DELIVERIES`` the page is parked
        in the dead-letter set and its sync ends ``failed``.
        """
        if not (self.request.delivery_info or {}).get("redelivered"):
            return False
        svc = ctx.svc
        deliveries = svc.progress.delivered_again(ctx.sync_id, cursor) + 1
        if deliveries <= svc.settings.max_deliveries:
            return False
        message = f"page delivered {deliveries} times and its worker died each time; dead-lettered"
        svc.progress.dead_letter(ctx.sync_id, cursor, self.name, deliveries, message)
        log.error(
            "poison page sync=%s task=%s deliveries=%d: dead-lettered",
            ctx.sync_id,
            self.name,
            deliveries,
        )
        self.end(ctx, "failed", ProviderError(POISON_PAGE, 0, message))
        return True

    # -- the one outbound call -----------------------------------------------------
    def call(self, ctx: SyncContext, http_call, park_args: list, park_kwargs: dict):
        """Take quota, make the call, classify the answer.

        Returns the answer, or None when the provider is paused or there was
        no quota, and the task was parked (a wait is not a retry attempt).
        """
        svc, provider = ctx.svc, ctx.provider
        paused = provider_gate(svc.switches, provider.NAME)  # an operator's kill switch
        if paused > 0:
            self.park(ctx, paused, PAUSED_REASON, park_args, park_kwargs)
            return None
        peeked, ctx.peeked_verdict = ctx.peeked_verdict, None
        verdict = peeked.value if peeked is not None else None
        if verdict is None or verdict.verdict == "probe_due":
            verdict = svc.breaker.allow(provider.NAME)  # claims the probe, if one is due
        self._breaker_waiting[provider.NAME] = not verdict.allowed
        if not verdict.allowed:
            return self.wait_for_circuit(ctx, verdict, park_args, park_kwargs)
        scopes = ctx.quota_scopes()
        self._remember_quota(ctx.sync_id, scopes, ctx.queue_class)
        grant = svc.quota.decide(
            provider.NAME, scopes, ctx.queue_class, first=ctx.take_prefetched()
        )
        if not grant.granted:
            self.park(ctx, grant.wait_s, "quota", park_args, park_kwargs)
            return None
        if self.starts_sync and not park_kwargs.get("attempt") and not park_kwargs.get("refreshed"):
            telemetry.observe_first_call(svc.metrics, ctx.record)
        settings = svc.settings
        try:
            try:
                answer = oauth.send(
                    ctx,
                    http_call,
                    provider.request_headers(),
                    (settings.http_connect_timeout, settings.http_read_timeout),
                )
            finally:
                # the provider received the call (if at all) by now: the quota
                # counts it from here, and learns its latency (QuotaGate.settle)
                svc.quota.settle(grant)
        except ProviderCallError as exc:  # no answer (timeout, connection refused)
            svc.breaker.record(
                provider.NAME, ok=exc.error.action is not Action.BACKOFF, kind=exc.error.rule.kind
            )
            raise
        with parsing("rate-limit headers"):
            info = provider.rate_info(answer.headers)
        ctx.rate_fields = info.as_record()
        with parsing("error answer"):
            error = provider.classify(answer.status, answer.body, answer.headers, time.time())
        # What the answer teaches goes with the page's storage (one round trip,
        # ``SyncContext.deferred``); an error answer's goes at once.
        deferred = Batch(svc.redis)
        if error is not None or worth_observing(info):
            told = provider.RATE_HEADER_SCOPES or tuple(scopes)
            svc.quota.observe(
                provider.NAME, {s: k for s, k in scopes.items() if s in told}, info, batch=deferred
            )
        svc.quota.record_outcome(
            provider.NAME,
            scopes,
            rejected=error is not None and error.action is Action.WAIT,
            batch=deferred,
        )
        telemetry.count_answer(
            svc.metrics,
            provider.NAME,
            ctx.queue_class,
            error,
            page=not self.starts_sync,
            batch=deferred,
        )
        failing = error is not None and error.action is Action.BACKOFF
        if failing or verdict.verdict != "closed":  # a clean breaker needs no news of success
            svc.breaker.record(
                provider.NAME, ok=not failing, kind=error.rule.kind if failing else ""
            )
        if error is not None:
            # A successful page counts its call when it is stored (one round trip).
            svc.store.note_call(ctx.sync_id, ctx.rate_fields, batch=deferred)
            deferred.execute()
            raise ProviderCallError(error)
        ctx.deferred = deferred
        return answer

    def _remember_quota(self, sync_id: str, scopes: dict, queue_class: str) -> None:
        hints = self._quota_hints
        if len(hints) > 10_000:
            hints.clear()
        hints[sync_id] = (scopes, queue_class)

    def _requeue_hint(self, sync_id: str, queue_class: str) -> None:
        """The sync moved to another queue class: its next take here is for that class."""
        hint = self._quota_hints.get(sync_id)
        if hint is not None:
            self._quota_hints[sync_id] = (hint[0], queue_class)

    def wait_for_circuit(self, ctx, verdict, park_args: list, park_kwargs: dict):
        """The provider's breaker is open: park (not an attempt) unless the time budget is spent."""
        now = time.time()
        since = park_kwargs.get("failing_since") or now
        if budget_spent(since, now, ctx.svc.settings.retry_budget_seconds):
            rule = (
                ErrorRule(Action.BACKOFF, verdict.last_kind) if verdict.last_kind else CIRCUIT_OPEN
            )
            raise ProviderCallError(
                ProviderError(
                    rule,
                    0,
                    f"{ctx.provider.NAME} kept failing for {now - since:.0f} s (circuit open)",
                )
            )
        # spread the parked pages so the breaker's next turn is not a stampede
        delay = verdict.wait_s + random.uniform(0, 0.5)
        self.park(ctx, delay, "circuit_open", park_args, {**park_kwargs, "failing_since": since})
        return None

    # -- sending and parking ---------------------------------------------------------
    def park(self, ctx: SyncContext, delay: float, reason: str, args: list, kwargs: dict):
        """Hand this task to the delayed set; the scheduler sends it when due.

        The sync record says why it waits and until when (status, dashboard).
        """
        ctx.svc.store.update(
            ctx.sync_id, wait_reason=reason, wait_until=f"{time.time() + delay:.3f}"
        )
        ctx.svc.metrics.count(
            "quota_waits", provider=ctx.provider.NAME, queue=ctx.queue_class, reason=reason
        )
        ctx.svc.delayed.park(
            self.name,
            args,
            kwargs,
            queue=ctx.queue_name,
            delay_s=delay,
            priority=ctx.priority(self.app.conf.broker_url),
            reason=reason,
        )
        # waiting is not stalling: the stall sweep leaves the sync alone until then
        ctx.svc.progress.parked_until(ctx.sync_id, time.time() + delay)

    def send_pages(self, ctx: SyncContext, page_task_name: str, cursors: list[str]):
        if not cursors:
            return
        priority = ctx.priority(self.app.conf.broker_url)
        with self.app.producer_or_acquire() as producer:
            for cursor in cursors:
                self.app.send_task(
                    page_task_name,
                    args=[ctx.sync_id, cursor],
                    queue=ctx.queue_name,
                    priority=priority,
                    producer=producer,
                )

    # -- what an error answer does ---------------------------------------------------
    def on_provider_error(self, ctx, error: ProviderError, args: list, kwargs: dict):
        action = error.action
        attempt, waits = kwargs.get("attempt", 0), kwargs.get("waits", 0)
        settings = ctx.svc.settings
        if action is Action.WAIT:
            delay = wait_delay(error.retry_at, time.time(), waits, ctx.provider.WAIT_FLOOR_SECONDS)
            ctx.svc.store.update(ctx.sync_id, last_wait=error.rule.kind)
            return self.park(ctx, delay, error.rule.kind, args, {**kwargs, "waits": waits + 1})
        if action is Action.BACKOFF:
            # A time budget, not a count: an outage up to RETRY_BUDGET_SECONDS is ridden out.
            now = time.time()
            since = kwargs.get("failing_since") or now
            if attempt + 1 >= settings.max_backoff_attempts and budget_spent(
                since, now, settings.retry_budget_seconds
            ):
                return self.end(ctx, "failed", error)
            delay = backoff_delay(
                attempt, settings.backoff_base_seconds, settings.backoff_cap_seconds
            )
            return self.park(
                ctx,
                delay,
                error.rule.kind,
                args,
                {**kwargs, "attempt": attempt + 1, "failing_since": since},
            )
        if action is Action.REFRESH:
            return self.on_refresh(ctx, error, args, kwargs)
        if action is Action.REAUTH:
            return self.end(ctx, "needs_reauth", error)
        if action is Action.SKIP:
            return self.on_skip(ctx, error, args)
        if action is Action.RESTART:
            return self.on_restart(ctx, error, args, kwargs)
        return self.end(ctx, "failed", error)

    def on_refresh(self, ctx, error, args, kwargs):
        """The server refused the token: one refresh (ours or a sibling task's), then REAUTH."""
        if kwargs.get("refreshed"):
            return self.end(ctx, "needs_reauth", error)
        retry = {**kwargs, "refreshed": 1}
        record = ctx.svc.store.get_sync(ctx.sync_id) or {}
        if record.get("token_refreshed"):
            # One refresh per sync: a sibling page already refreshed. Retry with
            # its token if ours is older; if ours was the new one, it is refused too.
            if oauth.TokenKeeper(ctx).newer_token() is None:
                return self.end(ctx, "needs_reauth", error)
            outcome = "refreshed"
        else:
            try:
                outcome = self.refresh_token(ctx)
            except ProviderCallError as exc:  # the token endpoint itself failed (BACKOFF / WAIT)
                return self.on_provider_error(ctx, exc.error, args, kwargs)
        if outcome == "refreshed":
            ctx.svc.store.update(ctx.sync_id, token_refreshed=1)
            return self.apply_async(
                args=args,
                kwargs=retry,
                queue=ctx.queue_name,
                priority=ctx.priority(self.app.conf.broker_url),
            )
        if outcome == "busy":  # a sibling task is refreshing: retry with its token shortly
            return self.park(ctx, oauth.REFRESH_BUSY_WAIT_S, "refresh_in_progress", args, retry)
        return self.end(ctx, "needs_reauth", error)

    def refresh_token(self, ctx) -> str:
        """Refresh the OAuth token once: "refreshed", "busy" or "impossible"."""
        settings = ctx.svc.settings
        return oauth.refresh_after_rejection(
            ctx, (settings.http_connect_timeout, settings.http_read_timeout)
        )

    def on_skip(self, ctx, error, args):
        return self.end(ctx, "failed", error)

    def on_restart(self, ctx, error, args, kwargs):
        return self.end(ctx, "failed", error)

    def end(self, ctx, status: str, error: ProviderError) -> str:
        """Stop the sync; the previous network stays as it was."""
        if ctx.svc.store.fail(ctx.sync_id, status, error.rule.kind, error.message):
            self.finished(ctx, status, error)
        return status

    def finished(self, ctx, status: str, error: ProviderError | None = None) -> None:
        """A sync reached a final status: count it and tell the main app."""
        telemetry.count_finished(ctx.svc.metrics, ctx.record, status)
        self._quota_hints.pop(ctx.sync_id, None)
        log.info(
            "sync finished sync=%s provider=%s status=%s kind=%s",
            ctx.sync_id,
            ctx.provider.NAME,
            status,
            error.rule.kind if error else "-",
        )
        callbacks.notify(self.app, ctx.sync_id, ctx.provider.NAME)

    def finalize(self, ctx) -> str:
        """The last page is stored: commit the network (once) and end the sync."""
        record = ctx.svc.store.get_sync(ctx.sync_id) or ctx.record
        if record.get("status") not in ACTIVE:
            return record.get("status", "inactive")
        result, first = finalize_sync(ctx.svc, record)
        if first:
            self.finished(ctx, result.status)
        return result.status

    def stored(self, ctx, result: str) -> str:
        """What ``complete_page`` said, carried on: the last page finalizes."""
        return self.finalize(ctx) if result == "finalize" else result

    def guarded(self, ctx, body, args, kwargs):
        """Run ``body()`` with the taxonomy applied to whatever goes wrong in it."""
        try:
            try:
                return body()
            finally:
                ctx.settle()  # what the call deferred, when no page storage took it
        except ProviderCallError as exc:
            return self.on_provider_error(ctx, exc.error, args, kwargs)
        except SoftTimeLimitExceeded:
            error = ProviderError(TRANSPORT_ERROR, 0, "soft time limit exceeded")
            return self.on_provider_error(ctx, error, args, kwargs)
        except CredentialError as exc:
            error = ProviderError(_NO_CREDENTIAL, 0, str(exc))
            return self.end(ctx, "needs_reauth", error)
        except UnparseableAnswer as exc:
            log.warning("unparseable answer sync=%s task=%s: %s", ctx.sync_id, self.name, exc)
            error = ProviderError(UNPARSEABLE, 200, str(exc))
            return self.on_provider_error(ctx, error, args, kwargs)
        except BACKEND_UNAVAILABLE:
            raise  # not the sync's fault: the message is requeued (``__call__``)
        except Exception:
            # Our own bug, not the provider's: the sync fails as ``internal_error``
            # (never five backoffs), and the exception goes on to Celery, which
            # logs its traceback and hands it to Sentry.
            log.exception("internal error sync=%s task=%s", ctx.sync_id, self.name)
            with contextlib.suppress(Exception):
                self.end(ctx, "failed", ProviderError(INTERNAL_ERROR, 0, "internal error"))
            raise


_NO_CREDENTIAL = ErrorRule(Action.REAUTH, "no_credentials")

#: below this share of the stated limit left, the provider's own count is
#: worth a correction of ours; above it the buckets' own count governs
OBSERVE_BELOW_SHARE = 0.25


def worth_observing(info) -> bool:
    """Whether an answer's rate headers should correct the quota buckets now.

    The gate counts every call itself; the provider's figures matter when
    quota runs low (someone else may share the token), when it says when to
    come back, or when it reports usage. Skipping the rest saves a Redis
    round trip on most calls.
    """
    if info.is_empty():
        return False
    if info.retry_after is not None or info.usage_percent is not None:
        return True
    if info.remaining is None:
        return info.reset_at is not None
    if info.limit is None:
        return True
    if info.remaining == info.limit - 1:
        # The answer to the call that opened the provider's window: it tells
        # the gate when that window ends, on our own clock (QuotaGate.observe).
        return True
    return info.remaining < info.limit * OBSERVE_BELOW_SHARE


class ProfileTask(ProviderTask):
    """Round one: one call to learn the account's size, which picks the queue."""

    starts_sync = True

    #: name of the provider's page task
    page_task_name: str = ""

    def run(
        self,
        sync_id: str,
        attempt: int = 0,
        waits: int = 0,
        refreshed: int = 0,
        failing_since: float = 0.0,
    ):
        ctx = self.load(sync_id)
        if ctx is None:
            return "inactive"
        try:
            if self.poisoned(ctx, ""):
                return "dead-lettered"
            kwargs = {
                "attempt": attempt,
                "waits": waits,
                "refreshed": refreshed,
                "failing_since": failing_since,
            }
            return self.guarded(ctx, lambda: self._profile(ctx, kwargs), [sync_id], kwargs)
        finally:
            ctx.settle()

    def _profile(self, ctx, kwargs):
        provider, svc = ctx.provider, ctx.svc
        svc.store.mark_running(ctx.sync_id)
        answer = self.call(ctx, provider.profile_call(ctx.account_id), [ctx.sync_id], kwargs)
        if answer is None:
            return "parked"
        batch = ctx.take_deferred() or Batch(svc.redis)
        svc.store.note_call(ctx.sync_id, ctx.rate_fields, batch=batch)
        batch.execute()
        with parsing("profile answer"):
            size = provider.parse_size(answer.body, ctx.relation)
            uid = provider.account_uid(answer.body, ctx.account_id)
        if uid:
            # who this account is, by its stable id: "which of my connections are here"
            svc.networks.link_account(
                user_id=ctx.user_id,
                provider=provider.NAME,
                account_id=ctx.account_id,
                provider_uid=str(uid),
            )
        queue_class = queues.queue_class_for(
            size, ctx.record.get("trigger", "api"), svc.settings.whale_threshold
        )
        fields = {"queue": queue_class}
        if size is not None:
            fields["expected_total"] = size
        svc.store.update(ctx.sync_id, **fields)
        ctx.record.update(fields)
        self._requeue_hint(ctx.sync_id, queue_class)
        cursors = provider.initial_cursors(ctx.account_id, size, ctx.relation)
        marks = svc.store.add_pending(ctx.sync_id, "", cursors)
        self.send_pages(
            ctx, self.page_task_name, [c for c, m in zip(cursors, marks) if m in ("new", "rerun")]
        )
        return "planned"

    def on_skip(self, ctx, error, args):
        # Nothing was fetched: a 404 for the account is no evidence its
        # network is empty (a renamed login 404s too), so keep the old one.
        return self.end(ctx, "failed", error)


class PageTask(ProviderTask):
    """Round two: one page, one call; store it and launch what it points to."""

    def run(
        self,
        sync_id: str,
        cursor: str,
        attempt: int = 0,
        waits: int = 0,
        refreshed: int = 0,
        restarts: int = 0,
        failing_since: float = 0.0,
    ):
        ctx = self.load(sync_id, cursor)
        if ctx is None:
            return "inactive or already stored"
        try:
            if ctx.record.get("finalizing"):
                # our last page is stored but the finalization did not end (a worker
                # died in it): finish it; it commits at most once
                ctx.settle()
                return self.finalize(ctx)
            if self.poisoned(ctx, cursor):
                return "dead-lettered"
            kwargs = {
                "attempt": attempt,
                "waits": waits,
                "refreshed": refreshed,
                "restarts": restarts,
                "failing_since": failing_since,
            }
            return self.guarded(
                ctx, lambda: self._page(ctx, cursor, kwargs), [sync_id, cursor], kwargs
            )
        finally:
            ctx.settle()

    def _page(self, ctx, cursor, kwargs):
        provider, store = ctx.provider, ctx.svc.store
        generation, bare = pagination.split_generation(cursor)
        answer = self.call(
            ctx, provider.page_call(ctx.account_id, bare), [ctx.sync_id, cursor], kwargs
        )
        if answer is None:
            return "parked"
        with parsing("page answer"):
            page = provider.parse_page(answer.body, answer.headers, bare)
        expected = ctx.record.get("expected_total")
        expected = int(expected) if expected not in (None, "") else None
        launches = [
            pagination.with_generation(generation, c)
            for c in pagination.followups(provider, bare, page, expected)
        ]
        if page.problems:
            # Per-item problems beside the data (Twitter errors[] in a 200): those
            # people are hidden from us; the page itself is good.
            store.update(ctx.sync_id, item_problems=",".join(sorted(set(page.problems))))
        self.reclassify_if_large(ctx, page)
        pages_done = int(ctx.record.get("pages_fetched", 0)) + 1
        guard = guard_args(provider, bare, page, launches, pages_done, expected)
        reason, marks = "", []
        if launches:
            # The page guard records the page and may stop the paging here (then
            # nothing is launched), in the script that marks the launches pending.
            # Launch the next page before storing this one: the chain never waits on storage.
            reason, marks = store.launch_pages(ctx.sync_id, cursor, launches, guard)
            self.send_pages(
                ctx, self.name, [c for c, m in zip(launches, marks) if m in ("new", "rerun")]
            )
        reason = reason or provider.page_anomaly(page, bare, expected)
        if not reason and "repeat" in marks:
            reason = "repeated_cursor"
        if reason:
            log.warning(
                "pagination stopped sync=%s provider=%s reason=%s",
                ctx.sync_id,
                provider.NAME,
                reason,
            )
        # one round trip: the page (with the guard's memory of a page that launched
        # nothing) and what the call deferred (counters, the quota's lessons)
        result = store.complete_page(
            ctx.sync_id,
            cursor,
            page.connections,
            reason,
            rate_fields=ctx.rate_fields,
            count_call=True,
            guard=None if launches else guard,
            batch=ctx.take_deferred(),
        )
        return self.stored(ctx, result)

    def reclassify_if_large(self, ctx, page) -> None:
        """A sync of unknown (or understated) size that turns out to be a whale
        moves its remaining pages to ``whale`` (the rule: ``queues.reclassified``)."""
        seen = int(ctx.record.get("connections_fetched") or 0) + len(page.connections)
        new_class = queues.reclassified(ctx.queue_class, seen, ctx.svc.settings.whale_threshold)
        if new_class != ctx.queue_class:
            ctx.svc.store.update(ctx.sync_id, queue=new_class, reclassified=new_class)
            ctx.record["queue"] = new_class
            self._requeue_hint(ctx.sync_id, new_class)
            log.info(
                "sync reclassified sync=%s provider=%s to %s after %d connections",
                ctx.sync_id,
                ctx.provider.NAME,
                new_class,
                seen,
            )

    def on_skip(self, ctx, error, args):
        """The target is gone or hidden: this page ends its lane with nothing."""
        result = ctx.svc.store.complete_page(ctx.sync_id, args[1], [], error.rule.kind)
        return self.stored(ctx, result)

    def on_restart(self, ctx, error, args, kwargs):
        """An expired cursor (Facebook code 100): start the pagination over, once."""
        cursor = args[1]
        generation, bare = pagination.split_generation(cursor)
        first = ctx.provider.first_cursor(ctx.account_id, ctx.relation)
        if generation >= 1 or bare == first:
            # A second expiry, or a code 100 on the very first page: our request is wrong.
            return self.end(ctx, "failed", error)
        restart = pagination.with_generation(generation + 1, first)
        store = ctx.svc.store
        marks = store.add_pending(ctx.sync_id, cursor, [restart])
        self.send_pages(
            ctx, self.name, [c for c, m in zip([restart], marks) if m in ("new", "rerun")]
        )
        store.update(ctx.sync_id, restarted=error.rule.kind)
        log.info(
            "pagination restarted sync=%s provider=%s kind=%s",
            ctx.sync_id,
            ctx.provider.NAME,
            error.rule.kind,
        )
        result = store.complete_page(ctx.sync_id, cursor, [])
        return self.stored(ctx, result)


def task_classes_for(provider_cls: type[Provider]) -> tuple[type[ProfileTask], type[PageTask]]:
    """The Celery task classes of one provider: ``<name>.profile`` and ``<name>.page``.

    Generated from the provider's class, so a provider module holds no task code.
    """
    name = provider_cls.NAME
    page = type(
        f"{provider_cls.__name__}PageTask",
        (PageTask,),
        {"name": f"{name}.page", "provider_class": provider_cls, "__module__": __name__},
    )
    profile = type(
        f"{provider_cls.__name__}ProfileTask",
        (ProfileTask,),
        {
            "name": f"{name}.profile",
            "provider_class": provider_cls,
            "page_task_name": page.name,
            "__module__": __name__,
        },
    )
    return profile, page


def profile_task_name(provider: str) -> str:
    """The task that starts a sync of ``provider`` (round one)."""
    return f"{provider}.profile"


def register_tasks(celery_app) -> None:
    """Every registered provider's tasks, and the callback task, on ``celery_app``."""
    for provider_cls in providers.provider_classes().values():
        for cls in task_classes_for(provider_cls):
            celery_app.register_task(cls())
    celery_app.register_task(callbacks.DeliverCallback())
