"""Sync state in Redis (hot and transient), changed only by atomic scripts.

The networks themselves live in PostgreSQL (``state.networks``); Redis keeps
what a sync in flight needs and a page's staging, which is atomic with the
page bookkeeping. Every key of one user on one provider shares the hash tag
``{provider:user_id}``, so each script below touches one slot (the store can
move to Redis Cluster). A network is (user, provider, relation). Per tag::

    P:{p:u}:<relation>:inflight sync id of the sync in flight (one per network)
    P:{p:u}:<relation>:last     hash: the last final sync's id, time, count, size (freshness)
    P:{p:u}:sync:<id>           hash: the sync record (status, relation, counters, error, rate headers)
    P:{p:u}:sync:<id>:pending   hash: page cursor launched, not yet stored → cursor that launched it
    P:{p:u}:sync:<id>:done      hash: page cursor stored → its parent (a redelivered page is a no-op)
    P:{p:u}:sync:<id>:staging_h hash id → handle of the connections fetched so far

When the last page is stored the record gets ``finalizing`` (its status stays
``running``: "is it done?" stays exact); the engine then finalizes in
PostgreSQL and ``finish`` makes the record final and drops the staging.

Global indexes (not part of any atomic step): ``P:syncs`` (sync id → tag),
``P:synced_at`` (zset "provider:relation:user" → last sync time, for stale
re-syncs), ``P:recent`` (zset of sync ids by creation time, for listing).
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "partial", "failed", "needs_reauth", "cancelled")

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")

_BEGIN = """
local base, net, sync_id = KEYS[1], KEYS[2], ARGV[1]
local now, freshness, stale, force = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local current = redis.call('GET', net .. ':inflight')
if current then
  local rec = base .. ':sync:' .. current
  local st = redis.call('HGET', rec, 'status')
  local created = tonumber(redis.call('HGET', rec, 'created_at') or '0')
  if (st == 'queued' or st == 'running') and now - created < stale then
    return {'inflight', current, st, redis.call('HGET', rec, 'queue') or ''}
  end
end
if force ~= '1' then
  local synced_at = tonumber(redis.call('HGET', net .. ':last', 'synced_at') or '')
  if synced_at and now - synced_at < freshness then
    local last = redis.call('HMGET', net .. ':last', 'sync_id', 'queue')
    return {'fresh', last[1] or '', 'fresh', last[2] or ''}
  end
end
local rec = base .. ':sync:' .. sync_id
for i = 6, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', rec, 'status', 'queued', 'created_at', ARGV[2],
           'pages_fetched', 0, 'connections_fetched', 0, 'calls', 0)
redis.call('SET', net .. ':inflight', sync_id)
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

# Finishing, after PostgreSQL committed the network: the record becomes final
# (once: a retried finalization finds it final and returns 0), the freshness
# hash is written, the in-flight marker and the staging go.
_FINISH = """
local base, rec, net = KEYS[1], KEYS[2], KEYS[3]
local sync_id, status, now, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
redis.call('HSET', rec, 'status', status, 'finished_at', now, 'connections_fetched', count,
           'added', ARGV[5], 'removed', ARGV[6], 'initial', ARGV[7])
redis.call('HDEL', rec, 'finalizing')
local size = redis.call('HGET', rec, 'expected_total') or count
redis.call('HSET', net .. ':last', 'sync_id', sync_id, 'synced_at', now, 'count', count,
           'size', size, 'status', status, 'queue', redis.call('HGET', rec, 'queue') or '')
redis.call('DEL', rec .. ':pending', rec .. ':done', rec .. ':staging_h', rec .. ':guard')
if redis.call('GET', net .. ':inflight') == sync_id then redis.call('DEL', net .. ':inflight') end
return 1
"""

_COMPLETE_PAGE = """
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
  local hargs = {}
  for i = first, last do
    hargs[#hargs + 1] = flat[1 + 2 * i]; hargs[#hargs + 1] = flat[2 + 2 * i]
  end
  redis.call('HSET', rec .. ':staging_h', unpack(hargs))
end
-- what the call's headers said, kept with the sync (and the call counted)
for i = 7, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
if ARGV[6] == '1' then redis.call('HINCRBY', rec, 'calls', 1) end
redis.call('HINCRBY', rec, 'pages_fetched', 1)
redis.call('HSET', rec, 'connections_fetched', redis.call('HLEN', rec .. ':staging_h'))
if redis.call('HLEN', rec .. ':pending') == 0 then
  local status = 'succeeded'
  if redis.call('HEXISTS', rec, 'partial_reason') == 1 then status = 'partial' end
  redis.call('HSET', rec, 'finalizing', status)
  return 'finalize'
end
return 'stored'
"""

