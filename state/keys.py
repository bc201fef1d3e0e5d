"""Every Redis key name netsync uses, built here and nowhere else.

``P`` is the deployment's key prefix (``NETSYNC_KEY_PREFIX``, default
``netsync``)::

    per user and provider, tag {provider:user_id}       (UserKeys)
    P:{p:u}:<relation>:inflight sync id of the sync in flight (one per network)   (RelationKeys)
    P:{p:u}:<relation>:last     hash: the last final sync's id, time, count, size (freshness)
    P:{p:u}:<relation>:etags    hash: the conditional cache, page URL → ETag and what the
                                page held, and "~token" (state.etag_cache)
    P:{p:u}:cred                the encrypted credential (state.credentials)
    P:{p:u}:refresh:<fp>        lock: one refresh of the token with fingerprint <fp> (sync.oauth)

    per sync, same tag                                  (SyncKeys)
    P:{p:u}:sync:<id>           hash: the sync record (status, counters, error, rate headers)
    P:{p:u}:sync:<id>:pending   hash: page cursor launched, not yet stored → cursor that launched it
    P:{p:u}:sync:<id>:done      hash: page cursor stored → its parent (redelivery: no-op)
    P:{p:u}:sync:<id>:staging_h hash id → handle of the connections fetched so far
    P:{p:u}:sync:<id>:guard     hash: the page guard's memory (state.page_guard)
    P:{p:u}:sync:<id>:etags     hash: the conditional cache this sync writes, renamed over
                                the network's when it finalizes

    per quota bucket, tag {provider:scope:key}
    P:quota:{p:scope:key}       hash: one bucket's sub-window counters and provider reports

    announced limits, concurrency and spend (state.announced, state.concurrency, state.spend)
    P:ann:{p:scope:key}         hash: the announced rules of one scope key, one field each
    P:conc:{p:account:key}      zset: calls in flight (lease id → expiry) under a cap
    P:spend:{p:YYYY-MM-DD}      hash: one provider's UTC day: reserved and spent USD, counters

    the delayed set, tag {delayed}                      (DelayedKeys)
    P:{delayed}:due, :entries, :claims, :claimed_by

    no tag (only ever touched by single-key commands)
    P:syncs                     hash: sync id → its P:{p:u} (where its keys live)
    P:synced_at                 zset "provider:relation:user" → last sync time (stale re-syncs)

The networks themselves live in PostgreSQL (``state.networks``).
    P:recent                    zset of sync ids by creation time (listing)
    P:metrics, P:metrics:hist   hashes: the shared counters and histograms (state.metrics)
    P:metrics:instances         zset "provider@instance" -> answers: the busiest instances
    P:active                    zset: syncs in flight, for the stall sweep (state.progress)
    P:paused                    hash: paused providers → why (state.control)

    the stall sweep, tag {sweep}: P:{sweep}:seen, :parked, :lock, :deliveries:<id>, :dead
    worker liveness, tag {live} (state.liveness)         (LiveKeys)
    P:{live}:holders            zset: holder id (one per worker process) → when it first beat
    P:{live}:beat:<holder>      its heartbeat, expiring unless renewed
    P:{live}:held:<holder>      hash: task id → the page it is working on (JSON)
    P:{live}:lease:<name>       who holds a lease (the lost-worker sweep's leader), expiring
    the callback outbox, tag {outbox}: P:{outbox}:deliveries, :recent, :failed
    each provider's circuit breaker, tag {breaker:<p>}: P:{breaker:<p>} (state.breaker);
    a federated provider's are per instance: P:{breaker:<p>@<instance>}
    P:pds:<did or handle>       a Bluesky account's PDS, resolved from its DID document (expiring)
    P:delivery:<id>             a webhook delivery's first answer (service.webhooks)

    the push channels (state.streams; single-key commands only, no tag)
    P:streams:jetstream:cursor  the largest Jetstream time_us applied (microseconds)
    P:streams:mastodon:since    hash "<user>:<account>" → the last follow notification id applied
    P:streams:x:last            when the X stream last delivered (epoch seconds)
    P:streams:x:subs            hash "<provider uid>" → JSON {user, ids: [subscription ids]}
    P:streams:bsky:rkey:<did>   hash rkey → subject DID of that follower's follow records
    P:streams:members           zset: streams processes → when their membership lapses
    P:streams:changed           hash "<user>:<provider>:<relation>" → added,removed not yet
                                called back (the debounced network.changed callback)
    leases of the channels: P:{live}:lease:streams:<jetstream | x | mastodon:<shard>>

The hash-tag rule: Redis Cluster puts a key in the slot of the part between
its first ``{`` and ``}``, and a Lua script or a MULTI may only touch keys of
one slot. So **keys that one script or transaction touches share one tag**:
everything about one user's network on one provider (the begin, page and
finalize scripts, the page snapshot pipeline), each quota bucket on its own
(several scopes of one call are taken bucket by bucket: ``state.quota``),
and the delayed set (its claim script). A key read only by single-key
commands needs no tag.

Scripts never build key names (Redis requires every key a script touches to
be passed in ``KEYS``): Python builds them here and passes them
(``state.lua``).
"""

from __future__ import annotations


class SyncKeys:
    """The keys of one sync, under its user's tag (``user``)."""

    __slots__ = ("user", "sync_id", "record", "pending", "done", "staging_h", "guard", "etags")

    def __init__(self, user: UserKeys, sync_id: str):
        self.user = user
        self.sync_id = sync_id
        self.record = f"{user.base}:sync:{sync_id}"
        self.pending = f"{self.record}:pending"
        self.done = f"{self.record}:done"
        self.staging_h = f"{self.record}:staging_h"
        self.guard = f"{self.record}:guard"
        self.etags = f"{self.record}:etags"


