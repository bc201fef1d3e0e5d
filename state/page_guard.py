"""The page guard's per-sync memory: which pages a sync has seen, in Redis.

The rules (what counts as a repeated page, a one-item run, too many pages)
are ``providers.pagination``'s; this module only remembers, under the sync's
own hash tag, what they need to know.
"""
from __future__ import annotations

import hashlib

from providers.pagination import page_limit

#: how long the guard's per-sync memory outlives its last page (seconds)
GUARD_TTL_S = 6 * 3600


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
