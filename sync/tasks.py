"""The shared Celery task classes: round one (profile) and round two (pages).

One API call per task. A message carries primitives only (sync id, page
cursor, the counters of ``sync.context.Tries``); the task looks up the sync
record and the credential itself. Every provider's tasks are these classes
with its ``Provider`` description plugged in (``task_classes_for``); the
error taxonomy (``providers.errors``) decides what an error answer does.

A run in four parts, each a module of its own:

- ``sync.context``: what the run knows (``SyncContext``, made per run in one
  Redis round trip); ``sync.memory``: what the process keeps across runs;
- ``sync.outbound``: the one outbound call, step by step;
- ``sync.outcomes``: what a wait, an error or a refused token does (park,
  retry, refresh: the current message again, from ``self.request``);
- ``sync.finish``: how a sync ends (complete, finalize, fail, finish).
"""

from __future__ import annotations

import contextlib
import logging

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
from state.credentials import CredentialError
from state.page_guard import guard_args
from sync import callbacks, context, incremental, modes, outbound, outcomes
from sync.context import FIRST_TRY, SyncContext, Tries
from sync.finish import after_complete, fail, finalize
from sync.http import UnparseableAnswer, parsing
from sync.runtime import NetsyncTask

log = logging.getLogger("netsync.tasks")

#: the error kind of a sync failed by our own bug
INTERNAL_ERROR = ErrorRule(Action.FAIL, "internal_error")
NO_CREDENTIAL = ErrorRule(Action.REAUTH, "no_credentials")

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
    """Behaviour shared by a provider's tasks; subclasses set ``provider_class``.

    The task object is shared by every run: what one run knows is its
    ``SyncContext``, what the process keeps is ``services.memory``.
    """

    #: the provider this task talks to
    provider_class: type[Provider] = Provider
    #: round one: its call is the sync's first (trigger-to-first-call histogram)
    starts_sync: bool = False

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
        return svc.memory.provider(self.provider_class, url)

    def load(
        self, sync_id: str, cursor: str | None = None, tries: Tries = FIRST_TRY
    ) -> SyncContext | None:
        """The run's context in one round trip (``sync.context.load``); None: nothing to do."""
        svc = self.services
        return context.load(svc, self.provider(svc), sync_id, cursor, tries)

    def again(self, **changes):
        """This run's message again (``self.request``), ``changes`` made to its counters.

        A signature of this task with the message's own args and kwargs, so
        what goes back to the broker is what came, plus the changes.
        """
        request = self.request
        kwargs = {**(request.kwargs or {}), **changes}
        return self.signature(list(request.args or ()), kwargs)

    def guarded(self, ctx: SyncContext, body):
        """Run ``body()`` with the taxonomy applied to whatever goes wrong in it."""
        try:
            try:
                return self._call_or_park(ctx, body)
            finally:
                ctx.settle()  # what the call deferred, when no page storage took it
        except ProviderCallError as exc:
            return self.on_provider_error(ctx, exc.error)
        except SoftTimeLimitExceeded:
            error = ProviderError(TRANSPORT_ERROR, 0, "soft time limit exceeded")
            return self.on_provider_error(ctx, error)
        except CredentialError as exc:
            return fail(self.app, ctx, "needs_reauth", ProviderError(NO_CREDENTIAL, 0, str(exc)))
        except UnparseableAnswer as exc:
            log.warning("unparseable answer sync=%s task=%s: %s", ctx.sync_id, self.name, exc)
            return self.on_provider_error(ctx, ProviderError(UNPARSEABLE, 200, str(exc)))
        except BACKEND_UNAVAILABLE:
            raise  # not the sync's fault: the message is requeued (``__call__``)
        except Exception:
            # Our own bug, not the provider's: the sync fails as ``internal_error``
            # (never five backoffs), and the exception goes on to Celery, which
            # logs its traceback and hands it to Sentry.
            log.exception("internal error sync=%s task=%s", ctx.sync_id, self.name)
            with contextlib.suppress(Exception):
                fail(self.app, ctx, "failed", ProviderError(INTERNAL_ERROR, 0, "internal error"))
            raise

    def _call_or_park(self, ctx: SyncContext, body):
        try:
            return body()
        except outbound.MustWait as wait:  # the call may not go now: not an attempt
            outcomes.park(self, ctx, wait.delay_s, wait.reason, **wait.changes)
            return "parked"

    # -- what an error answer does (``sync.outcomes``), and each task kind's hooks -------
    def on_provider_error(self, ctx: SyncContext, error: ProviderError):
        return outcomes.on_error(self, ctx, error)

    def on_skip(self, ctx: SyncContext, error: ProviderError):
        return fail(self.app, ctx, "failed", error)

    def on_restart(self, ctx: SyncContext, error: ProviderError):
        return fail(self.app, ctx, "failed", error)

    def send_pages(self, ctx: SyncContext, page_task_name: str, cursors: list, marks: list):
        """Send the page tasks of ``cursors`` that ``add_pending`` marked to be sent."""
        cursors = [c for c, m in zip(cursors, marks) if m in ("new", "rerun")]
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
        ctx = self.load(sync_id, None, Tries(attempt, waits, refreshed, 0, failing_since))
        if ctx is None:
            return "inactive"
        try:
            if outcomes.dead_lettered(self, ctx, ""):
                return "dead-lettered"
            return self.guarded(ctx, lambda: self._profile(ctx))
        finally:
            ctx.settle()

    def _profile(self, ctx: SyncContext) -> str:
        provider, svc = ctx.provider, ctx.svc
        svc.store.mark_running(ctx.sync_id)
        network = incremental.stored_network(ctx)
        call = provider.profile_call(ctx.account_id)
        cached = incremental.conditional_profile(ctx, network)
        if cached is not None:
            call = incremental.with_condition(call, cached)
        answer = outbound.call(ctx, call, starts_sync=True)
        batch = ctx.take_deferred() or Batch(svc.redis)
        svc.store.note_call(ctx.sync_id, ctx.rate_fields, batch=batch)
        batch.execute()
        if answer.status == 304:
            if cached is None:
                raise UnparseableAnswer("304 Not Modified to a request without a condition")
            size, uid = incremental.profile_from_cache(cached)
        else:
            with parsing("profile answer"):
                size = provider.parse_size(answer.body, ctx.relation)
                uid = provider.account_uid(answer.body, ctx.account_id)
        incremental.keep_profile(ctx, answer, cached, size, uid)
        if uid:
            # who this account is, by its stable id: "which of my connections are here"
            svc.networks.link_account(
                user_id=ctx.user_id,
                provider=provider.NAME,
                account_id=ctx.account_id,
                provider_uid=str(uid),
                instance=provider.instance if provider.ACCOUNT_IDS_PER_INSTANCE else "",
            )
        self._plan_pages(ctx, size, network)
        return "planned"

    def _plan_pages(self, ctx: SyncContext, size: int | None, network) -> None:
        """The size picks the queue class; the pagination style, round two's first pages."""
        svc = ctx.svc
        queue_class = queues.queue_class_for(
            size, ctx.record.get("trigger", "api"), svc.settings.whale_threshold
        )
        fields = {"queue": queue_class}
        if size is not None:
            fields["expected_total"] = size
        svc.store.update(ctx.sync_id, **fields)
        ctx.record.update(fields)
        svc.memory.requeue(ctx.sync_id, queue_class)
        # the mode (``sync.modes``): a head read starts at its head, the rest at the start
        cursors = incremental.plan(ctx, size, network) or ctx.provider.initial_cursors(
            ctx.account_id, size, ctx.relation
        )
        marks = svc.store.add_pending(ctx.sync_id, "", cursors)
        self.send_pages(ctx, self.page_task_name, cursors, marks)

    def on_skip(self, ctx, error):
        # Nothing was fetched: a 404 for the account is no evidence its
        # network is empty (a renamed login 404s too), so keep the old one.
        return fail(self.app, ctx, "failed", error)


