"""The PostgreSQL network store: finalization, storage, members, the change feed.

Against a database of its own (the machine's PostgreSQL at 127.0.0.1:5432 when
it answers, else the embedded server), and Redis (``REDIS_URL`` or the
embedded one), through the same code the workers run:

- staging: N connections stored by ``SyncStore.complete_page`` in pages of
  1,000 (Redis hash, the page bookkeeping's own script), against the other
  candidate: each page COPYed into an UNLOGGED PostgreSQL table;
- finalization for 10k / 100k / 1M connections: the first sync (everything
  added) and a re-sync with 1% removed and 1% added (``NetworkStore.finalize``
  reading the staging from Redis: HSCAN + COPY + the diff in the database);
- bytes per stored connection (table + primary key + the member_joined index);
- members: p50/p99 of ``members_page`` for a 5,000-connection network among
  1,000,000 linked accounts (10% of the network linked);
- change feed read throughput (entries/s, pages of 1,000).

    python -m bench.networks [--sizes 10000,100000,1000000] [--member-queries 1000]

Writes ``bench/results/networks.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from state import embedded_postgres, migrate
from state.networks import NetworkStore
from state.store import SyncStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "networks.json"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PAGE = 1000


def connections(lo: int, hi: int):
    return [(str(10_000_000 + i * 7), f"user-{i:x}") for i in range(lo, hi)]


def database(tmp: Path) -> tuple[str, str, callable]:
    """(url, which server, drop) of a fresh migrated database."""
    name = "netsync_bench_" + secrets.token_hex(4)
    try:
        psycopg.connect(LOCAL_POSTGRES, connect_timeout=2).close()
    except psycopg.Error:
        url = embedded_postgres.start(tmp, database=name)
        migrate.upgrade(url)
        return url, "embedded (embedded-postgres)", lambda: None
    with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(LOCAL_POSTGRES)._replace(path="/" + name))
    migrate.upgrade(url)

    def drop():
        with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, f"127.0.0.1:5432 (PostgreSQL {version})", drop


def redis_client(tmp: Path):
    import os

    if os.environ.get("REDIS_URL"):
        return redis.Redis.from_url(os.environ["REDIS_URL"]), None
    from state.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp / "redis", persist=False)
    return redis.Redis.from_url(server.start()), server


def stage_in_redis(store: SyncStore, user: str, rows: list) -> tuple[str, float, int]:
    """A sync whose pages store ``rows``; (sync id, seconds, staging bytes in Redis)."""
    ticket = store.begin_sync(
        user_id=user,
        provider="github",
        relation="followers",
        account_id=user,
        queue="whale",
        trigger="api",
        force=True,
        freshness_s=0,
        stale_s=3600,
    )
    cursors = [f"p{i}" for i in range(0, len(rows), PAGE)] or ["p0"]
    store.add_pending(ticket.sync_id, "", cursors)
    started = time.perf_counter()
    for index, cursor in enumerate(cursors):
        store.complete_page(ticket.sync_id, cursor, rows[index * PAGE : (index + 1) * PAGE])
    seconds = time.perf_counter() - started
    staged_bytes = (
        store.redis.memory_usage(store._sync_keys(ticket.sync_id).staging_h, samples=0) or 0
    )
    return ticket.sync_id, seconds, staged_bytes


def stage_in_postgres(url: str, rows: list) -> float:
    """The alternative: every page COPYed into an UNLOGGED table (its own transaction)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_staging (sync_id text,"
            ' connection_id text COLLATE "C", handle text)'
        )
        sync_id = secrets.token_hex(6)
        started = time.perf_counter()
        for lo in range(0, len(rows), PAGE):
            with (
                conn.transaction(),
                conn.cursor().copy(
                    "COPY bench_staging (sync_id, connection_id, handle) FROM STDIN"
                ) as copy,
            ):
                for connection_id, handle in rows[lo : lo + PAGE]:
                    copy.write_row((sync_id, connection_id, handle))
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_staging")
    return seconds


def finalize(store: SyncStore, networks: NetworkStore, user: str, rows: list) -> dict:
    sync_id, staging_s, staged_bytes = stage_in_redis(store, user, rows)
    record = store.get_sync(sync_id)
    started = time.perf_counter()
    result = networks.finalize(
        sync_id=sync_id,
        user_id=user,
        provider="github",
        relation="followers",
        status="succeeded",
        finished_at=time.time(),
        connections=store.staged_connections(sync_id),
    )
    seconds = time.perf_counter() - started
    store.finish(
        sync_id,
        record.get("finalizing") or "succeeded",
        result.count,
        result.added,
        result.removed,
        result.initial,
    )
    return {
        "count": result.count,
        "added": result.added,
        "removed": result.removed,
        "finalize_s": round(seconds, 3),
        "redis_staging_s": round(staging_s, 3),
        "redis_staging_bytes_per_connection": round(staged_bytes / max(1, len(rows)), 1),
    }


