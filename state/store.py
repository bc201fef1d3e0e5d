"""Sync state and stored networks, in Redis, changed only by atomic scripts.

Every key of one user's network on one provider shares the hash tag
``{provider:user_id}``, so each script below touches one slot (the store can
move to Redis Cluster). Per tag::

    P:{p:u}:inflight            sync id of the sync in flight (one per user+provider)
    P:{p:u}:last                hash: the last complete network's sync id, time, count, size
    P:{p:u}:network, :network_h the live network: zset of ids (lex order = paging order) + id→handle
    P:{p:u}:added, :removed     the last completed sync's diff
    P:{p:u}:sync:<id>           hash: the sync record (status, counters, error, rate headers)
    P:{p:u}:sync:<id>:pending   hash: page cursor launched, not yet stored → cursor that launched it
    P:{p:u}:sync:<id>:done      hash: page cursor stored → its parent (a redelivered page is a no-op)
    P:{p:u}:sync:<id>:staging   zset + hash (:staging_h) of connections fetched so far

Global indexes (not part of any atomic step): ``P:syncs`` (sync id → tag),
``P:synced_at`` (zset "provider:user" → last sync time, for stale re-syncs),
``P:recent`` (zset of sync ids by creation time, for listing).
"""
from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

import orjson

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "partial", "failed", "needs_reauth", "cancelled")

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")

_BEGIN = """
local base, sync_id = KEYS[1], ARGV[1]
local now, freshness, stale, force = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local current = redis.call('GET', base .. ':inflight')
if current then
  local rec = base .. ':sync:' .. current
  local st = redis.call('HGET', rec, 'status')
  local created = tonumber(redis.call('HGET', rec, 'created_at') or '0')
  if (st == 'queued' or st == 'running') and now - created < stale then
    return {'inflight', current, st, redis.call('HGET', rec, 'queue') or ''}
  end
end
if force ~= '1' then
  local synced_at = tonumber(redis.call('HGET', base .. ':last', 'synced_at') or '')
  if synced_at and now - synced_at < freshness then
    local last = redis.call('HMGET', base .. ':last', 'sync_id', 'queue')
    return {'fresh', last[1] or '', 'fresh', last[2] or ''}
  end
end
local rec = base .. ':sync:' .. sync_id
for i = 6, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', rec, 'status', 'queued', 'created_at', ARGV[2],
           'pages_fetched', 0, 'connections_fetched', 0, 'calls', 0)
redis.call('SET', base .. ':inflight', sync_id)
return {'created', sync_id, 'queued', redis.call('HGET', rec, 'queue') or ''}
"""

# Marks cursors as launched by ``parent`` (the cursor of the page that found
# them; "" for round one). Per cursor: "new" (send it), "rerun" (already
# launched by this same parent: we are a redelivery, send again, harmless),
# "repeat" (another page already launched or stored it: the provider
# repeated a cursor; do not send).
_ADD_PENDING = """
local rec, parent = KEYS[1], ARGV[1]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return {} end
local out = {}
for i = 2, #ARGV do
  local owner = redis.call('HGET', rec .. ':done', ARGV[i])
  if owner == false then owner = redis.call('HGET', rec .. ':pending', ARGV[i]) end
  if owner == false then
    redis.call('HSET', rec .. ':pending', ARGV[i], parent)
    out[#out + 1] = 'new'
  elseif owner == parent then out[#out + 1] = 'rerun'
  else out[#out + 1] = 'repeat' end
end
return out
"""

_MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
return 1
"""

# Finalizing: the last page's completion swaps staging in (partial if a guard flagged it).
_FINALIZE_FN = """
local function finalize(base, rec, sync_id, now)
  local staging, staging_h = rec .. ':staging', rec .. ':staging_h'
  local network, network_h = base .. ':network', base .. ':network_h'
  redis.call('DEL', base .. ':added', base .. ':removed')
  redis.call('ZDIFFSTORE', base .. ':added', 2, staging, network)
  redis.call('ZDIFFSTORE', base .. ':removed', 2, network, staging)
  local count = redis.call('ZCARD', staging)
  if count > 0 then
    redis.call('RENAME', staging, network)
    redis.call('RENAME', staging_h, network_h)
  else
    redis.call('DEL', network, network_h, staging_h)
  end
  local status = 'succeeded'
  if redis.call('HEXISTS', rec, 'partial_reason') == 1 then status = 'partial' end
  redis.call('HSET', rec, 'status', status, 'finished_at', now, 'connections_fetched', count)
  local size = redis.call('HGET', rec, 'expected_total') or count
  redis.call('HSET', base .. ':last', 'sync_id', sync_id, 'synced_at', now, 'count', count,
             'size', size, 'status', status, 'queue', redis.call('HGET', rec, 'queue') or '')
  redis.call('DEL', rec .. ':pending', rec .. ':done')
  if redis.call('GET', base .. ':inflight') == sync_id then redis.call('DEL', base .. ':inflight') end
  return status
