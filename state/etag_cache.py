"""The conditional cache: per network and token, each page's ETag and what the page held.

GitHub answers ``If-None-Match`` with a free ``304 Not Modified`` when the
page is unchanged, and its ETags are tied to the token. A sync of a provider
that reads conditionally (``Provider.INCREMENTAL == "conditional"``) keeps,
for every page it reads, the page's ETag and the page as parsed (its
connections and where it points), in a hash of its own; when the sync
finalizes, that hash replaces the network's (one ``RENAME``: the cache always
describes one whole sync, never a mix). A sync that fails leaves the old cache
(its own hash expires).

Only incremental syncs send the condition (``sync.tasks``), so a full sync
never depends on what is kept here. A cache written under another token
(field ``~token``: the credential's fingerprint, never the token) is not used;
an entry that does not decode is not used either: that page is read in full.

Why Redis rather than PostgreSQL: the page task already talks to Redis around
its call, the cache is disposable (losing it costs calls, never a wrong
network), and replacing it whole is one atomic ``RENAME``. It is kept small:
one field per page, the page compressed (measured in ``bench/modes.py``:
bytes per connection).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import redis.exceptions

from providers.provider import Page

#: the field naming the token (fingerprint) a cache was written with
TOKEN_FIELD = "~token"
#: a sync's own hash outlives any sync; the network's, a network nobody re-syncs
SYNC_CACHE_TTL_S = 2 * 86400
NETWORK_CACHE_TTL_S = 30 * 86400
#: ETag and page are separated by a byte no ETag holds (RFC 9110: etagc excludes NUL)
_SEP = b"\0"
_ITEM, _FIELD = "\x1f", "\x1e"


@dataclass(frozen=True)
class CachedPage:
    etag: str
    page: Page


def encode_entry(etag: str, page: Page) -> bytes:
    """One page as kept: its ETag, NUL, then the page compressed (ids and handles joined
    by control characters no id or handle holds; the cursors it points to)."""
    connections = _ITEM.join(f"{cid}{_FIELD}{handle}" for cid, handle in page.connections)
    doc = {"c": connections, "n": page.next_cursor, "f": list(page.fan_out)}
    if page.total is not None:
        doc["t"] = page.total
    packed = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)
    return etag.encode() + _SEP + packed


def decode_entry(raw: bytes | None) -> CachedPage | None:
    """An entry as ``encode_entry`` wrote it, or None when it does not decode (then the
    page is read without a condition: never a wrong page)."""
    if not raw:
        return None
    try:
        etag, sep, packed = raw.partition(_SEP)
        if not sep or not etag:
            return None
        doc = json.loads(zlib.decompress(packed))
        text = doc["c"]
        connections = []
        if text:
            for item in text.split(_ITEM):
                cid, sep, handle = item.partition(_FIELD)
                if not sep or not cid:
                    return None
                connections.append((cid, handle))
        next_cursor, fan_out, total = doc.get("n"), doc.get("f") or [], doc.get("t")
        if next_cursor is not None and not isinstance(next_cursor, str):
            return None
        if not all(isinstance(c, str) for c in fan_out):
            return None
        if total is not None and not isinstance(total, int):
            return None
        page = Page(connections, next_cursor=next_cursor, fan_out=tuple(fan_out), total=total)
        return CachedPage(etag.decode("ascii"), page)
    except (ValueError, KeyError, TypeError, zlib.error, UnicodeDecodeError, AttributeError):
        return None


class EtagCache:
    """Read the network's cache, write a sync's, and let the sync's replace it."""

    def __init__(self, redis_client):
        self.redis = redis_client

    def lookup(self, network_key: str, token: str, page_url: str) -> CachedPage | None:
        """What the last sync kept for ``page_url`` under this token (None: nothing usable)."""
        owner, raw = self.redis.hmget(network_key, [TOKEN_FIELD, page_url])
        if owner is None or owner.decode(errors="replace") != token:
            return None
        return decode_entry(raw)

    def keep(self, sync_key: str, token: str, page_url: str, etag: str, page: Page, batch=None):
        """Keep a page a sync read (or reused) in the sync's own cache."""
        entry = encode_entry(etag, page)

        def queue(pipe):
            pipe.hset(sync_key, mapping={TOKEN_FIELD: token, page_url: entry})
            pipe.expire(sync_key, SYNC_CACHE_TTL_S)

        if batch is not None:
            batch.add(queue)
            return
        pipe = self.redis.pipeline(transaction=False)
        queue(pipe)
        pipe.execute()

    def replace(self, sync_key: str, network_key: str) -> bool:
        """The sync's cache becomes the network's (atomic); False when the sync kept none
        (a sync that read no page conditionally-capable: the old cache stays)."""
        # RENAME is atomic on its own (both keys share the user's hash tag, so it works on
        # a Redis Cluster too); the TTL follows it (a key left without one is harmless)
        try:
            self.redis.rename(sync_key, network_key)
        except redis.exceptions.ResponseError as exc:
            if "no such key" in str(exc).lower():  # this sync kept no page (or replaced already)
                return False
            raise
        self.redis.expire(network_key, NETWORK_CACHE_TTL_S)
        return True

    def size_bytes(self, network_key: str) -> int:
        """What the network's cache takes in Redis (``MEMORY USAGE``, all fields)."""
        return int(self.redis.memory_usage(network_key, samples=0) or 0)