class PageTask(ProviderTask):
    """Round two: one page, one call; complete it and launch what it points to."""

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
        tries = Tries(attempt, waits, refreshed, restarts, failing_since)
        ctx = self.load(sync_id, cursor, tries)
        if ctx is None:
            return "inactive or already stored"
        try:
            if ctx.record.get("finalizing"):
                # our last page is complete but the finalization did not end (a worker
                # died in it): finalize; it commits at most once
                ctx.settle()
                return finalize(self.app, ctx)
            if outcomes.dead_lettered(self, ctx, cursor):
                return "dead-lettered"
            return self.guarded(ctx, lambda: self._page(ctx))
        finally:
            ctx.settle()

    def _page(self, ctx: SyncContext) -> str:
        store = ctx.svc.store
        generation, bare = pagination.split_generation(ctx.cursor)
        head_size, bare = modes.split_head(bare)
        page = self._read(ctx, bare, head_size)
        if page.problems:
            # Per-item problems beside the data (Twitter errors[] in a 200): those
            # people are hidden from us; the page itself is good.
            store.update(ctx.sync_id, item_problems=",".join(sorted(set(page.problems))))
        self.reclassify_if_large(ctx, page)
        followups = None
        if head_size is not None:
            followups = incremental.head_followups(ctx, page, head_size)
        else:
            incremental.note_full_head(ctx, bare, page)
        launched, reason, guard = self._launch_next(ctx, page, generation, bare, followups)
        # one round trip: the page (with the guard's memory of a page that launched
        # nothing) and what the call deferred (counters, the quota's lessons)
        result = store.complete_page(
            ctx.sync_id,
            ctx.cursor,
            page.connections,
            reason,
            rate_fields=ctx.rate_fields,
            count_call=True,
            guard=None if launched else guard,
            batch=ctx.take_deferred(),
        )
        return after_complete(self.app, ctx, result)

    def _read(self, ctx: SyncContext, bare: str, head_size: int | None):
        """The page's one call and what it holds: parsed, or (a ``304`` to a conditional
        call) what the last sync kept for it (``sync.incremental``)."""
        provider = ctx.provider
        call = provider.page_call(ctx.account_id, bare)
        if head_size:  # a head's first page, sized to the count's growth
            call = provider.sized(call, head_size) or call
        cached = incremental.conditional_entry(ctx, bare)
        if cached is not None:
            call = incremental.with_condition(call, cached)
        answer = outbound.call(ctx, call)
        if answer.status == 304:
            if cached is None:
                raise UnparseableAnswer("304 Not Modified to a request without a condition")
            # unchanged since the last sync: what it held then
            expected = ctx.record.get("expected_total")
            expected = int(expected) if expected not in (None, "") else None
            page = provider.replayed_page(cached.page, bare, expected)
        else:
            with parsing("page answer"):
                page = provider.parse_page(answer.body, answer.headers, bare)
        incremental.keep_conditional(ctx, bare, answer, page, cached)
        return page

    def _launch_next(
        self, ctx: SyncContext, page, generation: int, bare: str, followups: list | None = None
    ):
        """Launch the pages this one points to: (launched?, why the paging stops, the guard).

        ``followups``: what a head page decided (``sync.incremental``); None: where the
        page points."""
        provider, store = ctx.provider, ctx.svc.store
        expected = ctx.record.get("expected_total")
        expected = int(expected) if expected not in (None, "") else None
        if followups is None:
            followups = pagination.followups(provider, bare, page, expected)
        launches = [pagination.with_generation(generation, c) for c in followups]
        # pages the spend budget cut short are not pages of the page limit
        sized = int(ctx.record.get("sized_pages") or 0) + ctx.sized_call
        pages_done = int(ctx.record.get("pages_fetched", 0)) + 1 - sized
        guard = guard_args(provider, bare, page, launches, pages_done, expected)
        reason, marks = "", []
        if launches:
            # The page guard records the page and may stop the paging here (then
            # nothing is launched), in the script that marks the launches pending.
            # Launch the next page before completing this one: the chain never waits on storage.
            reason, marks = store.launch_pages(ctx.sync_id, ctx.cursor, launches, guard)
            self.send_pages(ctx, self.name, launches, marks)
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
        return bool(launches), reason, guard

    def reclassify_if_large(self, ctx: SyncContext, page) -> None:
        """A sync of unknown (or understated) size that turns out to be a whale
        moves its remaining pages to ``whale`` (the rule: ``queues.reclassified``)."""
        seen = int(ctx.record.get("connections_fetched") or 0) + len(page.connections)
        new_class = queues.reclassified(ctx.queue_class, seen, ctx.svc.settings.whale_threshold)
        if new_class != ctx.queue_class:
            ctx.svc.store.update(ctx.sync_id, queue=new_class, reclassified=new_class)
            ctx.record["queue"] = new_class
            ctx.svc.memory.requeue(ctx.sync_id, new_class)
            log.info(
                "sync reclassified sync=%s provider=%s to %s after %d connections",
                ctx.sync_id,
                ctx.provider.NAME,
                new_class,
                seen,
            )

    def on_skip(self, ctx, error):
        """The target is gone or hidden: this page ends its lane with nothing."""
        result = ctx.svc.store.complete_page(ctx.sync_id, ctx.cursor, [], error.rule.kind)
        return after_complete(self.app, ctx, result)

    def on_restart(self, ctx, error):
        """An expired cursor (Facebook code 100): start the pagination over, once."""
        cursor = ctx.cursor
        generation, bare = pagination.split_generation(cursor)
        first = ctx.provider.first_cursor(ctx.account_id, ctx.relation)
        if generation >= 1 or bare == first:
            # A second expiry, or a code 100 on the very first page: our request is wrong.
            return fail(self.app, ctx, "failed", error)
        restart = pagination.with_generation(generation + 1, first)
        store = ctx.svc.store
        marks = store.add_pending(ctx.sync_id, cursor, [restart])
        self.send_pages(ctx, self.name, [restart], marks)
        store.update(ctx.sync_id, restarted=error.rule.kind)
        log.info(
            "pagination restarted sync=%s provider=%s kind=%s",
            ctx.sync_id,
            ctx.provider.NAME,
            error.rule.kind,
        )
        result = store.complete_page(ctx.sync_id, cursor, [])
        return after_complete(self.app, ctx, result)


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