def finalization(store, networks, url, sizes) -> tuple[list, dict]:
    out = []
    for size in sizes:
        user = f"bench-{size}-{secrets.token_hex(3)}"
        first = finalize(store, networks, user, connections(0, size))
        shift = max(1, size // 100)  # 1% removed, 1% added
        again = finalize(store, networks, user, connections(shift, size + shift))
        postgres_staging = stage_in_postgres(url, connections(0, size))
        out.append(
            {
                "size": size,
                "first_sync": first,
                "resync_1pct": again,
                "unlogged_copy_staging_s": round(postgres_staging, 3),
            }
        )
        print(
            f"  {size:>9,}: first {first['finalize_s']:.2f}s, re-sync "
            f"{again['finalize_s']:.2f}s (+{again['added']:,}/-{again['removed']:,}); "
            f"staging Redis {first['redis_staging_s']:.2f}s vs UNLOGGED COPY "
            f"{postgres_staging:.2f}s",
            flush=True,
        )
    return out, storage(url)


def storage(url: str) -> dict:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM connections").fetchone()[0]
        heap, pkey, by_id = conn.execute(
            "SELECT pg_table_size('connections'), pg_relation_size('connections_pkey'),"
            " pg_relation_size('connections_by_connection_id')"
        ).fetchone()
    total = heap + pkey + by_id
    return {
        "rows": rows,
        "bytes_per_connection_total": round(total / rows, 1),
        "table": round(heap / rows, 1),
        "primary_key": round(pkey / rows, 1),
        "member_joined_index": round(by_id / rows, 1),
    }


def members(networks: NetworkStore, url: str, queries: int) -> dict:
    user, linked, size = f"bench-members-{secrets.token_hex(3)}", 1_000_000, 5_000
    with psycopg.connect(url) as conn, conn.transaction():
        with conn.cursor().copy(
            "COPY linked_accounts (provider, provider_uid, user_id, account_id) FROM STDIN"
        ) as copy:
            for i in range(linked):
                copy.write_row(("github", str(50_000_000 + i), f"member-{i}", f"login-{i}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE linked_accounts")
    # 5,000 connections, every tenth one a linked account
    rows = [
        (str(50_000_000 + i * 97) if i % 10 == 0 else str(90_000_000 + i), f"h{i}")
        for i in range(size)
    ]
    networks.finalize(
        sync_id="s_bench_members_" + user,
        user_id=user,
        provider="github",
        relation="followers",
        status="succeeded",
        finished_at=time.time(),
        connections=rows,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE connections")
    timings = {}
    for limit in (100, 1000):
        samples = []
        for _ in range(queries):
            started = time.perf_counter()
            page, _ = networks.members_page(user, "github", "followers", None, limit)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        timings[f"limit_{limit}"] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
            "members_on_page": len(page),
        }
        print(
            f"  members (limit {limit}): p50 {timings[f'limit_{limit}']['p50_ms']} ms, "
            f"p99 {timings[f'limit_{limit}']['p99_ms']} ms",
            flush=True,
        )
    return {"network": size, "linked_accounts": linked, "queries": queries, **timings}


def feed(networks: NetworkStore) -> dict:
    started, cursor, read = time.perf_counter(), 0, 0
    while True:
        page, cursor = networks.feed(cursor, 1000)
        if not page:
            break
        read += len(page)
    seconds = time.perf_counter() - started
    return {
        "entries": read,
        "seconds": round(seconds, 3),
        "entries_per_s": round(read / seconds) if seconds else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--member-queries", type=int, default=1000)
    args = parser.parse_args(argv)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="netsync-bench-networks-"))
    url, server, drop = database(tmp)
    client, redis_server = redis_client(tmp)
    store = SyncStore(client, "bench" + secrets.token_hex(3))
    networks = NetworkStore(url)
    print(f"networks benchmark on PostgreSQL {server}", flush=True)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        final, stored = finalization(store, networks, url, sizes)
        print(f"  storage: {stored['bytes_per_connection_total']} bytes per connection", flush=True)
        member_figures = members(networks, url, args.member_queries)
        feed_figures = feed(networks)
        print(f"  feed: {feed_figures['entries_per_s']:,} entries/s", flush=True)
        leftover = sum(
            1 for key in client.scan_iter(match=f"{store.prefix}:*") if key.endswith(b"staging_h")
        )
        result = {
            "server": server,
            "machine": platform.machine(),
            "finalization": final,
            "storage": stored,
            "redis_staging_keys_left_after_final": leftover,
            "members": member_figures,
            "feed": feed_figures,
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    finally:
        networks.close()
        for key in client.scan_iter(match=f"{store.prefix}:*", count=1000):
            client.delete(key)
        drop()
        if redis_server:
            redis_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
