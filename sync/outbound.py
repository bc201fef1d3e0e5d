"""The one outbound call of a task, as the steps it takes in order.

``call`` runs them: pause → breaker → quota → send → headers → lessons →
telemetry → breaker.

1. ``check_pause``: an operator's kill switch (``state.control``).
2. ``pass_breaker``: the provider's circuit breaker, peeked in the task's
   first round trip and asked here when a probe is due (the asker becomes
   the probe). An open circuit is a wait, until the call's time budget is
   spent: then it is the provider's last failure (BACKOFF).
3. ``take_quota``: every quota bucket of the call (``state.quota``); the
   first one's take may have come with the first round trip.
4. ``send``: the HTTP call (``sync.oauth``). Once it returns, whatever it
   returned, the quota counts it at that moment (``QuotaGate.settle``).
5. ``read_answer``: the rate-limit headers and the error table's verdict;
   what we cannot read there is the provider's fault (``sync.http.parsing``).
6. ``learn``: what the answer teaches the quota (the provider's own figures
   when ``worth_observing``, an adaptive limit's success or rejection) and
   the answer counters, queued to go with the page's storage.
7. ``record_breaker``: a failure, or any answer while the circuit is not
   closed, goes to the breaker.

A call that may not go now raises ``MustWait`` (how long, why, and what
changes in the message's counters): not an attempt, the task parks itself
(``sync.outcomes.park``). An error answer raises
``providers.errors.ProviderCallError``; its lessons go at once.
"""

from __future__ import annotations

import random
import time

from providers.errors import Action, ErrorRule, ProviderCallError, ProviderError
from state.batch import Batch
from state.control import PAUSED_REASON, provider_gate
from sync import oauth, telemetry
from sync.context import SyncContext
from sync.http import parsing
from sync.retry import budget_spent

#: the provider's circuit is open (it kept failing) and the call's time budget is spent
CIRCUIT_OPEN = ErrorRule(Action.BACKOFF, "unavailable")

#: below this share of the stated limit left, the provider's own count is
#: worth a correction of ours; above it the buckets' own count governs
OBSERVE_BELOW_SHARE = 0.25


class MustWait(Exception):
    """The call may not go now: park the task ``delay_s`` seconds (not an attempt).

    A verdict, not an error, raised the way Celery's ``Retry`` is.
    """

    def __init__(self, delay_s: float, reason: str, **changes):
        super().__init__(reason)
        self.delay_s = delay_s
        self.reason = reason
        #: what changes in the message's counters (``sync.context.Tries``) when it is sent again
        self.changes = changes


def call(ctx: SyncContext, http_call, starts_sync: bool = False):
    """Make the task's one call and classify its answer; the answer, if it is not an error.

    ``starts_sync``: the call is round one's (the trigger-to-first-call
    histogram, the answer is not a page).
    """
    check_pause(ctx)
    verdict = pass_breaker(ctx)
    scopes, grant = take_quota(ctx)
    if starts_sync and ctx.tries.first:
        telemetry.observe_first_call(ctx.svc.metrics, ctx.record)
    answer = send(ctx, http_call, grant)
    info, error = read_answer(ctx, answer)
    lessons = learn(ctx, scopes, info, error, page=not starts_sync)
    record_breaker(ctx, verdict, error)
    if error is not None:
        # A successful page counts its call when it is stored (one round trip).
        ctx.svc.store.note_call(ctx.sync_id, ctx.rate_fields, batch=lessons)
        lessons.execute()
        raise ProviderCallError(error)
    ctx.deferred = lessons
    return answer


def check_pause(ctx: SyncContext) -> None:
    paused = provider_gate(ctx.svc.switches, ctx.provider.NAME)
    if paused > 0:
        raise MustWait(paused, PAUSED_REASON)


