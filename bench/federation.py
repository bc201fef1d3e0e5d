"""Federated providers (issue 18): ``python -m bench --only federation``.

Each case runs on its own stack (embedded Redis, the simulator, the web app,
2 prefork workers × 2 processes, the scheduler); every login names its
Mastodon instance by URL (the simulator serves ``/mastodon/<name>/…``).

- **One instance down**: two instances, ``USERS`` accounts of ``SIZE``
  followers on each, logging in together. Three modes per run, in rotating
  order: the healthy instance's users **alone**; **both** instances healthy;
  and the **outage**: the other instance answers every call with Mastodon's
  503 for ``OUTAGE_S`` seconds (the issue's 60 s scaled down to keep the run
  short: the breaker's cooldown doubles from 5 s, so the shape is the same),
  then recovers. Figures: the healthy instance's syncs' time in the outage
  against the same users alone (goal: ratio ≤ 1.1) and against both healthy,
  the calls the dead instance received during the outage (bounded by its
  breaker: the threshold, the calls in flight, one probe per cooldown), and
  whether the dead instance's syncs still finish exactly once it recovers.
- **50 instances × 4 users**: each instance announces its own limit per user
  (``60 + i`` calls per 5 min, aligned windows, as Mastodon's), 200 syncs of
  400 followers each. Figures: 429s (goal 0), syncs exact (goal all), and
  the Redis memory of the per-instance state (the announced buckets and the
  breakers), per instance and per account.

Results: ``bench/results/federation.json``.
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
from pathlib import Path

import requests

from bench import quota
from devtools.devstack import DevStack, temp_var_dir

RESULTS = Path(__file__).parent / "results"
USERS = 8
SIZE = 4_000  # 50 pages of 80 and the profile call
OUTAGE_S = 20.0
RUNS = 5
ENV = {**quota.ENV, "RETRY_BUDGET_SECONDS": "180"}


def stack_for(scenario: dict | None = None) -> DevStack:
    return DevStack(
        var_dir=temp_var_dir("netsync-bench-federation-"),
        workers=quota.workers(),
        scenario=scenario or {},
        env=dict(ENV),
    )


def account_on(stack, bench_api, instance: str, size: int) -> dict:
    account = {
        "provider": "mastodon",
        "id": str(10**9 + secrets.randbelow(10**9)),
        "size": size,
        "token": f"tok-{secrets.token_hex(8)}",
        "instance": instance,
    }
    bench_api.add_account(stack, account)
    return {**account, "instance_url": f"{stack.simulator_url}/mastodon/{instance}"}


def exact(stack, bench_api, user: str, account: dict) -> bool:
    truth = requests.get(
        f"{stack.simulator_url}/_sim/truth/mastodon/{account['id']}",
        params={"instance": account["instance"]},
        timeout=30,
    ).json()["ids"]
    ids = bench_api.network_ids(stack, user, "mastodon")
    return len(ids) == len(set(ids)) and set(ids) == set(truth)


def usage(stack, instance: str) -> dict:
    stats = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=10).json()
    return stats["usage"].get("mastodon", {}).get("instances", {}).get(instance, {})


# -- one instance down ---------------------------------------------------------------------
def one_run(stack, bench_api, mode: str, run: int) -> dict:
    """``mode``: ``alone`` (the healthy instance's users only), ``both`` (both instances'
    users, no outage) or ``outage`` (both, the other instance down for ``OUTAGE_S``)."""
    outage = mode == "outage"
    healthy, other = f"up-{run}-{mode}.example", f"down-{run}-{mode}.example"
    fault_id = f"outage-{run}"
    if outage:
        requests.post(
            f"{stack.simulator_url}/_sim/faults",
            json={"add": [{"id": fault_id, "kind": "outage", "provider": "mastodon",
                           "instance": other}]},
            timeout=10,
        ).raise_for_status()  # fmt: skip
    ups = [(f"up-{secrets.token_hex(4)}", account_on(stack, bench_api, healthy, SIZE))
           for _ in range(USERS)]  # fmt: skip
    downs = [(f"down-{secrets.token_hex(4)}", account_on(stack, bench_api, other, SIZE))
             for _ in range(USERS if mode != "alone" else 0)]  # fmt: skip
    started = time.monotonic()
    pairs = [(u, a) for pair in zip(ups, downs) for u, a in pair] or ups  # interleaved logins
    syncs = {u: bench_api.login(stack, u, a) for u, a in pairs}
    up_records = [bench_api.wait_final(stack, syncs[u], timeout=600) for u, _ in ups]
    up_done = time.monotonic() - started
    dead_calls = None
    if outage:
        remaining = OUTAGE_S - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        dead_calls = usage(stack, other).get("calls", 0)
        requests.post(
            f"{stack.simulator_url}/_sim/faults", json={"remove": [fault_id]}, timeout=10
        ).raise_for_status()
    down_records = [bench_api.wait_final(stack, syncs[u], timeout=600) for u, _ in downs]
    durations = [
        bench_api.seconds(r["created_at"], r["finished_at"]) for r in up_records if r["finished_at"]
    ]
    return {
        "run": run,
        "mode": mode,
        "healthy_makespan_s": round(up_done, 2),
        "healthy_median_s": round(statistics.median(durations), 2),
        "healthy_exact": sum(
            r["status"] == "succeeded" and exact(stack, bench_api, u, a)
            for (u, a), r in zip(ups, up_records)
        ),
        "other_exact": sum(
            r["status"] == "succeeded" and exact(stack, bench_api, u, a)
            for (u, a), r in zip(downs, down_records)
        ),
        "other_statuses": sorted({r["status"] for r in down_records}),
        "calls_into_dead_instance_during_outage": dead_calls,
        "other_calls_in_all": usage(stack, other).get("calls", 0) if downs else None,
        "dead_breaker_bytes": breaker_bytes(stack, other) if outage else None,
    }


def breaker_bytes(stack, instance: str) -> int:
    host = stack.simulator_url.removeprefix("http://")
    key = f"netsync:{{breaker:mastodon@{host}/mastodon/{instance}}}"
    return stack.redis_client().memory_usage(key) or 0


def outage_case(bench_api) -> dict:
    print(
        f"federation benchmark: {USERS}+{USERS} users on two instances, one down for "
        f"{OUTAGE_S:g} s, {RUNS} runs of each ...",
        flush=True,
    )
    runs = []
    with stack_for() as stack:
        # warm-up: the first syncs pay the workers' imports and connections
        warm = account_on(stack, bench_api, "warm.example", 160)
        bench_api.wait_final(stack, bench_api.login(stack, "warm", warm))
        for run in range(RUNS):
            modes = ("alone", "both", "outage")
            for mode in modes[run % 3 :] + modes[: run % 3]:  # no mode always first
                result = one_run(stack, bench_api, mode, run)
                runs.append(result)
                print(f"  run {run} {mode}: {result}", flush=True)
    runs.sort(key=lambda r: r["run"])
    alone = [r for r in runs if r["mode"] == "alone"]
    both = [r for r in runs if r["mode"] == "both"]
    down = [r for r in runs if r["mode"] == "outage"]
    ratios = [d["healthy_makespan_s"] / a["healthy_makespan_s"] for a, d in zip(alone, down)]
    loaded = [d["healthy_makespan_s"] / b["healthy_makespan_s"] for b, d in zip(both, down)]
    medians = [d["healthy_median_s"] / a["healthy_median_s"] for a, d in zip(alone, down)]
    return {
        "users_per_instance": USERS,
        "size": SIZE,
        "outage_s": OUTAGE_S,
        "runs": runs,
        "makespan_ratio_median": round(statistics.median(ratios), 3),
        "makespan_ratios": [round(r, 3) for r in ratios],
        "makespan_ratio_vs_both_healthy_median": round(statistics.median(loaded), 3),
        "median_sync_ratio_median": round(statistics.median(medians), 3),
        "calls_into_dead_instance_median": statistics.median(
            d["calls_into_dead_instance_during_outage"] for d in down
        ),
        "syncs_waiting_on_dead_instance": USERS,
        "dead_breaker_bytes": statistics.median(d["dead_breaker_bytes"] for d in down),
    }


# -- 50 instances x 4 users, each instance announcing its own limit --------------------------
def many_case(bench_api, instances: int = 50, users: int = 4, size: int = 400) -> dict:
    print(
        f"federation benchmark: {instances} instances x {users} users, limits announced per "
        "instance ...",
        flush=True,
    )
    names = [f"n{i}.example" for i in range(instances)]
    rules = [
        {"limit": 60 + i, "window_s": 300, "scope": "user", "align": True, "instance": name}
        for i, name in enumerate(names)
    ]
    with stack_for({"rate_limits": {"mastodon": rules}}) as stack:
        accounts = [(f"m-{secrets.token_hex(4)}", account_on(stack, bench_api, name, size))
                    for name in names for _ in range(users)]  # fmt: skip
        started = time.monotonic()
        syncs = {u: bench_api.login(stack, u, a) for u, a in accounts}
        records = [bench_api.wait_final(stack, syncs[u], timeout=900) for u, _ in accounts]
        seconds = time.monotonic() - started
        good = sum(
            r["status"] == "succeeded" and exact(stack, bench_api, u, a)
            for (u, a), r in zip(accounts, records)
        )
        stats = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=10).json()
        memory = state_memory(stack, names)
    per_instance = [m["bytes"] for m in memory]
    return {
        "instances": instances,
        "users_per_instance": users,
        "size": size,
        "seconds": round(seconds, 2),
        "syncs": len(records),
        "exact": good,
        "http_429": stats["rate_limited"]["total"],
        "calls": stats["usage"]["mastodon"]["calls"],
        "state_bytes_per_instance_median": statistics.median(per_instance),
        "state_bytes_per_instance_max": max(per_instance),
        "state_keys_per_instance_median": statistics.median(m["keys"] for m in memory),
        "state_bytes_per_account_median": round(statistics.median(per_instance) / users, 1),
    }


def state_memory(stack, names: list[str]) -> list[dict]:
    """Redis ``MEMORY USAGE`` of each instance's quota and breaker state."""
    r = stack.redis_client()
    host = stack.simulator_url.removeprefix("http://")
    out = []
    for name in names:
        instance = f"{host}/mastodon/{name}"
        keys = list(r.scan_iter(match=f"netsync:ann:{{mastodon:*:{instance}*", count=1000))
        keys += list(r.scan_iter(match=f"netsync:quota:{{mastodon:*{instance}*", count=1000))
        breaker = f"netsync:{{breaker:mastodon@{instance}}}"
        if r.exists(breaker):
            keys.append(breaker)
        out.append(
            {
                "instance": name,
                "keys": len(keys),
                "bytes": sum(r.memory_usage(k) or 0 for k in keys),
            }
        )
    return out


def main(quick: bool = False) -> dict:
    from bench import api as bench_api

    global RUNS
    if quick:
        RUNS = 1
    out = {
        "scenario": "Mastodon instances served by the simulator; 2 prefork workers x 2",
        "machine": "2 cores; simulator, Redis, web, scheduler and workers share them",
        "goals": {
            "outage": "the healthy instance's syncs: time ratio <= 1.1 against no outage; "
            "calls into the dead instance bounded by its breaker",
            "many": "zero 429s, every sync exact; memory of the per-instance state",
        },
        "outage": outage_case(bench_api),
        "many": many_case(bench_api, instances=10 if quick else 50),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "federation.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out["outage"].items() if k != "runs"}, indent=2))
    print(json.dumps(out["many"], indent=2))
    return out


if __name__ == "__main__":
    main()
