"""Chain overhead and trigger latency at idle.

**Chain overhead**: a Twitter/X account (cursor pagination: each page's
``next_token`` launches the next page, so every call waits for the one
before) against a simulator that answers every call in exactly
``LATENCY_MS``. Figure: trigger-to-last-page ÷ (chained calls ×
``LATENCY_MS``), goal ≤ 1.10. The simulator's call log (arrival times) splits
each hop into the provider's 40 ms and netsync's part (answer → the next
call's arrival: parse, store, publish, the broker round trip, quota and
credential look-ups, the HTTP client); py-spy samples the worker meanwhile and
names where netsync's part goes.

**Trigger latency at idle**: ``IDLE_LOGINS`` signed login webhooks one at a
time, on the same stack once the chain is done: the time from sending the
webhook to the simulator receiving the sync's first provider call.
(At 200 logins/min it is measured inside the isolation benchmark.)
"""

from __future__ import annotations

import os
import statistics
import time

import requests

from bench import profiling
from bench.stats import percentile
from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

LATENCY_MS = 40.0
PAGE_SIZE = 1000  # Twitter/X max_results
IDLE_LOGINS = 30
#: Twitter/X allows 15 follower pages per 15 min: what is measured here is netsync, not the quota
UNBOUND_QUOTA = "1000000/3600/token"


def calls_of(stack: DevStack, provider: str, token: str) -> list[dict]:
    response = requests.get(
        f"{stack.simulator_url}/_sim/calls",
        params={"provider": provider, "token": token},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["calls"]


def run_chain(pages: int, bench_api) -> dict:
    recorder = profiling.Recorder("chain")
    # the Procfile's whale worker (threads, 4 slots) consumes both queues here
    worker = WorkerSpec(
        "normal,whale", pool="threads", concurrency=4, name="chain-worker", wrap=recorder.wrap
    )
    size = pages * PAGE_SIZE
    # no X limits in the simulator either (its real 300 follower pages per 15 min per user
    # would be near at 200 pages plus the direct calls)
    scenario = {"latency_ms": {"mean": LATENCY_MS, "jitter": 0}, "rate_limits": {"twitter": []}}
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-chain-"),
        workers=[worker],
        scenario=scenario,
        env={"LOG_LEVEL": "WARNING", "QUOTA_TWITTER": UNBOUND_QUOTA},
    )
    with stack:
        warm = {
            "provider": "twitter",
            "id": "2244994900",
            "size": 2 * PAGE_SIZE,
            "token": "tok-chain-warm",
        }
        bench_api.add_account(stack, warm)
        bench_api.wait_final(stack, bench_api.login(stack, "chain-warm", warm), timeout=120)
        account = {"provider": "twitter", "id": "2244994945", "size": size, "token": "tok-chain"}
        bench_api.add_account(stack, account)
        sent = time.time()
        record = bench_api.wait_final(
            stack, bench_api.login(stack, "chain-user", account), timeout=600, poll=0.01
        )
        assert record["status"] == "succeeded" and record["connections_fetched"] == size, record
        calls = calls_of(stack, "twitter", account["token"])
        direct_ms = direct_call_ms(stack, account)
        idle = idle_trigger_latency(
            stack, bench_api, IDLE_LOGINS // 3 if pages < 100 else IDLE_LOGINS
        )
        profile = recorder.stop(stack.processes.pop("chain-worker")).summary()
    out = chain_figures(record, calls, sent, bench_api)
    # the same calls made back to back by a bare client: 40 ms + the simulator building
    # a 1,000-id page + a client round trip, on this machine at this moment
    out["direct_call_ms_median"] = round(direct_ms, 2)
    out["ratio_vs_direct_client"] = round(
        out["trigger_to_last_page_s"] / (len(calls) * direct_ms / 1000), 3
    )
    out["netsync_per_hop_ms_beyond_direct_client"] = round(
        out["hop_gap_ms"]["p50"] - (direct_ms - LATENCY_MS), 2
    )
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return {**out, "profile": profile, "trigger_latency_idle": idle}


