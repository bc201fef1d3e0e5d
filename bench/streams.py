"""The ``streams`` role: push-to-feed latency, and what holding thousands of streams costs.

Real processes (DevStack: simulator, web, workers, scheduler, one ``python -m
sync.streams``). Two parts:

1. **Latency**: ``ACCOUNTS`` linked Bluesky accounts (synced first); the bench
   posts ``POST /_sim/changes`` (each change is pushed on the simulator's
   Jetstream) at 10 and at 500 events/s, and a poller reads ``GET /v1/changes``
   every ``POLL_S`` as the main app would. Latency of an event = when the poller
   first saw its ``added`` entry − when its change was posted (so it includes
   the POST, Jetstream, the batch transaction and up to ``POLL_S`` of polling).
   Goal: p99 < 2 s.
2. **Holding streams**: ``MASTODON_STREAMS`` linked Mastodon accounts (rows in
   ``linked_accounts`` and stored credentials, as a login leaves them), plus the
   Bluesky ones (Jetstream) and one X account (subscriptions + stream). One fresh
   ``streams`` process opens every stream; then its RSS and its CPU over
   ``IDLE_S`` idle seconds (the simulator beats every Mastodon stream each 15 s,
   as Mastodon does). The projection to 100,000 accounts is linear in the
   per-stream figures (memory and heartbeat CPU grow with the streams held).

The cost of freshness over a simulated day (streams against incremental-only and
full-only syncing) is ``bench/freshness.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import psycopg
import redis
import requests

from bench import api as bench_api
from bench.memory import rss_kib
from devtools.devstack import DevStack, WorkerSpec, stop_process, temp_var_dir
from service.config import DEV_ENCRYPTION_KEY
from state.credentials import Credential, CredentialStore

RESULTS = Path(__file__).resolve().parent / "results" / "streams.json"
ACCOUNTS = 10
POLL_S = 0.02
RATES = ((10, 20.0), (500, 10.0))
QUICK_RATES = ((10, 5.0), (500, 3.0))
MASTODON_STREAMS = 2000
IDLE_S = 30.0
PROJECT_TO = 100_000
HTTP = requests.Session()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class FeedPoller(threading.Thread):
    """Reads the change feed as the main app does; when each stream ``added`` id appeared."""

    def __init__(self, web_url: str):
        super().__init__(daemon=True)
        self.web_url, self.seen, self._stop_event = web_url, {}, threading.Event()
        self.after = self._end()

    def _page(self, after: str) -> dict:
        return bench_api._api.get(
            f"{self.web_url}/v1/changes", params={"after": after, "limit": 1000}, timeout=10
        ).json()

    def _end(self) -> str:
        after = "0"
        while True:
            page = self._page(after)
            if not page["changes"]:
                return after
            after = page["next_cursor"]

    def run(self) -> None:
        while not self._stop_event.is_set():
            page = self._page(self.after)
            now = time.time()
            for entry in page["changes"]:
                if entry["source"] == "stream" and entry["kind"] == "added":
                    self.seen.setdefault(entry["connection"]["id"], now)
            if page["changes"]:
                self.after = page["next_cursor"]
                continue
            time.sleep(POLL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _change(sim_url: str, account_id: str, count: int) -> list[str]:
    response = HTTP.post(
        f"{sim_url}/_sim/changes",
        json={"provider": "bluesky", "account_id": account_id, "add": count},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["added"]


def latency_at(stack: DevStack, accounts: list[str], rate: int, seconds: float) -> dict:
    per_call = max(1, rate // 50)  # at most 50 changes a second, each of several follows
    interval = per_call / rate
    poller = FeedPoller(stack.web_url)
    poller.start()
    sent: dict[str, float] = {}
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < seconds:
        due = started + calls * interval
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        posted = time.time()
        for connection_id in _change(
            stack.simulator_url, accounts[calls % len(accounts)], per_call
        ):
            sent[connection_id] = posted
        calls += 1
    offered = len(sent) / (time.monotonic() - started)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(sent) <= set(poller.seen):
        time.sleep(0.1)
    poller.stop()
    latencies = [poller.seen[i] - t for i, t in sent.items() if i in poller.seen]
    return {
        "rate_asked": rate,
        "rate_offered": round(offered, 1),
        "events": len(sent),
        "arrived": len(latencies),
        "p50_s": _pct(latencies, 0.50),
        "p99_s": _pct(latencies, 0.99),
        "max_s": round(max(latencies), 3) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
    }


def _link_accounts(stack: DevStack, provider: str, count: int, prefix: str) -> None:
    """``count`` simulator accounts linked as a login and a profile call leave them."""
    accounts = [
        {"provider": provider, "id": str(10**17 + i), "size": 0, "token": f"{prefix}-tok-{i}"}
        for i in range(count)
    ]
    for start in range(0, count, 500):
        bench_api.add_account_many(stack, accounts[start : start + 500])
    credentials = CredentialStore(
        redis.Redis.from_url(stack.redis_url), "netsync", (DEV_ENCRYPTION_KEY,)
    )
    with psycopg.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO linked_accounts (provider, provider_uid, user_id, account_id)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(provider, a["id"], f"{prefix}-u{i}", a["id"]) for i, a in enumerate(accounts)],
        )
    for i, account in enumerate(accounts):
        credentials.save(provider, f"{prefix}-u{i}", Credential(account["id"], account["token"]))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open(stack: DevStack) -> dict:
    return HTTP.get(f"{stack.simulator_url}/_sim/push", timeout=10).json()["open"]


def holding(stack: DevStack, streams_count: int, idle_s: float) -> dict:
    baseline_pid = stack.processes["streams"].pid
    baseline_kib = rss_kib(baseline_pid)  # Jetstream + X only
    stop_process(stack.processes.pop("streams"))
    _link_accounts(stack, "mastodon", streams_count, "bench-ma")
    started = time.monotonic()
    proc = stack.start_streams("streams-many")
    deadline = started + 600
    while time.monotonic() < deadline and _open(stack).get("mastodon", 0) < streams_count:
        time.sleep(0.5)
    opened_s = time.monotonic() - started
    held = _open(stack)
    time.sleep(5)  # the first round's gap baselines settle
    rss = rss_kib(proc.pid)
    cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
    time.sleep(idle_s)
    cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    per_stream_kib = (rss - baseline_kib) / max(1, streams_count)
    return {
        "mastodon_streams": streams_count,
        "open": held,
        "seconds_to_open_all": round(opened_s, 1),
        "rss_mib": round(rss / 1024, 1),
        "baseline_rss_mib": round(baseline_kib / 1024, 1),
        "per_stream_kib": round(per_stream_kib, 1),
        "idle_cpu_percent": round(cpu * 100, 2),
        "projection_100k": {
            "rss_gib": round((baseline_kib + per_stream_kib * PROJECT_TO) / 1024**2, 2),
            "idle_cpu_cores": round(cpu * PROJECT_TO / streams_count, 2),
            "sockets": PROJECT_TO + 2,
        },
    }


def main(quick: bool = False) -> dict:
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-streams-"),
        workers=[WorkerSpec("normal,whale,trickle", pool="threads", concurrency=8, name="w")],
        env={"LOG_LEVEL": "WARNING", "STREAMS_DEBOUNCE_SECONDS": "2"},
    )
    with stack:
        accounts = []
        for i in range(ACCOUNTS):
            account = {
                "provider": "bluesky",
                "id": f"bench-{i}.bsky.social",
                "size": 5,
                "token": f"bs-bench-{i}",
            }
            bench_api.add_account(stack, account)
            record = bench_api.wait_final(stack, bench_api.login(stack, f"bench-bs-{i}", account))
            assert record["status"] == "succeeded", record
            accounts.append(account["id"])
        x_account = {"provider": "twitter", "id": str(4 * 10**17), "size": 5, "token": "tw-bench"}
        bench_api.add_account(stack, x_account)
        bench_api.wait_final(stack, bench_api.login(stack, "bench-x", x_account))
        stack.start_streams("streams")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _open(stack).get("bluesky"):
            time.sleep(0.2)
        latency = [
            latency_at(stack, accounts, rate, seconds)
            for rate, seconds in (QUICK_RATES if quick else RATES)
        ]
        held = holding(stack, 200 if quick else MASTODON_STREAMS, 5.0 if quick else IDLE_S)
    figures = {"latency": latency, "holding": held}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
