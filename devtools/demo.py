"""``make demo``: real syncs, end to end, on this machine, then a summary.

Starts the embedded Redis (unless ``REDIS_URL`` is set), the simulator with a
handful of accounts (one whale), the web app, one Celery worker per queue
and the scheduler; sends a signed login webhook per user; shows progress;
prints a table; stops everything and exits 0 (1 if a sync did not succeed).
"""
from __future__ import annotations

import sys
import time

import requests

import providers
from service.config import DEV_API_TOKEN
from devtools.devstack import DevStack, WorkerSpec, send_login, temp_var_dir

#: (user, provider, account size) — the 40,000 account is the whale
DEMO_USERS = [
    ("ada", "github", 180), ("grace", "github", 2_400), ("linus", "github", 40_000),
    ("margaret", "twitter", 950), ("ken", "mastodon", 430), ("barbara", "linkedin", 520),
    ("dennis", "facebook", 310), ("edsger", "github", 0), ("alan", "bluesky", 760),
]
#: account ids in the provider's own form where a name will not do (a Bluesky handle)
ACCOUNT_ID = {"bluesky": "{user}.bsky.social"}


def demo_accounts():
    for user, provider, size in DEMO_USERS:
        if provider in providers.names():
            account_id = ACCOUNT_ID.get(provider, "{user}-{provider}").format(user=user,
                                                                              provider=provider)
            yield {"user": user, "provider": provider, "id": account_id, "size": size,
                   "token": f"demo-token-{user}"}


def login(web_url: str, account: dict) -> dict:
    response = send_login(web_url, account["user"], [account])
    response.raise_for_status()
    return response.json()["syncs"][0]


def watch(web_url: str, syncs: dict, timeout: float = 300) -> dict:
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {DEV_API_TOKEN}"
    records, deadline = {}, time.monotonic() + timeout
    interactive, last_line = sys.stdout.isatty(), 0.0
    while time.monotonic() < deadline:
        for user, sync in syncs.items():
            records[user] = api.get(f"{web_url}/v1/syncs/{sync['sync_id']}", timeout=10).json()
        done = sum(r["status"] not in ("queued", "running") for r in records.values())
        fetched = sum(r.get("connections_fetched") or 0 for r in records.values())
        line = f"  {done}/{len(records)} syncs final, {fetched:,} connections fetched"
        if interactive:
            print(f"\r{line}   ", end="", flush=True)
        elif time.monotonic() - last_line > 2 or done == len(records):
            print(line, flush=True)  # a log, not a terminal: a line every 2 s
            last_line = time.monotonic()
        if done == len(records):
            break
        time.sleep(0.3)
    print()
    return records


def print_table(accounts: list, records: dict, started: dict) -> None:
    print(f"\n{'user':<10} {'provider':<9} {'queue':<8} {'status':<10} {'connections':>11} {'time':>7}")
    for account in accounts:
        record = records[account["user"]]
        seconds = float(record.get("_finished", 0) or 0)
        print(f"{account['user']:<10} {account['provider']:<9} {record.get('queue', ''):<8} "
              f"{record['status']:<10} {record.get('connections_fetched') or 0:>11,} "
              f"{seconds:>6.1f}s")


def main() -> int:
    accounts = list(demo_accounts())
    scenario = {"latency_ms": {"mean": 40, "jitter": 20},
                "accounts": [{k: a[k] for k in ("provider", "id", "size", "token")} for a in accounts]}
    var_dir = temp_var_dir("netsync-demo-")
    print(f"starting Redis, simulator, web, 3 workers and the scheduler (logs in {var_dir}) ...")
    stack = DevStack(var_dir=var_dir, scenario=scenario, workers=[
        WorkerSpec("normal", pool="threads", concurrency=8, name="normal"),
        WorkerSpec("whale", pool="threads", concurrency=8, name="whale"),
        WorkerSpec("trickle", pool="threads", concurrency=2, name="trickle"),
    ])
    with stack:
        started, syncs = {}, {}
        for account in accounts:
            started[account["user"]] = time.monotonic()
            syncs[account["user"]] = login(stack.web_url, account)
        print(f"sent {len(syncs)} signed login webhooks; syncing ...")
        records = watch(stack.web_url, syncs)
        for user, record in records.items():
            finished = record.get("finished_at")
            created = record.get("created_at")
            record["_finished"] = _seconds_between(created, finished)
        print_table(accounts, records, started)
    ok = all(r["status"] == "succeeded" for r in records.values())
    print("\nall syncs succeeded" if ok else "\nsome syncs did not succeed")
    return 0 if ok else 1


def _seconds_between(start, end) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end) - parse(start)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
