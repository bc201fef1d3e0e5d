"""Sync state in Redis (hot and transient), changed only by atomic scripts.

The networks themselves live in PostgreSQL (``state.networks``); Redis keeps
what a sync in flight needs and its page staging, which is atomic with the
page bookkeeping. A network is (user, provider, relation): each relation has
its own in-flight marker and freshness summary. Every key of one user on one
provider shares the hash tag ``{provider:user_id}``, so each script touches
one slot; the key names and the hash-tag rule are in ``state.keys``. The
scripts are ``state/lua/{begin,add_pending,mark_running,complete_page,
finish,fail}.lua``, each with its keys and arguments in its header (the page
guard's part of add_pending and complete_page is ``guard_prelude.lua``).

When the last page completes the record gets ``finalizing`` (its status stays
``running``: "is it done?" stays exact); the engine finalizes in PostgreSQL
(``sync.finalize``) and ``finish`` makes the record final and drops the staging.

Global indexes (not part of any atomic step): the sync index (sync id → the
user's keys), ``synced_at`` (zset "provider:relation:user" → last sync time,
for stale re-syncs), ``recent`` (zset of sync ids by creation time, for listing).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from state.batch import Batch, Reply
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
    relation: str = ""


class BeginStep:
    """One ``begin_sync`` spread over batches: ``SyncStore.prepare_begin`` (the new id's
    index entry and the reads), ``queue_begin`` (the script), ``settle_begin``."""

    def __init__(self, provider: str, user_id: str, relation: str, sync_id: str, user: UserKeys):
        self.provider, self.user_id, self.relation, self.sync_id = (
            provider,
            user_id,
            relation,
            sync_id,
        )
        self.user = user
        self.net = user.relation(relation)
        self.reads = self.outcome = None  # state.batch.Reply, once queued
        self.now = 0.0
        self.args: dict = {}

    @property
    def seen(self) -> str | None:
        """The sync id the in-flight marker named when it was read (None: none)."""
        return self.reads.value[0]

    @property
    def last(self) -> dict:
        """The network's last final sync (``SyncStore.last_sync``), as read."""
        return self.reads.value[1]

    def script_keys(self, seen: str | None) -> dict:
        return {
            "inflight": self.net.inflight,
            "last": self.net.last,
            "record": self.user.sync(self.sync_id).record,
            "seen_record": self.user.sync(seen).record if seen else None,
        }


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
        self._finish = LuaScript(redis_client, "finish")
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
    def begin_sync(
        self,
        *,
        user_id: str,
        provider: str,
        account_id: str,
        queue: str,
        trigger: str,
        force: bool,
        freshness_s: int,
        stale_s: int,
        relation: str | None = None,
    ) -> SyncTicket:
        """Start a sync unless one is in flight or the network is fresh (one atomic step).

        ``relation`` None: the provider's first (``Provider.RELATIONS``). Three
        round trips; a trigger starting several syncs sends each step of all
        of them together (``prepare_begin``, ``queue_begin``, ``settle_begin``)."""
        batch = Batch(self.redis)
        step = self.prepare_begin(batch, user_id=user_id, provider=provider, relation=relation)
        batch.execute()
        batch = Batch(self.redis)
        self.queue_begin(
            batch,
            step,
            account_id=account_id,
            queue=queue,
            trigger=trigger,
            force=force,
            freshness_s=freshness_s,
            stale_s=stale_s,
        )
        batch.execute()
        after = Batch(self.redis)
        ticket = self.settle_begin(after, step)
        after.execute()
        return ticket

    def prepare_begin(
        self, batch: Batch, *, user_id: str, provider: str, relation: str | None = None
    ) -> BeginStep:
        """A begin's first round trip, queued in ``batch``: the sync index entry of a
        new sync id (index first: a sync id must resolve as soon as anyone can see
        it), the in-flight marker (the begin script needs the in-flight sync's
        record as a key: which one it is) and the network's last summary
        (``BeginStep.last``: the trigger picks the queue class by its size)."""
        if relation is None:
            import providers

            relation = providers.provider_classes()[provider].RELATIONS[0]
        step = BeginStep(
            provider,
            user_id,
            relation,
            "s_" + secrets.token_hex(12),
            self.keys.user(provider, user_id),
        )
        index, base, net = self.keys.sync_index, step.user.base, step.net
        batch.add(lambda pipe: pipe.hset(index, step.sync_id, base))

        def reads(pipe):
            pipe.get(net.inflight)
            pipe.hgetall(net.last)

        step.reads = batch.add(
            reads,
            read=lambda replies: (
                replies[0].decode() if replies[0] is not None else None,
                {k.decode(): v.decode() for k, v in replies[1].items()},
            ),
        )
        return step

    def queue_begin(
        self,
        batch: Batch,
        step: BeginStep,
        *,
        account_id: str,
        queue: str,
        trigger: str,
        force: bool,
        freshness_s: int,
        stale_s: int,
    ) -> None:
        """The begin script of a prepared step, queued in ``batch`` (see begin.lua)."""
        step.now = self.clock()
        fields = {
            "sync_id": step.sync_id,
            "user_id": step.user_id,
            "provider": step.provider,
            "relation": step.relation,
            "account_id": account_id,
            "queue": queue,
            "trigger": trigger,
        }
        step.args = {
            "sync_id": step.sync_id,
            "now": repr(step.now),
            "freshness_s": freshness_s,
            "stale_s": stale_s,
            "force": bool(force),
            "fields": fields,
        }
        step.outcome = self._begin.queue(
            batch,
            keys=step.script_keys(step.seen),
            args={**step.args, "seen": step.seen},
            read=_texts,
        )

    def settle_begin(self, after: Batch, step: BeginStep) -> SyncTicket:
        """What the begin script said. A marker that moved meanwhile is read again and
        the script retried at once (up to BEGIN_ATTEMPTS). Queues in ``after`` the
        listing entry of a created sync, or the index entry's removal."""
        outcome, sid, status, q = step.outcome.value
        for _ in range(BEGIN_ATTEMPTS - 1):
            if outcome != "retry":
                break
            seen = self.redis.get(step.net.inflight)
            seen = seen.decode() if seen is not None else None
            outcome, sid, status, q = _texts(
                self._begin(keys=step.script_keys(seen), args={**step.args, "seen": seen})
            )
        index, recent, sync_id = self.keys.sync_index, self.keys.recent, step.sync_id
        if outcome == "retry":
            self.redis.hdel(index, sync_id)
            raise RuntimeError(
                f"{step.provider} sync of {step.user_id}: the in-flight marker kept moving"
            )
        if outcome != "created":
            after.add(lambda pipe: pipe.hdel(index, sync_id))
        else:
            now = step.now
            after.add(lambda pipe: pipe.zadd(recent, {sync_id: now}))
        return SyncTicket(sid, step.provider, status, q, outcome == "created", step.relation)

    # -- reads --------------------------------------------------------------
    def get_sync(self, sync_id: str) -> dict | None:
        keys = self._sync_keys(sync_id)
        if keys is None:
            return None
        raw = self.redis.hgetall(keys.record)
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def queue_snapshot(self, batch: Batch, sync_id: str, cursor: str | None) -> Reply | None:
        """(record, cursor already stored?, credential blob), as a step of ``batch``
        (None: no such sync).

        The hot path of every task: the record says whether the sync is
        still active, the done set whether this page is a redelivery, and the
        credential lives under the same hash tag (``:cred``), so one round trip.
        """
        keys = self._sync_keys(sync_id)
        if keys is None:
            return None

        def queue(pipe):
            pipe.hgetall(keys.record)
            pipe.hexists(keys.done, cursor or "")
            pipe.get(keys.user.credential)

        def read(replies):
            raw, done, blob = replies
            record = {k.decode(): v.decode() for k, v in raw.items()} or None
            return record, bool(done) and cursor is not None, blob

        return batch.add(queue, read)

    def last_sync(self, provider: str, user_id: str, relation: str) -> dict:
        raw = self.redis.hgetall(self.keys.user(provider, user_id).relation(relation).last)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def staged_connections(self, sync_id: str, batch: int = 10_000):
        """The connections a sync's pages stored, (id, handle), for the finalization's COPY."""
        keys = self._sync_keys(sync_id)
        for connection_id, handle in self.redis.hscan_iter(keys.staging_h, count=batch):
            yield connection_id.decode(), handle.decode()

    def list_syncs(self, status: str | None = None, queue: str | None = None, limit: int = 50):
        ids = self.redis.zrevrange(self.keys.recent, 0, max(limit * 20, 200))
        out = []
        for sid in ids:
            rec = self.get_sync(sid.decode())
            if (
                rec
                and (status is None or rec.get("status") == status)
                and (queue is None or rec.get("queue") == queue)
            ):
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def stale_networks(self, older_than: float, provider: str | None, limit: int):
        """(provider, user_id, relation) of networks last synced before ``older_than``,
        stalest first."""
        out = []
        for member in self.redis.zrangebyscore(self.keys.synced_at, "-inf", older_than):
            prov, _, rest = member.decode().partition(":")
            relation, _, user = rest.partition(":")
            if provider is None or prov == provider:
                out.append((prov, user, relation))
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

    def etag_keys(self, sync_id: str, relation: str) -> tuple[str, str]:
        """(the sync's own conditional cache, its network's): ``state.etag_cache``."""
        keys = self._sync_keys(sync_id)
        return keys.etags, keys.user.relation(relation).etags

    def update_in(
        self, batch: Batch, sync_id: str, provider: str, user_id: str, fields: dict
    ) -> None:
        """``update`` of a sync just created by this process, queued in ``batch`` (sent
        with the caller's other steps; its keys are known without the index's read)."""
        record = self.keys.user(provider, user_id).sync(sync_id).record
        if fields:
            mapping = {k: str(v) for k, v in fields.items()}
            batch.add(lambda pipe: pipe.hset(record, mapping=mapping))

    def mark_running(self, sync_id: str) -> bool:
        keys = self._sync_keys(sync_id)
        return bool(
            self._mark_running(keys={"record": keys.record}, args={"now": repr(self.clock())})
        )

    def note_call(self, sync_id: str, rate_fields: dict, batch: Batch | None = None) -> None:
        """Count one provider call against the sync and keep what its headers said.

        With ``batch``, only queued there (sent with the batch)."""
        keys = self._sync_keys(sync_id)

        def queue(pipe):
            pipe.hincrby(keys.record, "calls", 1)
            if rate_fields:
                pipe.hset(keys.record, mapping=rate_fields)

        own = batch is None
        batch = Batch(self.redis) if own else batch
        reply = batch.add(queue)
        if own:
            batch.execute()
            reply.value  # noqa: B018 - raises what Redis answered

    def add_cost(self, sync_id: str, cost, batch: Batch | None = None) -> None:
        """Add one call's ``state.admission.CallCost`` to the sync's ``cost_*`` fields.

        The one place a sync's cost grows (CONTRACT ``cost``: read back with
        ``CallCost.from_record``). With ``batch``, only queued there.
        """
        self.add_counts(sync_id, cost.as_increments(), batch)

    def add_counts(self, sync_id: str, counts: dict, batch: Batch | None = None) -> None:
        """Add to integer fields of the sync record (``HINCRBY``); with ``batch``, queued."""
        keys = self._sync_keys(sync_id)
        increments = {k: int(v) for k, v in counts.items() if v}
        if keys is None or not increments:
            return

        def queue(pipe):
            for field, n in increments.items():
                pipe.hincrby(keys.record, field, n)

        own = batch is None
        batch = Batch(self.redis) if own else batch
        reply = batch.add(queue)
        if own:
            batch.execute()
            reply.value  # noqa: B018 - raises what Redis answered

    def add_pending(self, sync_id: str, parent: str, cursors: list[str]) -> list[str]:
        """Mark cursors launched by ``parent`` before sending their tasks (see add_pending.lua)."""
        if not cursors:
            return []
        return self._launch(sync_id, parent, cursors, None)[1]

    def launch_pages(
        self, sync_id: str, parent: str, cursors: list[str], guard: dict
    ) -> tuple[str, list[str]]:
        """A page's launches, after the page guard recorded the page (one script).

        ``guard``: ``state.page_guard.guard_args`` of the page ``parent``.
        Returns (why the guard stopped paging here, "" for none; the marks of
        ``add_pending``, none when it stopped).
        """
        return self._launch(sync_id, parent, cursors, guard)

    def _launch(self, sync_id, parent, cursors, guard) -> tuple[str, list[str]]:
        keys = self._sync_keys(sync_id)
        out = [
            x.decode()
            for x in self._add_pending(
                keys={
                    "guard": keys.guard,
                    "record": keys.record,
                    "pending": keys.pending,
                    "done": keys.done,
                },
                args={"parent": parent, "cursors": list(cursors), "guard": guard},
            )
        ]
        return (out[0], out[1:]) if out else ("", [])

    def complete_page(
        self,
        sync_id: str,
        cursor: str,
        connections,
        partial_reason: str = "",
        rate_fields: dict | None = None,
        count_call: bool = False,
        guard: dict | None = None,
        batch: Batch | None = None,
    ) -> str:
        """Complete one page: its connections into the staging; the last page asks for finalization.

        With ``count_call`` it also counts the page's call and keeps
        ``rate_fields`` (what the answer's rate-limit headers said), so the
        hot path needs one round trip instead of two. ``guard`` (the
        ``state.page_guard.guard_args`` of a page that launched nothing):
        the page guard records the page in the same script. ``batch``: the
        other steps to send in the same round trip (the script is added to it
        and the batch executed).
        Returns ``completed``, ``duplicate`` (already complete: a redelivery),
        ``inactive`` (the sync finished meanwhile), or ``finalize`` (this was the
        last page: the caller finalizes; the words: ``sync.finish``).
        """
        batch = Batch(self.redis) if batch is None else batch
        reply = self._complete.queue(
            batch,
            keys=self._page_keys(sync_id),
            args={
                "cursor": cursor,
                "partial_reason": partial_reason,
                "connections": [part for pair in connections for part in pair],
                "count_call": bool(count_call),
                "rate_fields": {k: _text(v) for k, v in (rate_fields or {}).items()},
                "guard": guard,
            },
            read=bytes.decode,
        )
        batch.execute()
        return reply.value

    def _page_keys(self, sync_id: str) -> dict:
        """What a page's completion works on: the sync's page bookkeeping and staging."""
        keys = self._sync_keys(sync_id)
        return {
            "guard": keys.guard,
            "record": keys.record,
            "pending": keys.pending,
            "done": keys.done,
            "staging_h": keys.staging_h,
        }

    def _relation_keys(self, keys, sync_id: str):
        record = self.get_sync(sync_id) or {}
        return record, keys.user.relation(record.get("relation", ""))

    def finish(
        self, sync_id: str, status: str, count: int, added: int, removed: int, initial: bool
    ) -> bool:
        """Make a finalized sync final in Redis; True the first time only."""
        keys = self._sync_keys(sync_id)
        record, net = self._relation_keys(keys, sync_id)
        done = bool(
            self._finish(
                keys={
                    "record": keys.record,
                    "pending": keys.pending,
                    "done": keys.done,
                    "staging_h": keys.staging_h,
                    "guard": keys.guard,
                    "last": net.last,
                    "inflight": net.inflight,
                },
                args={
                    "sync_id": sync_id,
                    "status": status,
                    "now": repr(self.clock()),
                    "count": count,
                    "added": added,
                    "removed": removed,
                    "initial": bool(initial),
                },
            )
        )
        if done and record.get("provider"):
            member = f"{record['provider']}:{record.get('relation', '')}:{record['user_id']}"
            self.redis.zadd(self.keys.synced_at, {member: self.clock()})
        return done

    def fail(self, sync_id: str, status: str, kind: str, message: str) -> bool:
        """Fail an active sync: it finishes failed / needs_reauth / cancelled; the old network stays."""
        assert status in FINAL and status not in ("succeeded", "partial")
        keys = self._sync_keys(sync_id)
        _, net = self._relation_keys(keys, sync_id)
        return bool(
            self._fail(
                keys={
                    "record": keys.record,
                    "pending": keys.pending,
                    "done": keys.done,
                    "staging_h": keys.staging_h,
                    "guard": keys.guard,
                    "inflight": net.inflight,
                },
                args={
                    "sync_id": sync_id,
                    "status": status,
                    "now": repr(self.clock()),
                    "kind": kind,
                    "message": message[:500],
                },
            )
        )


def _texts(values) -> tuple[str, ...]:
    return tuple(v.decode() for v in values)


def _text(value) -> str:
    """A field value as the Redis client would have written it (numbers by repr)."""
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else repr(value)