_FAIL = """
local base, rec, net = KEYS[1], KEYS[2], KEYS[3]
local sync_id = ARGV[1]
local st = redis.call('HGET', rec, 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
-- the last page is stored and PostgreSQL may be committing it: too late to fail
if redis.call('HEXISTS', rec, 'finalizing') == 1 then return 0 end
redis.call('HSET', rec, 'status', ARGV[2], 'finished_at', ARGV[3], 'error_kind', ARGV[4],
           'error_message', ARGV[5])
redis.call('DEL', rec .. ':pending', rec .. ':done', rec .. ':staging_h', rec .. ':guard')
if redis.call('GET', net .. ':inflight') == sync_id then redis.call('DEL', net .. ':inflight') end
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
    relation: str = ""


class SyncStore:
    def __init__(self, redis_client, prefix: str = "netsync", clock=time.time):
        self.redis = redis_client
        self.prefix = prefix
        self.clock = clock
        self._begin = redis_client.register_script(_BEGIN)
        self._add_pending = redis_client.register_script(_ADD_PENDING)
        self._mark_running = redis_client.register_script(_MARK_RUNNING)
        self._complete = redis_client.register_script(_COMPLETE_PAGE)
        self._finish = redis_client.register_script(_FINISH)
        self._fail = redis_client.register_script(_FAIL)
        self._tags: dict[str, str] = {}

    # -- keys ---------------------------------------------------------------
    def base(self, provider: str, user_id: str) -> str:
        return f"{self.prefix}:{{{provider}:{user_id}}}"

    def net(self, provider: str, user_id: str, relation: str) -> str:
        """The keys of one network (same hash tag as the user's provider keys)."""
        return f"{self.base(provider, user_id)}:{relation}"

    def _net_of(self, base: str, record: dict) -> str:
        return f"{base}:{record.get('relation', '')}"

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
    def begin_sync(self, *, user_id: str, provider: str, relation: str, account_id: str,
                   queue: str, trigger: str, force: bool, freshness_s: int,
                   stale_s: int) -> SyncTicket:
        """Start a sync unless one is in flight or the network is fresh (one atomic step)."""
        sync_id = "s_" + secrets.token_hex(12)
        base = self.base(provider, user_id)
        net = self.net(provider, user_id, relation)
        now = self.clock()
        # Index first: a sync id must resolve as soon as anyone can see it.
        self.redis.hset(f"{self.prefix}:syncs", sync_id, base)
        fields = {"sync_id": sync_id, "user_id": user_id, "provider": provider,
                  "relation": relation, "account_id": account_id, "queue": queue,
                  "trigger": trigger}
        argv = [sync_id, repr(now), freshness_s, stale_s, "1" if force else "0"]
        for key, value in fields.items():
            argv += [key, value]
        outcome, sid, status, q = (
            v.decode() for v in self._begin(keys=[base, net], args=argv)
        )
        if outcome != "created":
            self.redis.hdel(f"{self.prefix}:syncs", sync_id)
        else:
            self.redis.zadd(f"{self.prefix}:recent", {sync_id: now})
        return SyncTicket(sid, provider, status, q, outcome == "created", relation)

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

    def last_sync(self, provider: str, user_id: str, relation: str) -> dict:
        raw = self.redis.hgetall(self.net(provider, user_id, relation) + ":last")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def staged_connections(self, sync_id: str, batch: int = 10_000):
        """The connections a sync's pages stored, (id, handle), for the finalization's COPY."""
        base, rec = self._record_key(sync_id)
        for connection_id, handle in self.redis.hscan_iter(rec + ":staging_h", count=batch):
            yield connection_id.decode(), handle.decode()

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
        """(provider, user_id, relation) of networks last synced before ``older_than``, stalest first."""
        out = []
        for member in self.redis.zrangebyscore(f"{self.prefix}:synced_at", "-inf", older_than):
            prov, _, rest = member.decode().partition(":")
            relation, _, user = rest.partition(":")
            if provider is None or prov == provider:
                out.append((prov, user, relation))
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
        ``inactive`` (the sync ended meanwhile), or ``finalize`` (this was the
        last page: the caller finalizes, see ``finish``).
        """
        base, rec = self._record_key(sync_id)
        flat = [part for pair in connections for part in pair]
        argv = [sync_id, cursor, repr(self.clock()), partial_reason,
                json.dumps(flat, separators=(",", ":")), "1" if count_call else "0"]
        for key, value in (rate_fields or {}).items():
            argv += [key, value]
        return self._complete(keys=[base, rec], args=argv).decode()

    def finish(self, sync_id: str, status: str, count: int, added: int, removed: int,
               initial: bool) -> bool:
        """Make a finalized sync final in Redis; True the first time only."""
        base, rec = self._record_key(sync_id)
        record = self.get_sync(sync_id) or {}
        net = self._net_of(base, record)
        done = bool(self._finish(keys=[base, rec, net], args=[
            sync_id, status, repr(self.clock()), count, added, removed, int(initial)]))
        if done and record.get("provider"):
            member = f"{record['provider']}:{record.get('relation', '')}:{record['user_id']}"
            self.redis.zadd(f"{self.prefix}:synced_at", {member: self.clock()})
        return done

    def fail(self, sync_id: str, status: str, kind: str, message: str) -> bool:
        """End an active sync as failed / needs_reauth / cancelled; the old network stays."""
        assert status in FINAL and status not in ("succeeded", "partial")
        base, rec = self._record_key(sync_id)
        net = self._net_of(base, self.get_sync(sync_id) or {})
        return bool(self._fail(keys=[base, rec, net],
                               args=[sync_id, status, repr(self.clock()), kind, message[:500]]))
