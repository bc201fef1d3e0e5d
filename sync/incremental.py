"""What the tasks do differently in an incremental sync (the decisions: ``sync.modes``).

- Round one (``plan``): the mode is resolved from what the stored network says
  (``NetworkStore.freshness``) and recorded on the sync (``mode``,
  ``mode_reason``, ``known_count``); a ``head`` or ``since`` read starts at its
  head cursor instead of the provider's first pages.
- A conditional page (``conditional_entry``, ``keep_conditional``): GitHub's
  pages carry ``If-None-Match`` when the sync is incremental and the last sync
  kept a usable entry for them (``state.etag_cache``); a ``304`` reuses it.
- A head page (``head_followups``): stop at the first known connection (or the
  first short ``since`` page), go on, or give up and read on in full, which
  makes the sync full (``mode`` becomes ``full`` on the record).
"""

from __future__ import annotations

import logging
import time

from providers.provider import HttpCall, Page
from state.credentials import CredentialError
from state.etag_cache import CachedPage, EtagCache
from sync import modes
from sync.context import SyncContext

log = logging.getLogger("netsync.incremental")


#: the conditional cache's field for the profile call (page URLs start with "/" or a letter)
PROFILE_FIELD = "~profile"


def stored_network(ctx: SyncContext) -> modes.NetworkFreshness | None:
    stored = ctx.svc.networks.freshness(ctx.user_id, ctx.provider.NAME, ctx.relation)
    if stored is None:
        return None
    return modes.NetworkFreshness(
        stored["count"],
        stored["verified_at"],
        stored["head"],
        stored["needs_full"],
        stored["streamed"],
        stored.get("account"),
    )


def _choose(ctx: SyncContext, network, size: int | None) -> modes.ModeChoice:
    return modes.resolve_mode(
        ctx.record.get("mode_requested") or modes.AUTO,
        ctx.provider.INCREMENTAL,
        network,
        size,
        time.time(),
        ctx.svc.settings.full_sync_every_seconds,
        current_account(ctx),
    )


def current_account(ctx: SyncContext) -> str:
    """This sync's account (``modes.account_key``): the record's id, and the login's
    instance where ids are per instance (the credential's, not a resolved PDS)."""
    instance = None
    if ctx.provider.ACCOUNT_IDS_PER_INSTANCE:
        try:
            instance = ctx.credential.instance
        except CredentialError:
            instance = None  # no call will be made: the task ends needs_reauth
    return modes.account_key(ctx.account_id, instance, ctx.provider.ACCOUNT_IDS_PER_INSTANCE)


def conditional_profile(ctx: SyncContext, network) -> CachedPage | None:
    """The profile call's cached answer, when the sync will be incremental whatever the
    size says (then an unchanged profile is a free 304 too)."""
    if ctx.provider.INCREMENTAL != "conditional":
        return None
    if _choose(ctx, network, None).mode != modes.INCREMENTAL:
        return None
    _, network_key = _cache_keys(ctx)
    cached = EtagCache(ctx.svc.redis).lookup(
        network_key, ctx.credential.fingerprint(), PROFILE_FIELD
    )
    if cached is None or cached.page.total is None or len(cached.page.connections) != 1:
        return None
    return cached


def keep_profile(ctx: SyncContext, answer, cached, size: int | None, uid: str | None) -> None:
    """Keep the profile's ETag with what it said (size, stable id), as a page of one."""
    if size is None:
        return
    keep_conditional(ctx, PROFILE_FIELD, answer, Page([(uid or "-", "")], total=size), cached)


def profile_from_cache(cached: CachedPage) -> tuple[int, str | None]:
    """(size, stable id) a 304 to the profile call stands for."""
    uid = cached.page.connections[0][0]
    return cached.page.total, (None if uid == "-" else uid)


def plan(
    ctx: SyncContext, size: int | None, network: modes.NetworkFreshness | None
) -> list[str] | None:
    """Resolve the sync's mode against the stored ``network`` (``stored_network``); the
    head cursors of a ``head``/``since`` read, or None (round two starts with the
    provider's own first pages)."""
    svc, provider = ctx.svc, ctx.provider
    requested = ctx.record.get("mode_requested") or modes.AUTO
    choice = _choose(ctx, network, size)
    fields = {"mode": choice.mode, "mode_reason": choice.reason, "account": current_account(ctx)}
    if network is not None:
        fields["known_count"] = network.count
    svc.store.update(ctx.sync_id, **fields)
    ctx.record.update({k: str(v) for k, v in fields.items()})
    log.info(
        "sync mode sync=%s provider=%s asked=%s mode=%s reason=%s",
        ctx.sync_id,
        provider.NAME,
        requested,
        choice.mode,
        choice.reason,
    )
    if choice.mode != modes.INCREMENTAL or provider.INCREMENTAL not in ("head", "since"):
        return None
    if provider.INCREMENTAL == "since":
        cursor = provider.head_cursor(ctx.account_id, ctx.relation, network.head)
        return [modes.with_head(0, cursor)]
    first = modes.head_first_size(size, network.count, provider.PAGE_SIZE, network.streamed)
    return [modes.with_head(first, provider.head_cursor(ctx.account_id, ctx.relation, None))]


