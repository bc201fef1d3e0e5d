"""The page guard's per-sync memory: which pages a sync has seen, in Redis.

The rules (what counts as a repeated page, a one-item run, too many pages)
are ``providers.pagination``'s. The guard's memory is a hash under the
sync's own hash tag (``SyncKeys.guard``), so it is recorded by the scripts
that already touch the page: ``add_pending.lua`` for a page that launches
others (before they are sent; its answer says why paging stops, if it
must) and ``complete_page.lua`` for a page that launches nothing (it is only
remembered). The Lua half is ``state/lua/guard_prelude.lua``; this module
works out, from the page, what it needs (``guard_args``).

Fields: ``sig:<hash of a page's ids>`` → the cursor that first returned
that page; ``ones`` → the current run of one-item pages.
"""

from __future__ import annotations

import hashlib

from providers.pagination import page_limit

#: how long the guard's per-sync memory outlives its last page (seconds)
GUARD_TTL_S = 6 * 3600

#: the reasons the guard stops paging (besides ""): as guard_prelude.lua spells them
REASONS = ("repeated_page", "one_item_pages", "page_limit")


def page_signature(page) -> str | None:
    """The guard's field for a page's content (None for an empty page: empty pages
    are all alike; Facebook sends them with a next cursor)."""
    if not page.connections:
        return None
    ids = "\n".join(sorted(conn_id for conn_id, _ in page.connections))
    return "sig:" + hashlib.blake2b(ids.encode(), digest_size=12).hexdigest()


def guard_args(
    provider, cursor: str, page, launches: list[str], pages_done: int, expected_total: int | None
) -> dict:
    """What guard_prelude.lua needs of one page (the script's ``guard`` argument).

    ``pages_done`` counts this page; ``expected_total`` is the sync's known
    size (None: the page's own total, if it states one).
    """
    run_limit = (provider.ONE_ITEM_RUN_LIMIT or 0) if provider.PAGE_SIZE > 1 else 0
    limit = page_limit(
        expected_total if expected_total is not None else page.total,
        provider.PAGE_SIZE,
        provider.PAGE_SLACK,
    )
    args = {
        "cursor": cursor,
        "count_ones": bool(launches and run_limit),
        "one_item": page.item_count == 1,
        "run_limit": run_limit,
        "at_limit": limit is not None and pages_done >= limit,
        "ttl": GUARD_TTL_S,
    }
    sig = page_signature(page)
    if sig is not None:  # left out, not null: a JSON null is not nil in Lua
        args["sig"] = sig
    return args
