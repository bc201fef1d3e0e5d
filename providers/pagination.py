"""Pagination shared by every provider: cursors, what a page launches, and the guards.

Strategies (``Provider.PAGINATION``), from the talk's "managing pagination":

- ``OFFSET_KNOWN``: the size is known and offsets are addressable, so round
  two launches every page at once (``offset:<n>`` cursors). Only the last
  planned page, when it comes back full, chains one page further: the
  network grew between the size call and the pages.
- ``CURSOR`` / ``LINK``: each page launches the next as soon as it has the
  provider's cursor or ``rel="next"`` link.
- ``OFFSET_UNKNOWN`` (or ``OFFSET_KNOWN`` without a size): a window of
  ``LANES`` pages in flight (``lane:<n>`` cursors); an empty (or short) page
  ends its lane, a full one launches ``offset + LANES * PAGE_SIZE``.

Guards stop a provider's pagination bugs before they become endless syncs
(LinkedIn's occasional off-by-one run of one-person pages, Facebook's
empty pages that still say ``next``): a repeated cursor (the store refuses
it), a repeated page, a run of one-item pages, and more pages than
``ceil(total / PAGE_SIZE)`` plus a little slack. A guard only stops the
chain it is on: pages already in flight still land, and the sync ends
``partial`` with the guard's name as the reason.

Restarts (Facebook's expired cursor) tag cursors with a generation
(``r1|after:…``), so the restarted chain does not collide with the pages
already done and a second expiry is known to be the second.
"""
from __future__ import annotations

import hashlib
import math

#: cursor prefixes of the offset strategies
OFFSET_PREFIX = "offset:"
LANE_PREFIX = "lane:"
#: how long the guard's per-sync memory outlives its last page (seconds)
GUARD_TTL_S = 6 * 3600


# -- cursors ---------------------------------------------------------------------
def offset_cursor(offset: int) -> str:
    return f"{OFFSET_PREFIX}{offset}"


def lane_cursor(offset: int) -> str:
    return f"{LANE_PREFIX}{offset}"


def is_offset_cursor(cursor: str) -> bool:
    return cursor.startswith((OFFSET_PREFIX, LANE_PREFIX))


def cursor_offset(cursor: str) -> int:
    return int(cursor.partition(":")[2])


def split_generation(cursor: str) -> tuple[int, str]:
    """``r1|after:x`` → (1, "after:x"); a cursor of the first run → (0, cursor)."""
    head, sep, rest = cursor.partition("|")
    if sep and head[:1] == "r" and head[1:].isdigit():
        return int(head[1:]), rest
    return 0, cursor


def with_generation(generation: int, cursor: str) -> str:
    return f"r{generation}|{cursor}" if generation else cursor


# -- what a page launches ----------------------------------------------------------
def initial_cursors(provider, account_id: str, size: int | None) -> list[str]:
    """The cursors round two starts with."""
    from providers.provider import Pagination

    page_size = provider.PAGE_SIZE
    if provider.PAGINATION is Pagination.OFFSET_KNOWN and size is not None:
        pages = max(1, math.ceil(size / page_size))
        return [offset_cursor(i * page_size) for i in range(pages)]
    if provider.PAGINATION in (Pagination.OFFSET_KNOWN, Pagination.OFFSET_UNKNOWN):
        return [lane_cursor(i * page_size) for i in range(provider.LANES)]
    return [provider.first_cursor(account_id)]


def followups(provider, cursor: str, page, expected_total: int | None) -> list[str]:
    """The cursors this page launches (before the guards have their say)."""
    if not is_offset_cursor(cursor):
        return page.followups
    offset, size = cursor_offset(cursor), provider.PAGE_SIZE
    # The documented end of offset paging: a page with fewer items than asked for.
    if page.item_count < size:
        return []
    if cursor.startswith(LANE_PREFIX):
        return [lane_cursor(offset + provider.LANES * size)]
    if expected_total is None or offset + size >= expected_total:
        return [offset_cursor(offset + size)]
    return []  # a planned page: the page after it was launched in round one


# -- guards -------------------------------------------------------------------------
def page_limit(expected_total: int | None, page_size: int, slack: int) -> int | None:
    """Most pages a sync of this size may take before the guard stops it."""
    if expected_total is None:
        return None
    pages = math.ceil(expected_total / page_size)
    return pages + max(slack, pages // 10)


class PageGuard:
    """Per-sync memory of the pages seen, in Redis under the sync's own hash tag.

    Fields: ``sig:<hash of a page's ids>`` → the cursor that first returned
    that page; ``ones`` → the current run of one-item pages.
    """

    def __init__(self, redis_client, key: str):
        self.redis = redis_client
        self.key = key

    def check(self, provider, cursor: str, page, launches: list[str], pages_done: int,
              expected_total: int | None) -> str:
        """Why paging must stop at this page ("" to go on). One round trip."""
        run_limit = provider.ONE_ITEM_RUN_LIMIT if provider.PAGE_SIZE > 1 else 0
        count_ones = bool(launches and run_limit)
        repeated, ones = self._record(cursor, page, count_ones)
        if not launches:
            return ""
        if repeated:
            return "repeated_page"
        if count_ones and page.item_count == 1 and ones >= run_limit:
            return "one_item_pages"
        limit = page_limit(expected_total if expected_total is not None else page.total,
                           provider.PAGE_SIZE, provider.PAGE_SLACK)
        if limit is not None and pages_done >= limit:
            return "page_limit"
        return ""

    def _record(self, cursor: str, page, count_ones: bool) -> tuple[bool, int]:
        """Remember this page's content and the run of one-item pages, in one pipeline.

        Returns (another cursor already returned this page, current run of
        one-item pages).
        """
        field = None
        if page.connections:  # empty pages are all alike (Facebook sends them with next)
            ids = "\n".join(sorted(conn_id for conn_id, _ in page.connections))
            field = "sig:" + hashlib.blake2b(ids.encode(), digest_size=12).hexdigest()
        if field is None and not count_ones:
            return False, 0
        with self.redis.pipeline(transaction=False) as pipe:
            if field is not None:
                pipe.hsetnx(self.key, field, cursor)
                pipe.hget(self.key, field)
            if count_ones:
                if page.item_count == 1:
                    pipe.hincrby(self.key, "ones", 1)
                else:
                    pipe.hset(self.key, "ones", 0)
            pipe.expire(self.key, GUARD_TTL_S)
            results = pipe.execute()
        repeated = False
        if field is not None:
            first = results[1]
            first = first.decode() if isinstance(first, bytes) else first
            repeated = first is not None and first != cursor
        ones = int(results[-2]) if count_ones and page.item_count == 1 else 0
        return repeated, ones


# -- Link headers (GitHub, Mastodon) ---------------------------------------------------
def parse_link_header(value: str) -> dict[str, str]:
    """``<url>; rel="next", <url>; rel="last"`` → {"next": url, "last": url}."""
    links = {}
    for part in value.split(","):
        url, _, params = part.partition(";")
        url = url.strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "rel":
                for rel in val.strip().strip('"').split():
                    links[rel] = url[1:-1]
    return links
