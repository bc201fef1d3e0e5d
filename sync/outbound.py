"""The one outbound call of a task, as the steps it takes in order.

``call`` runs them: pause → breaker → quota → send → headers → lessons →
telemetry → breaker.

1. ``check_pause``: an operator's kill switch (``state.control``).
2. ``pass_breaker``: the provider's circuit breaker, peeked in the task's
   first round trip and asked here when a probe is due (the asker becomes
   the probe). An open circuit is a wait, until the call's time budget is
   spent: then it is the provider's last failure (BACKOFF).
3. ``take_quota``: ``CallGate.before`` (``state.admission``): the spend
   budget, the provider's cap on calls in flight, then the limits it
   announces; and the configured quota (``state.quota``) where the provider
   announces none (Facebook, LinkedIn) or the operator set one
   (``QUOTA_<PROVIDER>``: a cap of their own). Its first bucket's take, and
   the gate's lease and announced take, may have come with the first round
   trip (``sync.context.load``). A call the budget pays only part of asks
   the provider for fewer resources (``Provider.sized``); one whose smallest
   form costs more than a whole day's budget fails the sync
   (``spend_budget_too_small``).
4. ``send``: the HTTP call (``sync.oauth``). Once it returns, whatever it
   returned, the configured quota counts it at that moment
   (``QuotaGate.settle``); a call that got no answer is settled with the gate
   as such (billed at its worst case: it may have landed), one never sent is
   given back (``CallGate.abandon``).
5. ``read_answer``: the rate-limit headers and the error table's verdict;
   what we cannot read there is the provider's fault (``sync.http.parsing``).
6. ``learn``: ``CallGate.after`` (the headers to the announced rules, a
   ``retry-after`` on any status, the lease back, the spend settled), the
   call's cost on the sync record (``SyncStore.add_cost``: a ``304`` counts
   as ``not_modified``), what the answer teaches the configured quota, and
   the answer counters (headers that did not parse are counted, never
   raised), queued to go with the page's storage.
7. ``record_breaker``: a failure, or any answer while the circuit is not
   closed, goes to the breaker.

A call that may not go now raises ``MustWait`` (how long, why, and what
changes in the message's counters): not an attempt, the task parks itself
(``sync.outcomes.park``), its record saying why (``quota``,
``concurrency``, ``spend_budget``: until the next UTC day). An error answer
raises ``providers.errors.ProviderCallError``; its lessons go at once.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

from providers.errors import TRANSPORT_ERROR, Action, ErrorRule, ProviderCallError, ProviderError
from providers.provider import HttpCall
from state.admission import QUOTA, Admission
from state.batch import Batch
from state.control import PAUSED_REASON, provider_gate
from state.quota import QuotaDecision
from sync import instances, oauth, telemetry
from sync.context import SyncContext
from sync.http import parsing
from sync.retry import budget_spent

#: the provider's circuit is open (it kept failing) and the call's time budget is spent
CIRCUIT_OPEN = ErrorRule(Action.BACKOFF, "unavailable")
#: the smallest form of a call costs more than a whole day's ``BUDGET_<PROVIDER>``
OVER_BUDGET = ErrorRule(Action.FAIL, "spend_budget_too_small")

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


@dataclass(frozen=True)
class Admitted:
    """A call that may go: as it is sent, and what its answer settles."""

    call: HttpCall
    #: ``profile`` or ``page``
    kind: str
    #: ``CallGate.before``'s grant (spend, concurrency, announced limits)
    admission: Admission
    #: the configured quota's scopes and grant, where it applies (else None)
    scopes: dict | None = None
    grant: QuotaDecision | None = None
    #: the call asks for fewer resources than a page (the spend budget left)
    sized: bool = False


def call(ctx: SyncContext, http_call, starts_sync: bool = False):
    """Make the task's one call and classify its answer; the answer, if it is not an error.

    ``starts_sync``: the call is round one's (the trigger-to-first-call
    histogram, the answer is not a page).
    """
    if ctx.instance_error is not None:  # no instance to send the token to (sync.instances)
        raise ProviderCallError(ctx.instance_error)
    check_pause(ctx)
    verdict = pass_breaker(ctx)
    admitted = take_quota(ctx, http_call, "profile" if starts_sync else "page")
    ctx.sized_call = admitted.sized
    if starts_sync and ctx.tries.first:
        telemetry.observe_first_call(ctx.svc.metrics, ctx.record)
    answer = send(ctx, admitted)
    info, error = read_answer(ctx, answer)
    lessons = learn(ctx, admitted, answer, info, error)
    if error is not None:  # a Bluesky account that moved PDS goes again at its new one
        error = instances.after_error(ctx, error) or error
    record_breaker(ctx, verdict, error)
    if error is not None:
        # A successful page counts its call when it is stored (one round trip).
        ctx.svc.store.note_call(ctx.sync_id, ctx.rate_fields, batch=lessons)
        lessons.execute()
        raise ProviderCallError(error)
    ctx.deferred = lessons
    return answer


def check_pause(ctx: SyncContext) -> None:
    paused = provider_gate(ctx.svc.switches, ctx.provider.NAME, ctx.provider.instance)
    if paused > 0:
        raise MustWait(paused, PAUSED_REASON)


def pass_breaker(ctx: SyncContext):
    """The breaker's verdict when it lets the call go (else ``MustWait`` or the last failure)."""
    # one breaker per provider, or per instance of a federated one (``scope_name``)
    svc, name = ctx.svc, ctx.provider.scope_name
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
        message = f"{ctx.provider.scope_name} kept failing for {now - since:.0f} s (circuit open)"
        raise ProviderCallError(ProviderError(rule, 0, message))
    # spread the parked pages so the breaker's next turn is not a stampede
    raise MustWait(verdict.wait_s + random.uniform(0, 0.5), "circuit_open", failing_since=since)


