"""Sync state and stored networks, in Redis, changed only by atomic scripts.

Every key of one user's network on one provider shares the hash tag
``{provider:user_id}``, so each script touches one slot (the store can move to
Redis Cluster); the key names and the hash-tag rule are in ``state.keys``.
The scripts are ``state/lua/{begin,add_pending,mark_running,complete_page,
fail}.lua``, each with its keys and arguments in its header.

Global indexes (not part of any atomic step): the sync index (sync id → the
user's keys), ``synced_at`` (zset "provider:user" → last sync time, for
stale re-syncs), ``recent`` (zset of sync ids by creation time, for listing).
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from state.keys import Keys, SyncKeys, UserKeys
from state.lua import LuaScript

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "partial", "failed", "needs_reauth", "cancelled")

#: \A…\Z, not ^…$: "$" also matches before a final newline ("alice\n" would pass)
USER_ID_RE = re.compile(r"\A[A-Za-z0-9_.@:+-]{1,128}\Z")

#: begin_sync re-reads the in-flight marker at most this often if it keeps moving
BEGIN_ATTEMPTS = 20


@dataclass(frozen=True)
class SyncTicket:
    """What a trigger gets back: the sync that now answers for this user+provider."""

    sync_id: str
    provider: str
    status: str  # queued | fresh | running (an existing sync in flight)
    queue: str
    created: bool


class SyncStore:
    def __init__(self, redis_client, prefix: str = "netsync", clock=time.time):
        self.redis = redis_client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.clock = clock
        self._begin = LuaScript(redis_client, "begin")
        self._add_pending = LuaScript(redis_client, "add_pending")
        self._mark_running = LuaScript(redis_client, "mark_running")
        self._complete = LuaScript(redis_client, "complete_page")
        self._fail = LuaScript(redis_client, "fail")
        self._syncs: dict[str, SyncKeys] = {}

    # -- keys ---------------------------------------------------------------
    def _sync_keys(self, sync_id: str) -> SyncKeys | None:
        """The keys of a sync id (found in the sync index); ids never move, so they are cached."""
        found = self._syncs.get(sync_id)
        if found is None:
            raw = self.redis.hget(self.keys.sync_index, sync_id)
            if raw is None:
                return None
            found = UserKeys(raw.decode()).sync(sync_id)
            if len(self._syncs) > 10_000:
                self._syncs.clear()
            self._syncs[sync_id] = found
        return found

    # -- triggers -----------------------------------------------------------
    def begin_sync(self, *, user_id: str, provider: str, account_id: str, queue: str,
                   trigger: str, force: bool, freshness_s: int, stale_s: int) -> SyncTicket:
        """Start a sync unless one is in flight or the network is fresh (one atomic step)."""
        sync_id = "s_" + secrets.token_hex(12)
        user = self.keys.user(provider, user_id)
        now = self.clock()
        # Index first: a sync id must resolve as soon as anyone can see it.
        self.redis.hset(self.keys.sync_index, sync_id, user.base)
        fields = {"sync_id": sync_id, "user_id": user_id, "provider": provider,
                  "account_id": account_id, "queue": queue, "trigger": trigger}
        for _ in range(BEGIN_ATTEMPTS):
            # the script needs the in-flight sync's record as a key: read which one it is
            seen = self.redis.get(user.inflight)
            seen = seen.decode() if seen is not None else None
            outcome, sid, status, q = (v.decode() for v in self._begin(
                keys={"inflight": user.inflight, "last": user.last,
                      "record": user.sync(sync_id).record,
                      "seen_record": user.sync(seen).record if seen else None},
                args={"sync_id": sync_id, "now": repr(now), "freshness_s": freshness_s,
                      "stale_s": stale_s, "force": bool(force), "seen": seen, "fields": fields},
            ))
            if outcome != "retry":
                break
        else:
            self.redis.hdel(self.keys.sync_index, sync_id)
            raise RuntimeError(f"{provider} sync of {user_id}: the in-flight marker kept moving")
        if outcome != "created":
            self.redis.hdel(self.keys.sync_index, sync_id)
        else:
            self.redis.zadd(self.keys.recent, {sync_id: now})
        return SyncTicket(sid, provider, status, q, outcome == "created")

    # -- reads --------------------------------------------------------------
    def get_sync(self, sync_id: str) -> dict | None:
        keys = self._sync_keys(sync_id)
        if keys is None:
            return None
        raw = self.redis.hgetall(keys.record)
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def page_snapshot(self, sync_id: str, cursor: str | None):
        """(record, cursor already stored?, credential blob) in one round trip.

        The hot path of every task: the record says whether the sync is
        still active, the done set whether this page is a redelivery, and the
        credential lives under the same hash tag (``:cred``).
        """
        keys = self._sync_keys(sync_id)
        if keys is None:
            return None, False, None
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.record)
            pipe.hexists(keys.done, cursor or "")
            pipe.get(keys.user.credential)
            raw, done, blob = pipe.execute()
        record = {k.decode(): v.decode() for k, v in raw.items()} or None
        return record, bool(done) and cursor is not None, blob

    def last_sync(self, provider: str, user_id: str) -> dict:
        raw = self.redis.hgetall(self.keys.user(provider, user_id).last)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def network_page(self, provider: str, user_id: str, cursor: str | None, limit: int):
        """One page of the live network, read in one transaction (never straddles a swap)."""
        user = self.keys.user(provider, user_id)
        start = b"(" + cursor.encode() if cursor else b"-"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(user.last)
            pipe.zrangebylex(user.network, start, b"+", 0, limit + 1)
            last, ids = pipe.execute()
        if not last:
            return None
        more = len(ids) > limit
        ids = ids[:limit]
        handles = self.redis.hmget(user.network_h, ids) if ids else []
        meta = {k.decode(): v.decode() for k, v in last.items()}
        conns = [{"id": i.decode(), "handle": (h or b"").decode()} for i, h in zip(ids, handles)]
        return meta, conns, (conns[-1]["id"] if more else None)

    def changes(self, provider: str, user_id: str) -> dict | None:
        user = self.keys.user(provider, user_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(user.last, "sync_id")
            pipe.zrange(user.added, 0, -1)
            pipe.zrange(user.removed, 0, -1)
            sync_id, added, removed = pipe.execute()
        if sync_id is None:
            return None
        return {"sync_id": sync_id.decode(), "added": [a.decode() for a in added],
                "removed": [r.decode() for r in removed]}

    def change_counts(self, provider: str, user_id: str) -> tuple[int, int]:
        user = self.keys.user(provider, user_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(user.added)
            pipe.zcard(user.removed)
            added, removed = pipe.execute()
        return added, removed

    def list_syncs(self, status: str | None = None, queue: str | None = None, limit: int = 50):
        ids = self.redis.zrevrange(self.keys.recent, 0, max(limit * 20, 200))
        out = []
        for sid in ids:
            rec = self.get_sync(sid.decode())
            if rec and (status is None or rec.get("status") == status) and (
                queue is None or rec.get("queue") == queue
            ):
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def stale_networks(self, older_than: float, provider: str | None, limit: int):
        """(provider, user_id) of networks last synced before ``older_than``, stalest first."""
        out = []
        for member in self.redis.zrangebyscore(self.keys.synced_at, "-inf", older_than):
            prov, _, user = member.decode().partition(":")
            if provider is None or prov == provider:
                out.append((prov, user))
                if len(out) >= limit:
                    break
        return out

    def pending_cursors(self, sync_id: str) -> list[str]:
        """Cursors launched and not yet stored (what a stalled sync still needs)."""
        keys = self._sync_keys(sync_id)
        if keys is None:
            return []
        return sorted(c.decode() for c in self.redis.hkeys(keys.pending))

    def pages_done(self, sync_id: str) -> int:
        keys = self._sync_keys(sync_id)
        return int(self.redis.hlen(keys.done)) if keys else 0

    # -- page bookkeeping ---------------------------------------------------
    def update(self, sync_id: str, **fields) -> None:
        keys = self._sync_keys(sync_id)
        if keys and fields:
            self.redis.hset(keys.record, mapping={k: str(v) for k, v in fields.items()})

    def mark_running(self, sync_id: str) -> bool:
        keys = self._sync_keys(sync_id)
        return bool(self._mark_running(keys={"record": keys.record},
                                       args={"now": repr(self.clock())}))

    def note_call(self, sync_id: str, rate_fields: dict) -> None:
        """Count one provider call against the sync and keep what its headers said."""
        keys = self._sync_keys(sync_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.record, "calls", 1)
            if rate_fields:
                pipe.hset(keys.record, mapping=rate_fields)
            pipe.execute()

    def add_pending(self, sync_id: str, parent: str, cursors: list[str]) -> list[str]:
        """Mark cursors launched by ``parent`` before sending their tasks (see add_pending.lua)."""
        if not cursors:
            return []
        keys = self._sync_keys(sync_id)
        marks = self._add_pending(keys={"record": keys.record, "pending": keys.pending,
                                        "done": keys.done},
                                  args={"parent": parent, "cursors": list(cursors)})
        return [x.decode() for x in marks]

    def complete_page(self, sync_id: str, cursor: str, connections,
                      partial_reason: str = "", rate_fields: dict | None = None,
                      count_call: bool = False) -> str:
        """Store one page's connections; the last page finalizes the sync.

        With ``count_call`` it also counts the page's call and keeps
        ``rate_fields`` (what the answer's rate-limit headers said), so the
        hot path needs one round trip instead of two.
        Returns ``stored``, ``duplicate`` (already stored: a redelivery),
        ``inactive`` (the sync ended meanwhile), or the final status.
        """
        keys = self._sync_keys(sync_id)
        user = keys.user
        result = self._complete(
            keys={"record": keys.record, "pending": keys.pending, "done": keys.done,
                  "staging": keys.staging, "staging_h": keys.staging_h,
                  "network": user.network, "network_h": user.network_h, "added": user.added,
                  "removed": user.removed, "last": user.last, "inflight": user.inflight},
            args={"sync_id": sync_id, "cursor": cursor, "now": repr(self.clock()),
                  "partial_reason": partial_reason,
                  "connections": [part for pair in connections for part in pair],
                  "count_call": bool(count_call),
                  "rate_fields": {k: _text(v) for k, v in (rate_fields or {}).items()}},
        ).decode()
        if result in FINAL:
            self._index_synced(sync_id)
        return result

    def fail(self, sync_id: str, status: str, kind: str, message: str) -> bool:
        """End an active sync as failed / needs_reauth / cancelled; the old network stays."""
        assert status in FINAL and status not in ("succeeded", "partial")
        keys = self._sync_keys(sync_id)
        return bool(self._fail(
            keys={"record": keys.record, "pending": keys.pending, "done": keys.done,
                  "staging": keys.staging, "staging_h": keys.staging_h,
                  "inflight": keys.user.inflight},
            args={"sync_id": sync_id, "status": status, "now": repr(self.clock()),
                  "kind": kind, "message": message[:500]},
        ))

    def _index_synced(self, sync_id: str) -> None:
        rec = self.get_sync(sync_id) or {}
        if rec.get("provider") and rec.get("user_id"):
            self.redis.zadd(self.keys.synced_at,
                            {f"{rec['provider']}:{rec['user_id']}": float(rec["finished_at"])})


def _text(value) -> str:
    """A field value as the Redis client would have written it (numbers by repr)."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else repr(value)
