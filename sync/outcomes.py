"""What a task does when its call did not simply succeed: park, retry, refresh, fail.

The error taxonomy (``providers.errors``) names an action; ``on_error``
carries it out the same way for every provider:

- WAIT: park until the provider's reset (``sync.retry.wait_delay``);
- BACKOFF: park with full-jitter backoff, until the attempts *and* the time
  budget are spent (an outage up to ``RETRY_BUDGET_SECONDS`` is ridden out);
- REFRESH: one token refresh per sync (ours or a sibling task's), then the
  message again; a second refusal is REAUTH;
- REAUTH / FAIL: fail the sync (``sync.finish``);
- SKIP / RESTART: the task kind's own hooks (``on_skip``, ``on_restart``).

Every re-send is the task's current message again (Celery's
``self.request``: its args and kwargs), with changes to its counters
(``ProviderTask.again``): parked in the delayed set for the scheduler to send
when due (``park``), or sent at once after a refresh. A message that kept
killing its worker goes to the dead letters instead (``dead_lettered``).
"""

from __future__ import annotations

import logging
import time

from providers.errors import Action, ErrorRule, ProviderCallError, ProviderError
from sync import oauth
from sync.context import SyncContext
from sync.finish import fail
from sync.outbound import http_timeouts
from sync.retry import backoff_delay, budget_spent, wait_delay

log = logging.getLogger("netsync.outcomes")

#: a page delivered more than MAX_DELIVERIES times: each delivery killed its worker
POISON_PAGE = ErrorRule(Action.FAIL, "poison_page")


def park(task, ctx: SyncContext, delay: float, reason: str, **changes) -> None:
    """Hand the task's message (``changes`` to its counters) to the delayed set;
    the scheduler sends it when due. The sync record says why it waits and
    until when (status, dashboard)."""
    svc = ctx.svc
    message = task.again(**changes)
    svc.store.update(ctx.sync_id, wait_reason=reason, wait_until=f"{time.time() + delay:.3f}")
    svc.metrics.count(
        "quota_waits", provider=ctx.provider.NAME, queue=ctx.queue_class, reason=reason
    )
    svc.delayed.park(
        message.task,
        list(message.args),
        dict(message.kwargs),
        queue=ctx.queue_name,
        delay_s=delay,
        priority=ctx.priority(task.app.conf.broker_url),
        reason=reason,
    )
    # waiting is not stalling: the stall sweep leaves the sync alone until then
    svc.progress.parked_until(ctx.sync_id, time.time() + delay)


def on_error(task, ctx: SyncContext, error: ProviderError):
    """Carry out the action the error table gave ``error``."""
    action = error.action
    if action is Action.WAIT:
        return wait(task, ctx, error)
    if action is Action.BACKOFF:
        return back_off(task, ctx, error)
    if action is Action.REFRESH:
        return refresh(task, ctx, error)
    if action is Action.REAUTH:
        return fail(task.app, ctx, "needs_reauth", error)
    if action is Action.SKIP:
        return task.on_skip(ctx, error)
    if action is Action.RESTART:
        return task.on_restart(ctx, error)
    return fail(task.app, ctx, "failed", error)


def wait(task, ctx: SyncContext, error: ProviderError) -> None:
    waits = ctx.tries.waits
    delay = wait_delay(error.retry_at, time.time(), waits, ctx.provider.WAIT_FLOOR_SECONDS)
    ctx.svc.store.update(ctx.sync_id, last_wait=error.rule.kind)
    return park(task, ctx, delay, error.rule.kind, waits=waits + 1)


def back_off(task, ctx: SyncContext, error: ProviderError):
    # A time budget, not a count: an outage up to RETRY_BUDGET_SECONDS is ridden out.
    settings, attempt = ctx.svc.settings, ctx.tries.attempt
    now = time.time()
    since = ctx.tries.failing_since or now
    if attempt + 1 >= settings.max_backoff_attempts and budget_spent(
        since, now, settings.retry_budget_seconds
    ):
        return fail(task.app, ctx, "failed", error)
    delay = backoff_delay(attempt, settings.backoff_base_seconds, settings.backoff_cap_seconds)
    return park(task, ctx, delay, error.rule.kind, attempt=attempt + 1, failing_since=since)


def refresh(task, ctx: SyncContext, error: ProviderError):
    """The server refused the token: one refresh (ours or a sibling task's), then REAUTH."""
    if ctx.tries.refreshed:
        return fail(task.app, ctx, "needs_reauth", error)
    try:
        outcome = refresh_token(ctx)
    except ProviderCallError as exc:  # the token endpoint itself failed (BACKOFF / WAIT)
        return task.on_provider_error(ctx, exc.error)
    if outcome == "refreshed":
        ctx.svc.store.update(ctx.sync_id, token_refreshed=1)
        return task.again(refreshed=1).apply_async(
            queue=ctx.queue_name, priority=ctx.priority(task.app.conf.broker_url)
        )
    if outcome == "busy":  # a sibling task is refreshing: retry with its token shortly
        return park(task, ctx, oauth.REFRESH_BUSY_WAIT_S, "refresh_in_progress", refreshed=1)
    return fail(task.app, ctx, "needs_reauth", error)


def refresh_token(ctx: SyncContext) -> str:
    """The sync's one token refresh: "refreshed", "busy" or "impossible".

    One refresh per sync: when a sibling page already refreshed, this call
    goes again with its token if ours is older ("refreshed"); if ours was
    the new one, it is refused too ("impossible").
    """
    record = ctx.svc.store.get_sync(ctx.sync_id) or {}
    if record.get("token_refreshed"):
        newer = oauth.TokenKeeper(ctx).newer_token()
        return "impossible" if newer is None else "refreshed"
    return oauth.refresh_after_rejection(ctx, http_timeouts(ctx.svc.settings))


def dead_lettered(task, ctx: SyncContext, cursor: str) -> bool:
    """A page that was delivered too often without finishing goes to the dead letters.

    Its worker died each time (a crash, an OOM kill, the hard time limit), so
    the broker handed it back (acks late). Only redeliveries are counted (the
    first delivery costs nothing); after ``MAX_DELIVERIES`` the page is parked
    in the dead-letter set and its sync fails (``poison_page``).
    """
    if not (task.request.delivery_info or {}).get("redelivered"):
        return False
    svc = ctx.svc
    deliveries = svc.progress.delivered_again(ctx.sync_id, cursor) + 1
    if deliveries <= svc.settings.max_deliveries:
        return False
    message = f"page delivered {deliveries} times and its worker died each time; dead-lettered"
    svc.progress.dead_letter(ctx.sync_id, cursor, task.name, deliveries, message)
    log.error(
        "poison page sync=%s task=%s deliveries=%d: dead-lettered",
        ctx.sync_id,
        task.name,
        deliveries,
    )
    fail(task.app, ctx, "failed", ProviderError(POISON_PAGE, 0, message))
    return True