def is_incremental(ctx: SyncContext) -> bool:
    return ctx.record.get("mode") == modes.INCREMENTAL


# -- conditional pages (GitHub) -------------------------------------------------------
def _cache_keys(ctx: SyncContext) -> tuple[str, str]:
    return ctx.svc.store.etag_keys(ctx.sync_id, ctx.relation)


def conditional_entry(ctx: SyncContext, page_url: str) -> CachedPage | None:
    """What the last sync kept for this page under this token, when this sync may use
    it (incremental, a provider that reads conditionally); else None."""
    if ctx.provider.INCREMENTAL != "conditional" or not is_incremental(ctx):
        return None
    _, network_key = _cache_keys(ctx)
    return EtagCache(ctx.svc.redis).lookup(network_key, ctx.credential.fingerprint(), page_url)


def with_condition(call: HttpCall, cached: CachedPage) -> HttpCall:
    return HttpCall(
        call.method, call.url, call.params, {**call.headers, "If-None-Match": cached.etag}
    )


def keep_conditional(ctx: SyncContext, page_url: str, answer, page: Page, cached) -> None:
    """Keep the page (read, or reused on a 304) in the sync's own cache, with its ETag."""
    if ctx.provider.INCREMENTAL != "conditional":
        return
    etag = cached.etag if answer.status == 304 else answer.headers.get("etag")
    if not etag or "\0" in etag:
        return
    sync_key, _ = _cache_keys(ctx)
    # with the page's storage when the call left its lessons to send (one round trip)
    EtagCache(ctx.svc.redis).keep(
        sync_key, ctx.credential.fingerprint(), page_url, etag, page, batch=ctx.deferred
    )


def replace_cache(svc, record: dict) -> None:
    """A finalized sync's cache becomes its network's (``state.etag_cache``)."""
    import providers

    provider_cls = providers.provider_classes().get(record.get("provider", ""))
    if provider_cls is None or provider_cls.INCREMENTAL != "conditional":
        return
    sync_key, network_key = svc.store.etag_keys(record["sync_id"], record.get("relation", ""))
    EtagCache(svc.redis).replace(sync_key, network_key)


# -- heads (X, Bluesky, Mastodon) -------------------------------------------------------
def _int(value, default: int | None = 0) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def head_followups(ctx: SyncContext, page: Page, head_size: int) -> list[str]:
    """The cursors a head page launches, after deciding (``modes.head_step``) whether
    the head is done, goes on, or reads on in full (then the sync becomes full)."""
    svc, provider, record = ctx.svc, ctx.provider, ctx.record
    kind = provider.INCREMENTAL
    ids = list(dict.fromkeys(cid for cid, _ in page.connections))
    # a head stops at the first connection a sync read, not at one a stream added: a
    # streamed follow may be newer than one that was never pushed (a channel's lost event)
    read, streamed = svc.networks.known_ids_by_origin(ctx.user_id, provider.NAME, ctx.relation, ids)
    new = len(ids) - len(read) - len(streamed)
    if new:
        # counted before the page is stored: a redelivered page counts twice, and the
        # count check then reads in full (the safe side)
        svc.store.add_counts(ctx.sync_id, {"head_new": new})
    known_count = _int(record.get("known_count"))
    asked = head_size or provider.PAGE_SIZE
    newer = page.newer_cursor if kind == "since" else page.next_cursor
    step = modes.head_step(
        kind=kind,
        met_known=bool(read),
        page_full=page.item_count >= asked,
        has_next=newer is not None,
        read_so_far=_int(record.get("connections_fetched")) + len(page.connections),
        bound=modes.head_bound(known_count, provider.PAGE_SIZE),
        new_so_far=_int(record.get("head_new")) + new,
        known_count=known_count,
        stated_count=_int(record.get("expected_total"), None),
        check_count=(record.get("mode_requested") or modes.AUTO) == modes.AUTO,
    )
    if kind == "since" and page.connections and page.head_marker:
        svc.store.update(ctx.sync_id, new_head=page.head_marker)
    if step.action == "go_on":
        return [modes.with_head(0, newer)]
    if step.action == "done":
        return []
    # read on in full: what is read from here on, with the head's pages, is the network
    svc.store.update(ctx.sync_id, mode=modes.FULL, mode_reason=step.reason)
    record.update(mode=modes.FULL, mode_reason=step.reason)
    log.info(
        "head reads on in full sync=%s provider=%s reason=%s",
        ctx.sync_id,
        provider.NAME,
        step.reason,
    )
    if kind == "since":
        return [provider.first_cursor(ctx.account_id, ctx.relation)]
    return [page.next_cursor] if page.next_cursor else []


def note_full_head(ctx: SyncContext, bare: str, page: Page) -> None:
    """A full read's first page names the newest connection's marker (Mastodon's follow
    id): the head the next ``since`` read starts above."""
    if ctx.provider.INCREMENTAL != "since" or not page.head_marker or not page.connections:
        return
    if bare == ctx.provider.first_cursor(ctx.account_id, ctx.relation):
        ctx.svc.store.update(ctx.sync_id, new_head=page.head_marker)