class RelationKeys:
    """The keys of one network (user, provider, relation), under the user's tag."""

    __slots__ = ("inflight", "last", "etags")

    def __init__(self, user: UserKeys, relation: str):
        self.inflight = f"{user.base}:{relation}:inflight"
        self.last = f"{user.base}:{relation}:last"
        self.etags = f"{user.base}:{relation}:etags"


class UserKeys:
    """The keys of one user's network on one provider: one hash tag.

    ``base`` (``P:{provider:user_id}``) is what the sync index stores for a
    sync id, so a sync's keys are found again with ``UserKeys(base)``.
    """

    __slots__ = ("base", "credential")

    def __init__(self, base: str):
        self.base = base
        self.credential = f"{base}:cred"

    def sync(self, sync_id: str) -> SyncKeys:
        return SyncKeys(self, sync_id)

    def relation(self, relation: str) -> RelationKeys:
        return RelationKeys(self, relation)

    def refresh_lock(self, fingerprint: str) -> str:
        """Held while the token with this fingerprint is being refreshed."""
        return f"{self.base}:refresh:{fingerprint}"


class DelayedKeys:
    """The delayed set's keys (one tag: its claim script touches them all)."""

    __slots__ = ("due", "entries", "claims", "claimed_by")

    def __init__(self, prefix: str):
        base = f"{prefix}:{{delayed}}"
        self.due = f"{base}:due"
        self.entries = f"{base}:entries"
        self.claims = f"{base}:claims"
        self.claimed_by = f"{base}:claimed_by"


class LiveKeys:
    """The liveness keys (one tag: ``take_over.lua`` touches the holders, a beat and a
    held hash together)."""

    __slots__ = ("base", "holders")

    def __init__(self, prefix: str):
        self.base = f"{prefix}:{{live}}"
        self.holders = f"{self.base}:holders"

    def beat(self, holder: str) -> str:
        return f"{self.base}:beat:{holder}"

    def held(self, holder: str) -> str:
        return f"{self.base}:held:{holder}"

    def lease(self, name: str) -> str:
        return f"{self.base}:lease:{name}"


class StreamKeys:
    """The push channels' keys (``state.streams``; single-key commands, no tag)."""

    __slots__ = (
        "base",
        "jetstream_cursor",
        "mastodon_since",
        "x_last",
        "x_subscriptions",
        "members",
        "changed",
    )

    def __init__(self, prefix: str):
        self.base = f"{prefix}:streams"
        self.jetstream_cursor = f"{self.base}:jetstream:cursor"
        self.mastodon_since = f"{self.base}:mastodon:since"
        self.x_last = f"{self.base}:x:last"
        self.x_subscriptions = f"{self.base}:x:subs"
        self.members = f"{self.base}:members"
        self.changed = f"{self.base}:changed"

    def follow_records(self, did: str) -> str:
        """rkey → subject of the follow records of one Bluesky repository."""
        return f"{self.base}:bsky:rkey:{did}"


class Keys:
    """The key names of one deployment (``prefix``)."""

    __slots__ = (
        "prefix",
        "sync_index",
        "synced_at",
        "recent",
        "metrics",
        "metrics_histograms",
        "metrics_instances",
        "active",
        "paused",
    )

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.sync_index = f"{prefix}:syncs"
        self.synced_at = f"{prefix}:synced_at"
        self.recent = f"{prefix}:recent"
        self.metrics = f"{prefix}:metrics"
        self.metrics_histograms = f"{prefix}:metrics:hist"
        self.metrics_instances = f"{prefix}:metrics:instances"
        self.active = f"{prefix}:active"
        self.paused = f"{prefix}:paused"

    def breaker(self, provider: str) -> str:
        return f"{self.prefix}:{{breaker:{provider}}}"

    def sweep(self, part: str) -> str:
        """The stall sweep's keys (``seen``, ``parked``, ``lock``, ``deliveries``, ``dead``)."""
        return f"{self.prefix}:{{sweep}}:{part}"

    def outbox(self, part: str) -> str:
        """The callback outbox's keys (``deliveries``, ``recent``, ``failed``)."""
        return f"{self.prefix}:{{outbox}}:{part}"

    def credential_pattern(self) -> str:
        """A SCAN pattern matching every stored credential (``UserKeys.credential``)."""
        return f"{self.prefix}:{{*}}:cred"

    def user(self, provider: str, user_id: str) -> UserKeys:
        return UserKeys(f"{self.prefix}:{{{provider}:{user_id}}}")

    def quota_bucket(self, provider: str, scope: str, key: str) -> str:
        return f"{self.prefix}:quota:{{{provider}:{scope}:{key}}}"

    def announced_rules(self, provider: str, scope: str, key: str) -> str:
        return f"{self.prefix}:ann:{{{provider}:{scope}:{key}}}"

    def concurrency(self, provider: str, key: str) -> str:
        return f"{self.prefix}:conc:{{{provider}:account:{key}}}"

    def spend_day(self, provider: str, day: str) -> str:
        return f"{self.prefix}:spend:{{{provider}:{day}}}"

    def delayed(self) -> DelayedKeys:
        return DelayedKeys(self.prefix)

    def live(self) -> LiveKeys:
        return LiveKeys(self.prefix)

    def pds(self, account: str) -> str:
        """A Bluesky account's resolved PDS (``sync.instances``), expiring."""
        return f"{self.prefix}:pds:{account}"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}:delivery:{delivery_id}"

    def streams(self) -> StreamKeys:
        return StreamKeys(self.prefix)
