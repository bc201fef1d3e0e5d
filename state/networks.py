"""The networks, the linked accounts and the change feed, in PostgreSQL.

A network is (user, provider, relation). A sync's pages are staged in Redis
(next to the page bookkeeping they are atomic with); the last page hands
the staged connections to ``finalize``, which in ONE transaction copies them
in (COPY), lets the database compute the diff, replaces the network, records
the sync as finalized (its id is the idempotency key: a retried finalization
returns the first one's result and writes nothing) and appends the sync's
entries to the change feed. A failed sync never gets here, so the previous
network stays as it was.

Feed cursors are a sequence, and every writer of the feed takes one
advisory lock (``FEED_LOCK``) before its first insert and holds it to
commit: cursors are therefore handed out in commit order, a reader that has
seen cursor N never later finds an entry below N, and all of a sync's
entries become visible at once (they commit together).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

#: the advisory lock every change-feed writer holds from its first insert to commit
FEED_LOCK = 0x6E657473  # "nets"

#: libpq options of every pooled connection. TCP keepalives: an idle connection's
#: NAT mapping stays open, and a peer that vanished without a word (no FIN, no RST) is
#: noticed in about a minute instead of the kernel's two hours
CONNECTION_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_FEED_COLUMNS = (
    "cursor, at, kind, user_id, provider, relation, sync_id, connection_id, "
    "connection_handle, member_user_id, initial, counts, source"
)


@dataclass(frozen=True)
class StreamChange:
    """One connection a provider pushed: added to or removed from one network."""

    user_id: str
    provider: str
    relation: str
    kind: str  # "added" | "removed"
    connection_id: str
    handle: str
    #: the event's identity on its channel (``stream_events``): applied at most once
    event_key: str


@dataclass(frozen=True)
class Finalized:
    """What a finalization did (or, ``already``, what the first one did)."""

    sync_id: str
    status: str
    count: int
    added: int
    removed: int
    initial: bool
    already: bool = False
    #: how the sync read the network: "full" or "incremental"
    mode: str = "full"


#: the instance of network ``n``'s owner (their newest linked account of that provider;
#: '' where the provider's ids are global): the id space of that network's connections
OWNER_INSTANCE = (
    "COALESCE((SELECT o.instance FROM linked_accounts o WHERE o.user_id = n.user_id"
    " AND o.provider = n.provider ORDER BY o.linked_at DESC LIMIT 1), '')"
)


class NetworkStore:
    """The PostgreSQL side of netsync; one connection pool per process (fork-safe)."""

    def __init__(self, database_url: str, max_connections: int = 8):
        self.database_url = database_url
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------
    @property
    def pool(self) -> ConnectionPool:
        """The pool of this process, opened on first use (a forked worker child
        must not share its parent's sockets)."""
        if self._pool is None or self._pool_pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    self._pool = ConnectionPool(
                        self.database_url,
                        min_size=1,
                        max_size=self.max_connections,
                        kwargs=CONNECTION_OPTIONS,
                        # a pooled connection may have been closed while it sat idle
                        # (a pooler's or a NAT's idle timeout, a server restart): each
                        # is checked (one empty query) before it is handed out, and a
                        # dead one is replaced instead of failing its caller
                        check=ConnectionPool.check_connection,
                        open=True,
                        name="netsync",
                    )
                    self._pool_pid = os.getpid()
        return self._pool

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None

    def ping(self) -> bool:
        with self.pool.connection(timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def schema_revisions(self) -> set[str] | None:
        """The Alembic revisions the database is at; None when it was never migrated
        (the readiness probe's question, and its ping)."""
        with self.pool.connection(timeout=3) as conn:
            if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
                return None
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return {row[0] for row in rows}

    # -- finalization -----------------------------------------------------------
    def finalize(
        self,
        *,
        sync_id: str,
        user_id: str,
        provider: str,
        relation: str,
        status: str,
        finished_at: float,
        connections: Iterable[tuple[str, str]],
        mode: str = "full",
        stated_count: int | None = None,
        head: str | None = None,
        cost: dict | None = None,
        started_at: float | None = None,
        account: str | None = None,
    ) -> Finalized:
        """Apply ``connections`` to the network and log the diff: all or nothing, once.

        ``mode`` ``full``: they replace the network (removals recorded) and verify
        it (``verified_at``, ``needs_full`` cleared); ``incremental``: they are added,
        nothing is removed (an incremental read cannot see removals).

        ``started_at`` (epoch s, the sync's start; default ``finished_at``): a change a
        push channel applied since wins over what the pages read before it
        (``stream_marks``): a connection it added stays, one it removed is not re-added.

        ``account``: the account the pages were read from (``sync.modes.account_key``);
        a later sync of another account must not read incrementally onto this network."""
        network = (user_id, provider, relation)
        with self.pool.connection() as conn, conn.transaction():
            done = _finalized(conn, sync_id)
            if done:
                return done
            # The row lock serializes finalizations of one network; a second
            # finalizer of the same sync waits here, then finds the first's result.
            network_id, last_sync = _lock_network(conn, network)
            done = _finalized(conn, sync_id)
            if done:
                return done
            _stage(conn, connections)
            added, removed = _apply_diff(
                conn,
                network_id,
                removals=mode == "full",
                started_at=finished_at if started_at is None else started_at,
            )
            count = conn.execute(
                "SELECT count(*) FROM connections WHERE network_id = %s", (network_id,)
            ).fetchone()[0]
            result = Finalized(
                sync_id, status, count, added, removed, initial=last_sync is None, mode=mode
            )
            _record_finalized(conn, network_id, result, finished_at, stated_count, head, account)
            _append_sync_entries(conn, network, result, cost)
        return result

    def freshness(self, user_id: str, provider: str, relation: str) -> dict | None:
        """What the stored network says about how to re-read it (``sync.modes``), or None
        when it was never synced: count, verified_at (epoch s), head, needs_full,
        streamed, account."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count, extract(epoch FROM verified_at), head, needs_full,"
                " stated_count, (SELECT count(*) FROM stream_marks m"
                " WHERE m.network_id = n.network_id AND m.kind = 'added'), account"
                " FROM networks n WHERE user_id = %s AND provider = %s"
                " AND relation = %s AND sync_id IS NOT NULL",
                (user_id, provider, relation),
            ).fetchone()
        if row is None:
            return None
        return {
            "count": row[0] or 0,
            "verified_at": float(row[1]) if row[1] is not None else None,
            "head": row[2],
            "needs_full": bool(row[3]),
            "stated_count": row[4],
            # connections a push channel added that no sync has read since
            "streamed": row[5],
            # the account it was last read from (None: before that was recorded)
            "account": row[6],
        }

    def stale_networks(self, verified_before: float, provider: str | None, limit: int):
        """(provider, user_id, relation) of networks last verified (full sync) before
        ``verified_before``, never verified first, then stalest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT provider, user_id, relation FROM networks WHERE sync_id IS NOT NULL"
                " AND (verified_at IS NULL OR verified_at < to_timestamp(%s))"
                " AND (%s::text IS NULL OR provider = %s)"
                " ORDER BY verified_at NULLS FIRST, network_id LIMIT %s",
                (verified_before, provider, provider, limit),
            ).fetchall()
        return [tuple(row) for row in rows]

    def known_ids(self, user_id: str, provider: str, relation: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the stored network holds."""
        read, streamed = self.known_ids_by_origin(user_id, provider, relation, ids)
        return read | streamed

    def known_ids_by_origin(
        self, user_id: str, provider: str, relation: str, ids: list[str]
    ) -> tuple[set[str], set[str]]:
        """Which of ``ids`` the stored network holds: (those a sync read, those a push
        channel added since). A head stops at the first of the former only: the
        latter may be newer than a follow that was never pushed (``0006_stream_marks``)."""
        if not ids:
            return set(), set()
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT c.connection_id, m.kind IS NOT NULL FROM networks n"
                " JOIN connections c USING (network_id)"
                " LEFT JOIN stream_marks m ON m.network_id = c.network_id"
                " AND m.connection_id = c.connection_id AND m.kind = 'added'"
                " WHERE n.user_id = %s AND n.provider = %s AND n.relation = %s"
                " AND c.connection_id = ANY(%s)",
                (user_id, provider, relation, list(ids)),
            ).fetchall()
        return {r[0] for r in rows if not r[1]}, {r[0] for r in rows if r[1]}

    def finalized(self, sync_id: str) -> Finalized | None:
        with self.pool.connection() as conn:
            return _finalized(conn, sync_id)

    # -- linked accounts and members ------------------------------------------------
    def link_account(
        self,
        *,
        user_id: str,
        provider: str,
        account_id: str,
        provider_uid: str,
        instance: str = "",
    ) -> int:
        """Record a linked account by its stable id (and, where ids are per instance, its
        instance: ``0005_federation``); a new one tells the users whose networks hold it
        (``member_joined``). Returns how many entries that wrote."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO linked_accounts (provider, instance, provider_uid, user_id,"
                " account_id) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (provider, instance, provider_uid) DO UPDATE"
                " SET user_id = EXCLUDED.user_id, account_id = EXCLUDED.account_id,"
                " linked_at = now() WHERE linked_accounts.user_id <> EXCLUDED.user_id"
                " RETURNING 1",
                (provider, instance, provider_uid, user_id, account_id),
            ).fetchone()
            if row is None:  # known already, same user: nothing joined
                return 0
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK,))
            # connections_by_connection_id: one index lookup finds every network holding
            # it; an id of one instance means that account only in networks read there
            return conn.execute(
                "INSERT INTO changes (kind, user_id, provider, relation, connection_id,"
                " connection_handle, member_user_id)"
                " SELECT 'member_joined', n.user_id, n.provider, n.relation, c.connection_id,"
                " c.handle, %(user)s FROM connections c JOIN networks n USING (network_id)"
                " WHERE c.connection_id = %(uid)s AND n.provider = %(provider)s"
                " AND n.user_id <> %(user)s"
                f" AND {OWNER_INSTANCE} = %(instance)s ORDER BY n.network_id",
                {"user": user_id, "uid": provider_uid, "provider": provider, "instance": instance},
            ).rowcount

    def members_page(
        self, user_id: str, provider: str, relation: str, cursor: str | None, limit: int
    ):
        """Connections of this network that are linked accounts of the main app's users
        (on the network owner's instance, where ids are per instance), or None when the
        network was never synced."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT n.network_id, m.connection_id, m.handle, m.user_id FROM networks n"
                " LEFT JOIN LATERAL (SELECT c.connection_id, c.handle, la.user_id"
                "   FROM connections c JOIN linked_accounts la"
                "   ON la.provider = n.provider AND la.provider_uid = c.connection_id"
                f"  AND la.instance = {OWNER_INSTANCE}"
                "   WHERE c.network_id = n.network_id AND c.connection_id > %s"
                "   ORDER BY c.connection_id LIMIT %s) AS m ON true"
                " WHERE n.user_id = %s AND n.provider = %s AND n.relation = %s"
                " AND n.sync_id IS NOT NULL",
                (cursor or "", limit + 1, user_id, provider, relation),
            ).fetchall()
        if not rows:
            return None
        members = [{"id": r[1], "handle": r[2], "user_id": r[3]} for r in rows if r[1] is not None]
        return _paged(members, limit, "id")

    # -- reads ---------------------------------------------------------------------
    def network_page(
        self, user_id: str, provider: str, relation: str, cursor: str | None, limit: int
    ):
        """(meta, connections, next cursor) of the live network in one statement (one
        snapshot: never straddles a finalization), or None when never synced."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT n.sync_id, extract(epoch FROM n.synced_at), n.count, c.connection_id,"
                " c.handle, extract(epoch FROM n.verified_at), extract(epoch FROM n.updated_at)"
                " FROM networks n LEFT JOIN LATERAL (SELECT connection_id, handle"
                "   FROM connections c WHERE c.network_id = n.network_id AND c.connection_id > %s"
                "   ORDER BY connection_id LIMIT %s) AS c ON true"
                " WHERE n.user_id = %s AND n.provider = %s AND n.relation = %s"
                " AND n.sync_id IS NOT NULL",
                (cursor or "", limit + 1, user_id, provider, relation),
            ).fetchall()
        if not rows:
            return None
        first = rows[0]
        meta = {
            "sync_id": first[0],
            "synced_at": float(first[1]),
            "count": first[2],
            "verified_at": float(first[5]) if first[5] is not None else None,
            "updated_at": float(first[6]) if first[6] is not None else None,
        }
        conns = [{"id": r[3], "handle": r[4]} for r in rows if r[3] is not None]
        page, next_cursor = _paged(conns, limit, "id")
        return meta, page, next_cursor

    def sync_changes_page(
        self, user_id: str, provider: str, relation: str, cursor: str | None, limit: int
    ) -> dict | None:
        """The last finalized sync's added/removed ids, paged (a first sync added its
        whole network: that page comes from the network itself)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = conn.execute(
                "SELECT n.network_id, n.sync_id, f.initial FROM networks n JOIN finalized_syncs f"
                " USING (sync_id) WHERE n.user_id = %s AND n.provider = %s AND n.relation = %s",
                (user_id, provider, relation),
            ).fetchone()
            if head is None:
                return None
            network_id, sync_id, initial = head
            if initial:
                rows = conn.execute(
                    "SELECT 'added', connection_id, connection_id FROM connections"
                    " WHERE network_id = %s AND connection_id > %s ORDER BY connection_id"
                    " LIMIT %s",
                    (network_id, cursor or "", limit + 1),
                ).fetchall()
            else:
                after = int(cursor) if cursor and cursor.isdigit() else 0
                rows = conn.execute(
                    "SELECT kind, connection_id, cursor::text FROM changes WHERE sync_id = %s"
                    " AND kind IN ('added', 'removed') AND cursor > %s ORDER BY cursor LIMIT %s",
                    (sync_id, after, limit + 1),
                ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "sync_id": sync_id,
            "initial": initial,
            "added": [r[1] for r in rows if r[0] == "added"],
            "removed": [r[1] for r in rows if r[0] == "removed"],
            "next_cursor": rows[-1][2] if more else None,
        }

    def feed(self, after: int, limit: int) -> tuple[list[dict], int]:
        """Entries after ``after``, oldest first, and the cursor to resume from."""
        with self.pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    f"SELECT {_FEED_COLUMNS} FROM changes WHERE cursor > %s"
                    " ORDER BY cursor LIMIT %s",
                    (after, limit),
                )
                .fetchall()
            )
        entries = [_entry(row) for row in rows]
        return entries, (rows[-1]["cursor"] if rows else after)

    def prune_changes(self, retention_days: float) -> int:
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM stream_events WHERE applied_at < now() - make_interval(secs => %s)",
                (retention_days * 86400,),
            )
            return conn.execute(
                "DELETE FROM changes WHERE at < now() - make_interval(secs => %s)",
                (retention_days * 86400,),
            ).rowcount

    # -- push channels (the ``streams`` role) -----------------------------------------------
    def apply_stream_changes(self, changes: Iterable[StreamChange]) -> list[StreamChange]:
        """Apply pushed changes in one transaction; returns those that changed a network.

        Each is applied at most once (its ``event_key``), and only to a network a
        sync has already read (before that, the first sync reads it). A connection
        already there (added) or already gone (removed) changes nothing and writes
        nothing. A change that does write updates the network's count and
        ``updated_at`` and appends its ``added``/``removed`` entry, ``source`` 'stream'
        and no sync id, under the feed lock (module doc), as a finalization does.
        """
        changes = list(changes)
        if not changes:
            return []
        with self.pool.connection() as conn, conn.transaction():
            return _apply_stream_changes(conn, changes)

    def mark_needs_full(self, provider: str, user_ids: Iterable[str] | None = None) -> int:
        """A push channel lost events it cannot replay: these networks' next sync is full
        (every network of ``provider`` when ``user_ids`` is None)."""
        with self.pool.connection() as conn:
            if user_ids is None:
                return conn.execute(
                    "UPDATE networks SET needs_full = true WHERE provider = %s"
                    " AND sync_id IS NOT NULL AND NOT needs_full",
                    (provider,),
                ).rowcount
            return conn.execute(
                "UPDATE networks SET needs_full = true WHERE provider = %s"
                " AND user_id = ANY(%s) AND sync_id IS NOT NULL AND NOT needs_full",
                (provider, list(user_ids)),
            ).rowcount

    def linked_accounts(self, providers: Iterable[str]) -> list[tuple[str, str, str, str, str]]:
        """Every linked account of ``providers``: (provider, stable id, user, account id,
        instance: ``''`` where ids are global)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT provider, provider_uid, user_id, account_id, instance"
                " FROM linked_accounts WHERE provider = ANY(%s)"
                " ORDER BY provider, provider_uid, instance",
                (list(providers),),
            ).fetchall()