def direct_call_ms(stack: DevStack, account: dict, calls: int = 21) -> float:
    """Median time of one page call from a bare ``requests`` session (keep-alive)."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {account['token']}"
    url = f"{stack.simulator_url}/twitter/2/users/{account['id']}/followers"
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        http.get(url, params={"max_results": PAGE_SIZE}, timeout=10).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def chain_figures(record: dict, calls: list[dict], sent: float, bench_api) -> dict:
    latency = LATENCY_MS / 1000
    created = bench_api.epoch(record["created_at"])
    finished = bench_api.epoch(record["finished_at"])
    total = finished - created
    # netsync's part of a hop: from the provider's answer (arrival + 40 ms) to the next arrival
    gaps = [(b["t"] - a["t"] - latency) * 1000 for a, b in zip(calls, calls[1:])]
    return {
        "calls": len(calls),
        "latency_ms": LATENCY_MS,
        "trigger_to_last_page_s": round(total, 3),
        "ideal_s": round(len(calls) * latency, 3),
        "ratio": round(total / (len(calls) * latency), 3),
        "per_hop_overhead_ms": round((total - len(calls) * latency) / len(calls) * 1000, 2),
        "hop_gap_ms": {
            "p50": round(percentile(gaps, 50), 2),
            "p95": round(percentile(gaps, 95), 2),
            "p99": round(percentile(gaps, 99), 2),
            "mean": round(statistics.fmean(gaps), 2),
        },
        "where": {  # the sync's wall time, split
            "webhook_to_first_call_ms": round((calls[0]["t"] - sent) * 1000, 1),
            "record_created_to_first_call_ms": round((calls[0]["t"] - created) * 1000, 1),
            "provider_ms": round(len(calls) * LATENCY_MS, 1),
            "between_calls_ms": round(sum(gaps), 1),
            "last_answer_to_finished_ms": round((finished - calls[-1]["t"] - latency) * 1000, 1),
        },
        "hop_gaps_ms": [round(g, 2) for g in gaps],
        "goal": "ratio <= 1.10 (<= 4 ms of netsync per hop)",
    }


def idle_trigger_latency(stack: DevStack, bench_api, logins: int = IDLE_LOGINS) -> dict:
    """Webhook sent -> the simulator receives the sync's first call, one login at a time."""
    samples = []
    for i in range(logins):
        account = {
            "provider": "twitter",
            "id": str(3_000_000 + i),
            "size": 50,
            "token": f"tok-idle-{i}",
        }
        bench_api.add_account(stack, account)
        sent = time.time()
        sync_id = bench_api.login(stack, f"idle-user-{i}", account)
        bench_api.wait_final(stack, sync_id, timeout=60, poll=0.01)
        first = calls_of(stack, "twitter", account["token"])[0]["t"]
        samples.append((first - sent) * 1000)
        time.sleep(0.1)
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), 1),
        "p99_ms": round(percentile(samples, 99), 1),
        "max_ms": round(max(samples), 1),
        "samples_ms": [round(s, 1) for s in samples],
    }


def main(quick: bool = False) -> dict:
    from bench import api as bench_api

    pages = 30 if quick else 200
    print(
        f"chain benchmark: twitter account of {pages * PAGE_SIZE:,} ({pages} chained pages), "
        f"provider answers in {LATENCY_MS:g} ms ...",
        flush=True,
    )
    out = run_chain(pages, bench_api)
    idle = out["trigger_latency_idle"]
    print(
        f"  ratio {out['ratio']} ({out['per_hop_overhead_ms']} ms of netsync per hop; gap p50 "
        f"{out['hop_gap_ms']['p50']} ms); largest cost: {profiling.describe(out['profile'])}",
        flush=True,
    )
    print(
        f"  trigger latency at idle: p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms", flush=True
    )
    return out