def take_quota(ctx: SyncContext, http_call: HttpCall, kind: str) -> Admitted:
    """The call as it may go now, holding what its answer settles; else ``MustWait``
    (or, a call no day's budget can pay for, the sync's failure)."""
    svc, provider = ctx.svc, ctx.provider
    admission = ctx.take_admission(http_call, kind)
    if admission is None:
        admission = svc.gate.before(provider, http_call, ctx.caller(), ctx.queue_class, kind)
    if not admission.granted:
        if admission.never:
            message = (
                f"one {kind} call of {provider.NAME} costs more than BUDGET_"
                f"{provider.NAME.upper()} allows in a whole UTC day"
            )
            raise ProviderCallError(ProviderError(OVER_BUDGET, 0, message))
        raise MustWait(admission.wait_s, admission.reason)
    scopes, grant = None, None
    if uses_configured_quota(svc, provider):
        scopes = ctx.quota_scopes()
        svc.memory.remember_quota(ctx.sync_id, scopes, ctx.queue_class)
        grant = svc.quota.decide(
            provider.NAME, scopes, ctx.queue_class, first=ctx.take_prefetched()
        )
        if not grant.granted:
            svc.gate.abandon(admission)
            raise MustWait(grant.wait_s, QUOTA)
    most = admission.most_resources
    sized = provider.sized(http_call, most) if most is not None else None
    return Admitted(sized or http_call, kind, admission, scopes, grant, sized is not None)


def uses_configured_quota(svc, provider) -> bool:
    """The configured quota gates a provider that announces no limits (Facebook's
    percentages, LinkedIn's silence), and one whose ``QUOTA_<PROVIDER>`` an operator
    set: then a cap of their own on top of what the provider announces."""
    return not provider.ANNOUNCED_RULES or svc.quota.config.configured(provider.NAME)


def http_timeouts(settings) -> tuple[float, float]:
    return settings.http_connect_timeout, settings.http_read_timeout