# -- the steps of a finalization (one transaction, on ``conn``) --------------------------
def _finalized(conn, sync_id: str) -> Finalized | None:
    row = conn.execute(
        "SELECT status, count, added, removed, initial, mode FROM finalized_syncs"
        " WHERE sync_id = %s",
        (sync_id,),
    ).fetchone()
    return Finalized(sync_id, *row[:5], already=True, mode=row[5]) if row else None


def _lock_network(conn, network: tuple[str, str, str]) -> tuple[int, str | None]:
    """The network's row (made if new), locked to the transaction's end:
    (network id, the sync that last replaced it, None if none has)."""
    conn.execute(
        "INSERT INTO networks (user_id, provider, relation) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        network,
    )
    return conn.execute(
        "SELECT network_id, sync_id FROM networks WHERE user_id = %s AND provider = %s"
        " AND relation = %s FOR UPDATE",
        network,
    ).fetchone()


def _record_finalized(
    conn,
    network_id: int,
    result: Finalized,
    finished_at: float,
    stated_count: int | None,
    head: str | None,
    account: str | None = None,
) -> None:
    """The network now holds this sync; the sync id, finalized (the idempotency key).

    ``updated_at`` moves when the sync changed something; ``verified_at`` only with
    a full sync (which also clears ``needs_full``); ``head`` where the sync read one."""
    full = result.mode == "full"
    changed = result.initial or result.added > 0 or result.removed > 0
    conn.execute(
        "UPDATE networks SET sync_id = %(sync)s, synced_at = to_timestamp(%(at)s),"
        " count = %(count)s, stated_count = coalesce(%(stated)s, stated_count),"
        " head = coalesce(%(head)s, head), account = coalesce(%(account)s, account),"
        " verified_at = CASE WHEN %(full)s THEN to_timestamp(%(at)s) ELSE verified_at END,"
        " needs_full = CASE WHEN %(full)s THEN false ELSE needs_full END,"
        " updated_at = CASE WHEN %(changed)s THEN to_timestamp(%(at)s) ELSE updated_at END"
        " WHERE network_id = %(network)s",
        {
            "sync": result.sync_id,
            "at": finished_at,
            "count": result.count,
            "stated": stated_count,
            "head": head,
            "account": account,
            "full": full,
            "changed": changed,
            "network": network_id,
        },
    )
    conn.execute(
        "INSERT INTO finalized_syncs (sync_id, network_id, status, count, added,"
        " removed, initial, mode) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            result.sync_id,
            network_id,
            result.status,
            result.count,
            result.added,
            result.removed,
            result.initial,
            result.mode,
        ),
    )