def pass_breaker(ctx: SyncContext):
    """The breaker's verdict when it lets the call go (else ``MustWait`` or the last failure)."""
    svc, name = ctx.svc, ctx.provider.NAME
    peeked, ctx.peeked_verdict = ctx.peeked_verdict, None
    verdict = peeked.value if peeked is not None else None
    if verdict is None or verdict.verdict == "probe_due":
        verdict = svc.breaker.allow(name)  # claims the probe, if one is due
    svc.memory.note_breaker(name, waiting=not verdict.allowed)
    if not verdict.allowed:
        wait_for_circuit(ctx, verdict)
    return verdict


def wait_for_circuit(ctx: SyncContext, verdict) -> None:
    """The circuit is open: wait (not an attempt) unless the call's time budget is spent."""
    now = time.time()
    since = ctx.tries.failing_since or now
    if budget_spent(since, now, ctx.svc.settings.retry_budget_seconds):
        rule = ErrorRule(Action.BACKOFF, verdict.last_kind) if verdict.last_kind else CIRCUIT_OPEN
        message = f"{ctx.provider.NAME} kept failing for {now - since:.0f} s (circuit open)"
        raise ProviderCallError(ProviderError(rule, 0, message))
    # spread the parked pages so the breaker's next turn is not a stampede
    raise MustWait(verdict.wait_s + random.uniform(0, 0.5), "circuit_open", failing_since=since)


def take_quota(ctx: SyncContext):
    """(the call's scopes, the quota gate's grant), or ``MustWait`` when there is no room."""
    svc = ctx.svc
    scopes = ctx.quota_scopes()
    svc.memory.remember_quota(ctx.sync_id, scopes, ctx.queue_class)
    grant = svc.quota.decide(
        ctx.provider.NAME, scopes, ctx.queue_class, first=ctx.take_prefetched()
    )
    if not grant.granted:
        raise MustWait(grant.wait_s, "quota")
    return scopes, grant


def http_timeouts(settings) -> tuple[float, float]:
    return settings.http_connect_timeout, settings.http_read_timeout


def send(ctx: SyncContext, http_call, grant):
    svc, provider = ctx.svc, ctx.provider
    try:
        try:
            return oauth.send(
                ctx, http_call, provider.request_headers(), http_timeouts(svc.settings)
            )
        finally:
            # the provider received the call (if at all) by now: the quota
            # counts it from here, and learns its latency (QuotaGate.settle)
            svc.quota.settle(grant)
    except ProviderCallError as exc:  # no answer (timeout, connection refused)
        error = exc.error
        svc.breaker.record(
            provider.NAME, ok=error.action is not Action.BACKOFF, kind=error.rule.kind
        )
        raise


def read_answer(ctx: SyncContext, answer):
    """(the rate-limit headers, the error the answer is, or None)."""
    with parsing("rate-limit headers"):
        info = ctx.provider.rate_info(answer.headers)
    ctx.rate_fields = info.as_record()
    with parsing("error answer"):
        error = ctx.provider.classify(answer.status, answer.body, answer.headers, time.time())
    return info, error


def learn(ctx: SyncContext, scopes: dict, info, error, page: bool) -> Batch:
    """What the answer teaches the quota, and its counters, queued in a batch not yet sent."""
    svc, name = ctx.svc, ctx.provider.NAME
    lessons = Batch(svc.redis)
    if error is not None or worth_observing(info):
        told = ctx.provider.RATE_HEADER_SCOPES or tuple(scopes)
        spoken_for = {s: k for s, k in scopes.items() if s in told}
        svc.quota.observe(name, spoken_for, info, batch=lessons)
    rejected = error is not None and error.action is Action.WAIT
    svc.quota.record_outcome(name, scopes, rejected=rejected, batch=lessons)
    telemetry.count_answer(svc.metrics, name, ctx.queue_class, error, page=page, batch=lessons)
    return lessons


def record_breaker(ctx: SyncContext, verdict, error) -> None:
    failing = error is not None and error.action is Action.BACKOFF
    if failing or verdict.verdict != "closed":  # a clean breaker needs no news of success
        kind = error.rule.kind if failing else ""
        ctx.svc.breaker.record(ctx.provider.NAME, ok=not failing, kind=kind)


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