end
"""

_COMPLETE_PAGE = _FINALIZE_FN + """
local base, rec = KEYS[1], KEYS[2]
local sync_id, cursor, now, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 'inactive' end
local parent = redis.call('HGET', rec .. ':pending', cursor) or ''
if redis.call('HSETNX', rec .. ':done', cursor, parent) == 0 then return 'duplicate' end
redis.call('HDEL', rec .. ':pending', cursor)
if reason ~= '' then redis.call('HSET', rec, 'partial_reason', reason) end
-- connections arrive as one JSON array [id, handle, id, handle, ...]: one
-- argument to encode instead of two per connection.
local flat = cjson.decode(ARGV[5])
local n = #flat / 2
local chunk = 500
for first = 0, n - 1, chunk do
  local last = math.min(first + chunk, n) - 1
  local zargs, hargs = {}, {}
  for i = first, last do
    local id, handle = flat[1 + 2 * i], flat[2 + 2 * i]
    zargs[#zargs + 1] = 0; zargs[#zargs + 1] = id
    hargs[#hargs + 1] = id; hargs[#hargs + 1] = handle
  end
  redis.call('ZADD', rec .. ':staging', unpack(zargs))
  redis.call('HSET', rec .. ':staging_h', unpack(hargs))
end
-- what the call's headers said, kept with the sync (and the call counted)
for i = 7, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
if ARGV[6] == '1' then redis.call('HINCRBY', rec, 'calls', 1) end
redis.call('HINCRBY', rec, 'pages_fetched', 1)
redis.call('HSET', rec, 'connections_fetched', redis.call('ZCARD', rec .. ':staging'))
if redis.call('HLEN', rec .. ':pending') == 0 then return finalize(base, rec, sync_id, now) end
return 'stored'
"""

_FAIL = """
local base, rec = KEYS[1], KEYS[2]
local sync_id = ARGV[1]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
redis.call('HSET', rec, 'status', ARGV[2], 'finished_at', ARGV[3], 'error_kind', ARGV[4],
           'error_message', ARGV[5])
redis.call('DEL', rec .. ':pending', rec .. ':done', rec .. ':staging', rec .. ':staging_h')
if redis.call('GET', base .. ':inflight') == sync_id then redis.call('DEL', base .. ':inflight') end
return 1
"""


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
        self.clock = clock
        self._begin = redis_client.register_script(_BEGIN)
        self._add_pending = redis_client.register_script(_ADD_PENDING)
        self._mark_running = redis_client.register_script(_MARK_RUNNING)
        self._complete = redis_client.register_script(_COMPLETE_PAGE)
        self._fail = redis_client.register_script(_FAIL)
        self._tags: dict[str, str] = {}

    # -- keys ---------------------------------------------------------------
    def base(self, provider: str, user_id: str) -> str:
        return f"{self.prefix}:{{{provider}:{user_id}}}"

    def _record_key(self, sync_id: str) -> tuple[str, str] | None:
        """(base, record key) of a sync id; ids never move, so they are cached."""
        base = self._tags.get(sync_id)
        if base is None:
            raw = self.redis.hget(f"{self.prefix}:syncs", sync_id)
            if raw is None:
                return None
            base = raw.decode()
            if len(self._tags) > 10_000:
                self._tags.clear()
            self._tags[sync_id] = base
        return base, f"{base}:sync:{sync_id}"

    # -- triggers -----------------------------------------------------------
    def begin_sync(self, *, user_id: str, provider: str, account_id: str, queue: str,
                   trigger: str, force: bool, freshness_s: int, stale_s: int) -> SyncTicket:
        """Start a sync unless one is in flight or the network is fresh (one atomic step)."""
        sync_id = "s_" + secrets.token_hex(12)
        base = self.base(provider, user_id)
        now = self.clock()
        # Index first: a sync id must resolve as soon as anyone can see it.
        self.redis.hset(f"{self.prefix}:syncs", sync_id, base)
        fields = {"sync_id": sync_id, "user_id": user_id, "provider": provider,
                  "account_id": account_id, "queue": queue, "trigger": trigger}
        argv = [sync_id, repr(now), freshness_s, stale_s, "1" if force else "0"]
        for key, value in fields.items():
            argv += [key, value]
        outcome, sid, status, q = (
            v.decode() for v in self._begin(keys=[base], args=argv)
        )
        if outcome != "created":
            self.redis.hdel(f"{self.prefix}:syncs", sync_id)
        else:
            self.redis.zadd(f"{self.prefix}:recent", {sync_id: now})
        return SyncTicket(sid, provider, status, q, outcome == "created")

    # -- reads --------------------------------------------------------------
    def get_sync(self, sync_id: str) -> dict | None:
        keys = self._record_key(sync_id)
        if keys is None:
            return None
        raw = self.redis.hgetall(keys[1])
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def page_snapshot(self, sync_id: str, cursor: str | None):
        """(record, cursor already stored?, credential blob) in one round trip.

        The hot path of every task: the record says whether the sync is
        still active, the done set whether this page is a redelivery, and the
        credential lives under the same hash tag (``:cred``).
        """
        keys = self._record_key(sync_id)
        if keys is None:
            return None, False, None
        base, rec = keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(rec)
            pipe.hexists(rec + ":done", cursor or "")
            pipe.get(base + ":cred")
            raw, done, blob = pipe.execute()
        record = {k.decode(): v.decode() for k, v in raw.items()} or None
        return record, bool(done) and cursor is not None, blob

    def last_sync(self, provider: str, user_id: str) -> dict:
        raw = self.redis.hgetall(self.base(provider, user_id) + ":last")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def network_page(self, provider: str, user_id: str, cursor: str | None, limit: int):
        """One page of the live network, read in one transaction (never straddles a swap)."""
        base = self.base(provider, user_id)
        start = b"(" + cursor.encode() if cursor else b"-"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(base + ":last")
            pipe.zrangebylex(base + ":network", start, b"+", 0, limit + 1)
            last, ids = pipe.execute()
        if not last:
            return None
        more = len(ids) > limit
        ids = ids[:limit]
        handles = self.redis.hmget(base + ":network_h", ids) if ids else []
        meta = {k.decode(): v.decode() for k, v in last.items()}
        conns = [{"id": i.decode(), "handle": (h or b"").decode()} for i, h in zip(ids, handles)]
        return meta, conns, (conns[-1]["id"] if more else None)

    def changes(self, provider: str, user_id: str) -> dict | None:
        base = self.base(provider, user_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(base + ":last", "sync_id")
            pipe.zrange(base + ":added", 0, -1)
            pipe.zrange(base + ":removed", 0, -1)
            sync_id, added, removed = pipe.execute()
        if sync_id is None:
            return None
        return {"sync_id": sync_id.decode(), "added": [a.decode() for a in added],
                "removed": [r.decode() for r in removed]}

    def change_counts(self, provider: str, user_id: str) -> tuple[int, int]:
        base = self.base(provider, user_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(base + ":added")
            pipe.zcard(base + ":removed")
            added, removed = pipe.execute()
        return added, removed

    def list_syncs(self, status: str | None = None, queue: str | None = None, limit: int = 50):
        ids = self.redis.zrevrange(f"{self.prefix}:recent", 0, max(limit * 20, 200))
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
        for member in self.redis.zrangebyscore(f"{self.prefix}:synced_at", "-inf", older_than):
            prov, _, user = member.decode().partition(":")
            if provider is None or prov == provider:
                out.append((prov, user))
                if len(out) >= limit:
                    break
        return out

    # -- page bookkeeping ---------------------------------------------------
    def update(self, sync_id: str, **fields) -> None:
        keys = self._record_key(sync_id)
        if keys and fields:
            self.redis.hset(keys[1], mapping={k: str(v) for k, v in fields.items()})

    def mark_running(self, sync_id: str) -> bool:
        base, rec = self._record_key(sync_id)
        return bool(self._mark_running(keys=[rec], args=[repr(self.clock())]))

    def note_call(self, sync_id: str, rate_fields: dict) -> None:
        """Count one provider call against the sync and keep what its headers said."""
        base, rec = self._record_key(sync_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(rec, "calls", 1)
            if rate_fields:
                pipe.hset(rec, mapping=rate_fields)
            pipe.execute()

    def add_pending(self, sync_id: str, parent: str, cursors: list[str]) -> list[str]:
        """Mark cursors launched by ``parent`` before sending their tasks (see _ADD_PENDING)."""
        if not cursors:
            return []
        base, rec = self._record_key(sync_id)
        return [x.decode() for x in self._add_pending(keys=[rec], args=[parent, *cursors])]

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
        base, rec = self._record_key(sync_id)
        flat = [part for pair in connections for part in pair]
        argv = [sync_id, cursor, repr(self.clock()), partial_reason,
                orjson.dumps(flat), "1" if count_call else "0"]
        for key, value in (rate_fields or {}).items():
            argv += [key, value]
        result = self._complete(keys=[base, rec], args=argv).decode()
        if result in FINAL:
            self._index_synced(sync_id)
        return result

    def fail(self, sync_id: str, status: str, kind: str, message: str) -> bool:
        """End an active sync as failed / needs_reauth / cancelled; the old network stays."""
        assert status in FINAL and status not in ("succeeded", "partial")
        base, rec = self._record_key(sync_id)
        return bool(self._fail(keys=[base, rec],
                               args=[sync_id, status, repr(self.clock()), kind, message[:500]]))

    def _index_synced(self, sync_id: str) -> None:
        rec = self.get_sync(sync_id) or {}
        if rec.get("provider") and rec.get("user_id"):
            self.redis.zadd(f"{self.prefix}:synced_at",
                            {f"{rec['provider']}:{rec['user_id']}": float(rec["finished_at"])})
