"""Sync modes: what a re-sync costs when little changed (``python -m bench --only modes``).

For a 10,000-connection network (``--quick``: 2,000) of each provider that offers
something cheaper than a full read (GitHub: conditional requests; X, Bluesky:
newest-first heads; Mastodon: ``min_id`` heads), one run each, real processes:

1. the first sync (full: nothing stored yet);
2. a re-sync with nothing changed (``auto``: incremental);
3. a re-sync after 1 % were added (``auto``: incremental);
4. a re-sync after 0.1 % were removed (``auto``: the count went down, so full):
   this is the full re-read every incremental figure is set beside.

Per sync: calls, counted calls (that used the provider's quota; GitHub's 304s do
not), 304s, resources billed, dollars (X bills $0.010 per user returned), seconds
from trigger to final. For heads, the physical minimum (⌈changed ÷ page size⌉ + 1
calls) and the ratio to it. For GitHub, what the conditional cache keeps per
connection (Redis ``MEMORY USAGE`` of the network's cache, and its raw bytes).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from pathlib import Path

import requests

from bench import api
from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

RESULTS = Path(__file__).parent / "results" / "modes.json"
PROVIDERS = ("github", "twitter", "bluesky", "mastodon")
SIZE = 10_000
ENV = {"NETSYNC_ENV": "test", "HTTP_READ_TIMEOUT": "10"}


def stack() -> DevStack:
    return DevStack(
        var_dir=temp_var_dir("netsync-bench-modes-"),
        workers=[WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=4, name="m")],
        env=ENV,
    )


def change(dev: DevStack, account: dict, add=0, remove=()) -> dict:
    response = requests.post(
        f"{dev.simulator_url}/_sim/changes",
        json={
            "provider": account["provider"],
            "account_id": account["id"],
            "add": add,
            "remove": list(remove),
        },
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def truth(dev: DevStack, account: dict) -> list[str]:
    response = requests.get(
        f"{dev.simulator_url}/_sim/truth/{account['provider']}/{account['id']}", timeout=60
    )
    response.raise_for_status()
    return response.json()["ids"]


def resync(dev: DevStack, user: str, provider: str) -> dict:
    response = api._api.post(
        f"{dev.web_url}/v1/syncs",
        json={"user_id": user, "provider": provider, "force": True},
        timeout=30,
    )
    response.raise_for_status()
    return api.wait_final(dev, response.json()["sync_id"], timeout=1200)


def figures(record: dict) -> dict:
    assert record["status"] == "succeeded", record
    cost = record["cost"]
    return {
        "mode": record["mode"],
        "mode_reason": record.get("mode_reason"),
        "calls": cost["calls"],
        "counted_calls": cost["counted_calls"],
        "not_modified": cost["not_modified"],
        "resources": cost["resources"],
        "usd": cost["usd"],
        "seconds": round(api.seconds(record["created_at"], record["finished_at"]), 3),
        "count": record["connections_fetched"],
    }


def cache_bytes(dev: DevStack, user: str, count: int) -> dict:
    """What GitHub's conditional cache keeps for the network, per connection."""
    redis = dev.redis_client()
    key = f"netsync:{{github:{user}}}:followers:etags"
    raw = sum(len(k) + len(v) for k, v in redis.hgetall(key).items())
    used = int(redis.memory_usage(key, samples=0) or 0)
    return {
        "redis_memory_usage_bytes": used,
        "raw_bytes": raw,
        "bytes_per_connection": round(used / count, 1),
        "raw_bytes_per_connection": round(raw / count, 1),
    }


def run_provider(dev: DevStack, provider: str, size: int) -> dict:
    import providers

    page_size = providers.provider_classes()[provider].PAGE_SIZE
    account = {
        "provider": provider,
        "id": f"bench-modes-{secrets.token_hex(3)}",
        "size": size,
        "token": f"tok-{secrets.token_hex(6)}",
    }
    if provider == "bluesky":
        account["id"] += ".bsky.social"
    api.add_account(dev, account)
    user = f"u-{secrets.token_hex(5)}"
    phases = {"first": figures(api.wait_final(dev, api.login(dev, user, account), timeout=1200))}
    phases["unchanged"] = figures(resync(dev, user, provider))
    added = max(1, size // 100)
    change(dev, account, add=added)
    phases["added_1pct"] = figures(resync(dev, user, provider))
    removed = max(1, size // 1000)
    change(dev, account, remove=truth(dev, account)[:removed])
    phases["removed_0_1pct_full"] = figures(resync(dev, user, provider))
    network = set(api.network_ids(dev, user, provider))
    assert network == set(truth(dev, account)), "the full sync's network is not the truth"
    full = phases["removed_0_1pct_full"]
    result = {"page_size": page_size, "size": size, "phases": phases}
    for name, changed in (("unchanged", 0), ("added_1pct", added)):
        phase = phases[name]
        if provider == "github":
            # every page is asked again; the minimum is in counted calls: the pages the
            # change moved and the profile (whose count changed), none when unchanged
            minimum = math.ceil(changed / page_size) + 1 if changed else 0
            phase["physical_minimum_counted_calls"] = minimum
            phase["counted_vs_minimum"] = (
                round(phase["counted_calls"] / minimum, 2) if minimum else None
            )
        else:
            # the formula; a head also needs to meet one known connection, so
            # nothing changed is the profile and one page, and a growth that fills its
            # pages exactly takes one page more
            minimum = math.ceil(changed / page_size) + 1
            phase["physical_minimum_calls"] = minimum
            phase["calls_vs_minimum"] = round(phase["calls"] / minimum, 2)
            proof = math.ceil((changed + 1) / page_size) + 1
            phase["minimum_with_a_known_connection"] = proof
            phase["calls_vs_minimum_with_a_known_connection"] = round(phase["calls"] / proof, 2)
        phase["counted_share_of_full"] = round(phase["counted_calls"] / full["counted_calls"], 4)
        if full["usd"]:
            phase["usd_share_of_full"] = round(phase["usd"] / full["usd"], 4)
    if provider == "github":
        result["conditional_cache"] = cache_bytes(dev, user, full["count"])
    return result


def main(quick: bool = False) -> dict:
    size = 2_000 if quick else SIZE
    started = time.monotonic()
    out: dict = {"size": size, "providers": {}}
    with stack() as dev:
        for provider in PROVIDERS:
            out["providers"][provider] = run_provider(dev, provider, size)
            print(f"[bench modes] {provider} done", flush=True)
    out["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