def send(ctx: SyncContext, admitted: Admitted):
    svc, provider = ctx.svc, ctx.provider
    try:
        try:
            return oauth.send(
                ctx, admitted.call, provider.request_headers(), http_timeouts(svc.settings)
            )
        finally:
            # the provider received the call (if at all) by now: the quota
            # counts it from here, and learns its latency (QuotaGate.settle)
            if admitted.grant is not None:
                svc.quota.settle(admitted.grant)
    except ProviderCallError as exc:  # no answer (timeout, connection refused)
        error = exc.error
        unanswered(ctx, admitted, sent=error.rule is TRANSPORT_ERROR)
        svc.breaker.record(
            provider.scope_name, ok=error.action is not Action.BACKOFF, kind=error.rule.kind
        )
        raise
    except BaseException:  # the soft time limit mid-call: it may have landed
        with contextlib.suppress(Exception):
            unanswered(ctx, admitted, sent=True)
        raise


def unanswered(ctx: SyncContext, admitted: Admitted, sent: bool) -> None:
    """A call without an answer: if it may have been sent, the gate counts it where it
    may have landed (billed at its worst case); else it gives back all it held."""
    gate = ctx.svc.gate
    if not sent:
        gate.abandon(admitted.admission)
        return
    outcome = gate.after(admitted.admission, answered=False)
    ctx.svc.store.add_cost(ctx.sync_id, outcome.cost)


def read_answer(ctx: SyncContext, answer):
    """(the rate-limit headers, the error the answer is, or None)."""
    with parsing("rate-limit headers"):
        info = ctx.provider.rate_info(answer.headers)
    ctx.rate_fields = info.as_record()
    with parsing("error answer"):
        error = ctx.provider.classify(answer.status, answer.body, answer.headers, time.time())
    return info, error


def learn(ctx: SyncContext, admitted: Admitted, answer, info, error) -> Batch:
    """What the answer teaches the gates, its cost and its counters, queued in a batch
    not yet sent."""
    svc, provider = ctx.svc, ctx.provider
    lessons = Batch(svc.redis)
    if admitted.scopes is not None:
        learn_configured(ctx, admitted.scopes, info, error, lessons)
    admission = admitted.admission
    billed = provider.billed_resources(answer.body, admitted.kind) if admission.price else 0
    outcome = svc.gate.after(
        admission,
        answer.headers,
        resources=billed,
        not_modified=answer.status == 304,
        ok=error is None,
        batch=lessons,
    )
    svc.store.add_cost(ctx.sync_id, outcome.cost, batch=lessons)
    if admitted.sized:  # not a page of the page limit (``sync.tasks``): the budget cut it
        svc.store.add_counts(ctx.sync_id, {"sized_pages": 1}, batch=lessons)
    telemetry.count_answer(
        svc.metrics,
        provider.NAME,
        ctx.queue_class,
        error,
        page=admitted.kind == "page",
        batch=lessons,
        unreadable=outcome.report.malformed,
        instance=provider.instance,
    )
    return lessons


def learn_configured(ctx: SyncContext, scopes: dict, info, error, lessons: Batch) -> None:
    """The configured quota's lessons: the provider's own figures when
    ``worth_observing``, an adaptive limit's success or rejection."""
    svc, name = ctx.svc, ctx.provider.NAME
    if error is not None or worth_observing(info):
        told = ctx.provider.RATE_HEADER_SCOPES or tuple(scopes)
        spoken_for = {s: k for s, k in scopes.items() if s in told}
        svc.quota.observe(name, spoken_for, info, batch=lessons)
    rejected = error is not None and error.action is Action.WAIT
    svc.quota.record_outcome(name, scopes, rejected=rejected, batch=lessons)


def record_breaker(ctx: SyncContext, verdict, error) -> None:
    failing = error is not None and error.action is Action.BACKOFF
    if failing or verdict.verdict != "closed":  # a clean breaker needs no news of success
        kind = error.rule.kind if failing else ""
        ctx.svc.breaker.record(ctx.provider.scope_name, ok=not failing, kind=kind)


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
