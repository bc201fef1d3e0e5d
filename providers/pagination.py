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

import math

#: cursor prefixes of the offset strategies
OFFSET_PREFIX = "offset:"
LANE_PREFIX = "lane:"


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
def initial_cursors(
    provider, account_id: str, size: int | None, relation: str | None = None
) -> list[str]:
    """The cursors round two starts with."""
    from providers.provider import Pagination

    page_size = provider.PAGE_SIZE
    if provider.PAGINATION is Pagination.OFFSET_KNOWN and size is not None:
        pages = max(1, math.ceil(size / page_size))
        return [offset_cursor(i * page_size) for i in range(pages)]
    if provider.PAGINATION in (Pagination.OFFSET_KNOWN, Pagination.OFFSET_UNKNOWN):
        return [lane_cursor(i * page_size) for i in range(provider.LANES)]
    if relation is None:  # the default relation: a provider of one needs no argument
        return [provider.first_cursor(account_id)]
    return [provider.first_cursor(account_id, relation)]


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
