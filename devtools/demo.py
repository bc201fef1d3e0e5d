"""``make demo``: real syncs, end to end, on this machine, then a summary.

Starts the embedded Redis and PostgreSQL (unless ``REDIS_URL`` /
``DATABASE_URL`` are set), the simulator with a handful of accounts (one
whale; ada and grace follow each other), the web app, one Celery worker per
queue and the scheduler; sends a signed login webhook per user (every
relation of the provider: each its own sync); shows progress; prints a
table and who of ada's connections is already here; stops everything and
exits 0 (1 if a sync did not succeed).
"""

from __future__ import annotations

import sys
import time

import requests

import providers
from devtools.devstack import DevStack, WorkerSpec, send_login, temp_var_dir
from service.config import DEV_API_TOKEN

#: (user, provider, account size) — the 40,000 account is the whale
DEMO_USERS = [
    ("ada", "github", 180),
    ("grace", "github", 2_400),
    ("linus", "github", 40_000),
    ("margaret", "twitter", 950),
    ("ken", "mastodon", 430),
    ("barbara", "linkedin", 520),
    ("dennis", "facebook", 310),
    ("edsger", "github", 0),
    ("alan", "bluesky", 760),
]
#: account ids in the provider's own form where a name will not do (a Bluesky handle)
ACCOUNT_ID = {"bluesky": "{user}.bsky.social"}


def demo_accounts():
    for user, provider, size in DEMO_USERS:
        if provider in providers.names():
            account_id = ACCOUNT_ID.get(provider, "{user}-{provider}").format(
                user=user, provider=provider
            )
            yield {
                "user": user,
                "provider": provider,
                "id": account_id,
                "size": size,
                "token": f"demo-token-{user}",
            }


def login(web_url: str, account: dict) -> list[dict]:
    response = send_login(web_url, account["user"], [account])
    response.raise_for_status()
    return response.json()["syncs"]


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
    print(
        f"\n{'user (relation)':<22} {'provider':<9} {'queue':<8} {'status':<10} {'connections':>11} {'time':>7}"
    )
    for key in sorted(records):
        record = records[key]
        seconds = float(record.get("_finished", 0) or 0)
        user = f"{record['user_id']} ({record['relation']})"
        print(
            f"{user:<22} {record['provider']:<9} {record.get('queue', ''):<8} "
            f"{record['status']:<10} {record.get('connections_fetched') or 0:>11,} "
            f"{seconds:>6.1f}s"
        )


def main() -> int:
    accounts = list(demo_accounts())
    scenario = {
        "latency_ms": {"mean": 40, "jitter": 20},
        "accounts": [{k: a[k] for k in ("provider", "id", "size", "token")} for a in accounts],
    }
    # a small graph: ada and grace follow each other (members, member_joined)
    for sim_account in scenario["accounts"]:
        if sim_account["id"] == "ada-github":
            sim_account["connections_include"] = {
                "followers": ["grace-github"],
                "following": ["grace-github"],
            }
        if sim_account["id"] == "grace-github":
            sim_account["connections_include"] = {"followers": ["ada-github"]}
    var_dir = temp_var_dir("netsync-demo-")
    print(
        f"starting Redis, simulator, web, 3 workers, the scheduler and streams (logs in {var_dir}) ..."
    )
    stack = DevStack(
        var_dir=var_dir,
        scenario=scenario,
        workers=[
            WorkerSpec("normal", pool="threads", concurrency=8, name="normal"),
            WorkerSpec("whale", pool="threads", concurrency=8, name="whale"),
            WorkerSpec("trickle", pool="threads", concurrency=2, name="trickle"),
        ],
        streams=True,  # the push channels, as `make run` starts them
    )
    with stack:
        started, syncs = {}, {}
        for account in accounts:
            started[account["user"]] = time.monotonic()
            for sync in login(stack.web_url, account):
                syncs[f"{account['user']}/{sync['relation']}"] = sync
        print(f"sent {len(syncs)} signed login webhooks; syncing ...")
        records = watch(stack.web_url, syncs)
        for record in records.values():
            finished = record.get("finished_at")
            created = record.get("created_at")
            record["_finished"] = _seconds_between(created, finished)
        print_table(accounts, records, started)
        print_members(stack.web_url, "ada")
    ok = all(r["status"] == "succeeded" for r in records.values())
    print("\nall syncs succeeded" if ok else "\nsome syncs did not succeed")
    return 0 if ok else 1


def print_members(web_url: str, user: str) -> None:
    """Who of the user's GitHub followers already uses the main app (the members lookup)."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {DEV_API_TOKEN}"
    body = api.get(
        f"{web_url}/v1/users/{user}/networks/github/followers/members", timeout=10
    ).json()
    names = ", ".join(f"{m['user_id']} ({m['handle']})" for m in body.get("members", []))
    print(f"\n{user}'s GitHub followers already here: {names or 'none'}")
    feed = api.get(f"{web_url}/v1/changes", params={"limit": 1000}, timeout=10).json()
    kinds = {}
    for entry in feed.get("changes", []):
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    print(f"change feed: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}")


def _seconds_between(start, end) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end) - parse(start)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
