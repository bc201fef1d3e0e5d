"""The cost of freshness over a simulated day: streams against incremental-only and
full-only syncing (``python -m bench --only freshness``).

``USERS`` linked X accounts of ``FOLLOWERS`` followers each (X: the provider that
bills, $0.010 per follower returned and per activity event delivered). A day is
``HOURS`` rounds; each round every account gains a follower, and every sixth round
loses one (about 1.2 % growth a day). Three strategies, each on accounts of its own,
real processes throughout:

- **full hourly**: after each round, a ``full`` sync of every account;
- **incremental hourly**: after each round, an ``incremental`` sync (X: a newest-first
  head; removals are not seen);
- **streams**: the ``streams`` role holds X's Activity API; the changes arrive as
  events (billed each); one ``full`` sync at the end of the day verifies (what
  ``auto`` does once ``FULL_SYNC_EVERY`` has passed).

Figures per strategy and day: calls, counted calls, dollars (syncs' ``cost`` plus
the events delivered × ``PRICE_TWITTER``), and how stale the feed is: a sync
strategy shows a change at the next sync (half an hour on average at one sync an
hour, by construction, not measured); streams within the latency measured in
``bench/streams.py``. Whether the networks equal the provider's truth at the
day's end is checked for each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from bench import api
from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

RESULTS = Path(__file__).parent / "results" / "freshness.json"
USERS, FOLLOWERS, HOURS = 20, 2_000, 24
PRICE = 0.01


def _post_sync(dev: DevStack, user: str, mode: str) -> str:
    response = api._api.post(
        f"{dev.web_url}/v1/syncs",
        json={"user_id": user, "provider": "twitter", "force": True, "mode": mode},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["sync_id"]


def _sync_all(dev: DevStack, users: list[str], mode: str) -> dict:
    ids = [_post_sync(dev, user, mode) for user in users]
    totals = {"syncs": 0, "calls": 0, "counted_calls": 0, "usd": 0.0}
    for sync_id in ids:
        record = api.wait_final(dev, sync_id, timeout=600, poll=0.1)
        assert record["status"] == "succeeded", record
        totals["syncs"] += 1
        totals["calls"] += record["cost"]["calls"]
        totals["counted_calls"] += record["cost"]["counted_calls"]
        totals["usd"] += record["cost"]["usd"]
    return totals


def _change(dev: DevStack, account: dict, hour: int) -> tuple[int, int]:
    body = {"provider": "twitter", "account_id": account["id"], "add": 1}
    if hour % 6 == 5:
        truth = requests.get(
            f"{dev.simulator_url}/_sim/truth/twitter/{account['id']}", timeout=60
        ).json()["ids"]
        body["remove"] = [truth[len(truth) // 2]]
    requests.post(f"{dev.simulator_url}/_sim/changes", json=body, timeout=30).raise_for_status()
    return 1, len(body.get("remove", []))


def _accounts(dev: DevStack, label: str) -> list[tuple[str, dict]]:
    out = []
    for i in range(USERS):
        account = {
            "provider": "twitter",
            "id": str(10**17 + hash((label, i)) % 10**17),
            "size": FOLLOWERS,
            "token": f"tw-{label}-{i}",
        }
        api.add_account(dev, account)
        user = f"fresh-{label}-{i}"
        record = api.wait_final(dev, api.login(dev, user, account), timeout=600)
        assert record["status"] == "succeeded", record
        out.append((user, account))
    return out


def _matches_truth(dev: DevStack, pairs) -> int:
    """How many of the accounts' stored networks equal the provider's truth."""
    same = 0
    for user, account in pairs:
        truth = requests.get(
            f"{dev.simulator_url}/_sim/truth/twitter/{account['id']}", timeout=60
        ).json()["ids"]
        same += sorted(api.network_ids(dev, user, "twitter")) == sorted(truth)
    return same


def _stream_entries(dev: DevStack, users: list[str]) -> int:
    """Feed entries the streams role wrote for ``users`` (the events it applied)."""
    wanted, count, after = set(users), 0, "0"
    while True:
        page = api._api.get(
            f"{dev.web_url}/v1/changes", params={"after": after, "limit": 1000}, timeout=30
        ).json()
        if not page["changes"]:
            return count
        count += sum(
            1 for e in page["changes"] if e["source"] == "stream" and e["user_id"] in wanted
        )
        after = page["next_cursor"]


def _day(dev: DevStack, pairs, mode: str | None) -> dict:
    users = [user for user, _ in pairs]
    totals = {"syncs": 0, "calls": 0, "counted_calls": 0, "usd": 0.0, "events": 0}
    added = removed = 0
    for hour in range(HOURS):
        for _, account in pairs:
            a, r = _change(dev, account, hour)
            added, removed = added + a, removed + r
        if mode is not None:
            for key, value in _sync_all(dev, users, mode).items():
                totals[key] += value
    if mode is None:  # streams: the events, then the day's one verifying sync
        totals["events"] = added + removed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _stream_entries(dev, users) < added + removed:
            time.sleep(0.5)
        totals["stream_entries"] = _stream_entries(dev, users)
        totals["usd_events_only"] = round(totals["events"] * PRICE, 2)
        for key, value in _sync_all(dev, users, "full").items():
            totals[key] += value
        totals["usd"] += totals["events"] * PRICE
    totals["usd"] = round(totals["usd"], 2)
    totals.update(
        added=added,
        removed=removed,
        networks_equal_truth=f"{_matches_truth(dev, pairs)}/{len(pairs)}",
        usd_per_user=round(totals["usd"] / len(pairs), 2),
    )
    return totals


def main(quick: bool = False) -> dict:
    global USERS, HOURS
    if quick:
        USERS, HOURS = 5, 6
    dev = DevStack(
        var_dir=temp_var_dir("netsync-bench-freshness-"),
        workers=[WorkerSpec("normal,whale,trickle", pool="threads", concurrency=8, name="w")],
        env={"LOG_LEVEL": "WARNING", "NETSYNC_ENV": "test"},
    )
    with dev:
        full = _day(dev, _accounts(dev, "full"), "full")
        incremental = _day(dev, _accounts(dev, "incr"), "incremental")
        pairs = _accounts(dev, "stream")
        dev.start_streams("streams")
        time.sleep(8)  # subscriptions made and the stream open before the day starts
        streams = _day(dev, pairs, None)
    figures = {
        "users": USERS,
        "followers": FOLLOWERS,
        "hours": HOURS,
        "full_hourly": {**full, "staleness": "30 min on average (one sync an hour)"},
        "incremental_hourly": {
            **incremental,
            "staleness": "30 min on average for adds; removals never (not seen)",
        },
        "streams": {**streams, "staleness": "~0.1 s (bench/streams.py)"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