def _append_sync_entries(
    conn, network: tuple[str, str, str], result: Finalized, cost: dict | None = None
) -> None:
    """The sync's change-feed entries: ``synced`` with its counts (and how it read:
    ``mode``, ``cost``), then (after a first sync) one per connection added or
    removed. Takes the feed lock (module doc)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK,))
    counts = {
        "count": result.count,
        "added": result.added,
        "removed": result.removed,
        "mode": result.mode,
    }
    if cost is not None:
        counts["cost"] = cost
    conn.execute(
        "INSERT INTO changes (kind, user_id, provider, relation, sync_id, initial,"
        " counts) VALUES ('synced', %s, %s, %s, %s, %s, %s)",
        (*network, result.sync_id, result.initial, json.dumps(counts)),
    )
    if result.initial:
        return
    for kind, table in (("added", "fresh"), ("removed", "gone")):
        conn.execute(
            f"INSERT INTO changes (kind, user_id, provider, relation, sync_id,"
            f" connection_id, connection_handle) SELECT %s, %s, %s, %s, %s,"
            f" connection_id, handle FROM {table} ORDER BY connection_id",
            (kind, *network, result.sync_id),
        )


def _stage(conn, connections) -> int:
    """COPY the new network into a temporary table; how many distinct connections."""
    conn.execute(
        'CREATE TEMP TABLE staged (connection_id text COLLATE "C" NOT NULL,'
        " handle text NOT NULL) ON COMMIT DROP"
    )
    with conn.cursor().copy("COPY staged (connection_id, handle) FROM STDIN") as copy:
        for connection_id, handle in connections:
            copy.write_row((connection_id, handle or ""))
    conn.execute("ANALYZE staged")
    # one row per id (a provider may list someone twice across pages): the last handle wins
    conn.execute(
        "CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT DISTINCT ON (connection_id)"
        " connection_id, handle FROM staged ORDER BY connection_id"
    )
    return conn.execute("SELECT count(*) FROM incoming").fetchone()[0]


def _apply_diff(
    conn, network_id: int, removals: bool = True, started_at: float | None = None
) -> tuple[int, int]:
    """Let the database compute added (``fresh``) and removed (``gone``), then apply them.

    ``removals`` False (an incremental sync): ``incoming`` is only part of the network,
    so nothing is found removed. A pushed change marked at or after ``started_at``
    (``stream_marks``) is newer than the pages: its connection is neither removed
    (added by the stream) nor added (removed by the stream) here."""
    started = started_at if started_at is not None else float("inf")
    conn.execute("ANALYZE incoming")
    conn.execute(
        "CREATE TEMP TABLE gone ON COMMIT DROP AS SELECT c.connection_id, c.handle"
        " FROM connections c WHERE %s AND c.network_id = %s AND NOT EXISTS"
        " (SELECT 1 FROM incoming i WHERE i.connection_id = c.connection_id)"
        " AND NOT EXISTS (SELECT 1 FROM stream_marks m WHERE m.network_id = c.network_id"
        " AND m.connection_id = c.connection_id AND m.kind = 'added'"
        " AND m.at >= to_timestamp(%s))",
        (removals, network_id, started),
    )
    conn.execute(
        "CREATE TEMP TABLE fresh ON COMMIT DROP AS SELECT i.connection_id, i.handle"
        " FROM incoming i WHERE NOT EXISTS (SELECT 1 FROM connections c"
        " WHERE c.network_id = %s AND c.connection_id = i.connection_id)"
        " AND NOT EXISTS (SELECT 1 FROM stream_marks m WHERE m.network_id = %s"
        " AND m.connection_id = i.connection_id AND m.kind = 'removed'"
        " AND m.at >= to_timestamp(%s))",
        (network_id, network_id, started),
    )
    removed = conn.execute(
        "DELETE FROM connections c USING gone g WHERE c.network_id = %s"
        " AND c.connection_id = g.connection_id",
        (network_id,),
    ).rowcount
    added = conn.execute(
        "INSERT INTO connections (network_id, connection_id, handle)"
        " SELECT %s, connection_id, handle FROM fresh ORDER BY connection_id",
        (network_id,),
    ).rowcount
    conn.execute(
        "UPDATE connections c SET handle = i.handle FROM incoming i"
        " WHERE c.network_id = %s AND c.connection_id = i.connection_id"
        " AND c.handle <> i.handle",
        (network_id,),
    )
    # marks this sync settles: an addition it read (no longer only the stream's word);
    # a full read after the mark (it saw the network as the change left it); a removal
    # before the start of a sync that read the connection again (a follow since)
    conn.execute(
        "DELETE FROM stream_marks m WHERE m.network_id = %(network)s AND ("
        " (%(full)s AND m.at < to_timestamp(%(started)s))"
        " OR (EXISTS (SELECT 1 FROM incoming i WHERE i.connection_id = m.connection_id)"
        " AND (m.kind = 'added' OR m.at < to_timestamp(%(started)s))))",
        {"network": network_id, "full": removals, "started": started},
    )
    return added, removed


def _apply_stream_changes(conn, changes: list[StreamChange]) -> list[StreamChange]:
    """Pushed changes inside the caller's transaction; those that wrote an entry.

    Locks in the order a finalization takes them (network rows, then the feed
    lock), and rows in network id order, so neither a finalization nor another
    ``streams`` process can deadlock with this one.
    """
    new_keys = set()
    # keys in sorted order (two processes inserting the same keys wait, never deadlock);
    # the changes themselves in the order the channel sent them (a follow, then its undo)
    for key in sorted({c.event_key for c in changes}):
        seen = conn.execute(
            "INSERT INTO stream_events (event_key) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
            (key,),
        ).fetchone()
        if seen is not None:  # not applied before (a replay, another process)
            new_keys.add(key)
    fresh = []
    for change in changes:
        if change.event_key in new_keys:
            new_keys.discard(change.event_key)  # a key twice in one batch: once
            fresh.append(change)
    if not fresh:
        return []
    wanted = sorted({(c.user_id, c.provider, c.relation) for c in fresh})
    rows = conn.execute(
        "SELECT n.network_id, n.user_id, n.provider, n.relation FROM networks n"
        " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS w(user_id, provider, relation)"
        " USING (user_id, provider, relation) WHERE n.sync_id IS NOT NULL"
        " ORDER BY n.network_id FOR UPDATE OF n",
        ([w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]),
    ).fetchall()
    # a network never synced is left alone: its first sync reads all of it
    network_ids = {(r[1], r[2], r[3]): r[0] for r in rows}
    applied: list[tuple[StreamChange, str]] = []
    deltas: dict[int, int] = {}
    for change in fresh:
        network_id = network_ids.get((change.user_id, change.provider, change.relation))
        if network_id is None:
            continue
        if change.kind == "added":
            done = conn.execute(
                "INSERT INTO connections (network_id, connection_id, handle)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING handle",
                (network_id, change.connection_id, change.handle or ""),
            ).fetchone()
        else:
            done = conn.execute(
                "DELETE FROM connections WHERE network_id = %s AND connection_id = %s"
                " RETURNING handle",
                (network_id, change.connection_id),
            ).fetchone()
        if done is None:  # already there, already gone: nothing to say
            continue
        # newer than any sync reading now, and not a sync's word yet (``stream_marks``)
        conn.execute(
            "INSERT INTO stream_marks (network_id, connection_id, kind) VALUES (%s, %s, %s)"
            " ON CONFLICT (network_id, connection_id)"
            " DO UPDATE SET kind = excluded.kind, at = excluded.at",
            (network_id, change.connection_id, change.kind),
        )
        deltas[network_id] = deltas.get(network_id, 0) + (1 if change.kind == "added" else -1)
        applied.append((change, done[0] or change.handle or ""))
    for network_id, delta in deltas.items():
        conn.execute(
            "UPDATE networks SET count = greatest(count + %s, 0), updated_at = now()"
            " WHERE network_id = %s",
            (delta, network_id),
        )
    if applied:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO changes (kind, user_id, provider, relation, sync_id,"
                " connection_id, connection_handle, source)"
                " VALUES (%s, %s, %s, %s, NULL, %s, %s, 'stream')",
                [
                    (c.kind, c.user_id, c.provider, c.relation, c.connection_id, handle)
                    for c, handle in applied
                ],
            )
    return [change for change, _ in applied]


def _paged(items: list[dict], limit: int, key: str):
    more = len(items) > limit
    items = items[:limit]
    return items, (items[-1][key] if more and items else None)


def _entry(row: dict) -> dict:
    connection = None
    if row["connection_id"] is not None:
        connection = {"id": row["connection_id"], "handle": row["connection_handle"] or ""}
    at = row["at"].astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    return {
        "cursor": str(row["cursor"]),
        "at": at,
        "kind": row["kind"],
        "user_id": row["user_id"],
        "provider": row["provider"],
        "relation": row["relation"],
        "sync_id": row["sync_id"],
        "connection": connection,
        "member_user_id": row["member_user_id"],
        "initial": row["initial"],
        "counts": row["counts"],
        # "sync" (a sync's finalization) or "stream" (a push channel, sync_id NULL)
        "source": row["source"],
    }
