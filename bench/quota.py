"""Quota benchmark: GitHub whales under a per-token rate limit.

``main`` runs the published case at 10 calls per 5 s (a 4,000-follower
whale, 40 pages) and at 100 per 5 s (50,000 followers, 500 pages), and the
unpublished (adaptive) case at 100 per 5 s; ``Case`` holds a limit and a size.
Each case runs on its own stack (embedded Redis, the simulator, the web
app, 2 prefork workers × 2 processes, the scheduler):

- **published**: the simulator enforces the limit per token and says so in
  ``X-RateLimit-*`` headers; netsync's quota is configured to match
  (``QUOTA_GITHUB=100/5/token``). Figures: sync time ÷ (pages ÷ rate), the
  utilization of the limit over the sync, the simulator's 429s and its
  observed peak per 5 s.
- **unpublished**: the simulator enforces the same 100 per 5 s but announces
  nothing (``"publish": false``: no headers, a rejection says only
  ``Retry-After``); netsync only knows a ceiling twice as high
  (``QUOTA_GITHUB=200/5/token/adaptive``) and must learn the rate. Figures:
  utilization and rejected share of a cold start (the whole sync, ramp
  included; and after warm-up = the windows after the first rejection) and of
  a warm re-sync of the same token (what was learned is kept in Redis).

Utilization: admitted calls ÷ (the limit's rate × time). For the published
case the time is the whole sync (created → finished). For the unpublished
one it is also given over the provider's fixed windows rebuilt from the
simulator's call log (a window opens at the first call after the previous
one closed), from the opening of the first window measured to the opening
of the last one, which is left out as the sync's tail (too little work left
to fill it); waits between windows count as unused. Each case runs ``RUNS``
times (one stack per case, warmed up by a small sync); the summary gives
medians and the runs.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis
import requests

from devtools.devstack import DevStack, WorkerSpec, temp_var_dir
from service.config import DEV_API_TOKEN
from state.credentials import Credential

RUNS = 3


@dataclass(frozen=True)
class Case:
    """A whale of ``size`` followers under ``limit`` calls per ``window_s`` per token."""

    limit: int = 100
    window_s: float = 5.0
    size: int = 50_000

    @property
    def pages(self) -> int:
        return self.size // 100

    @property
    def rate(self) -> float:  # calls per second the limit allows
        return self.limit / self.window_s

    @property
    def ceiling(self) -> int:  # what netsync is told about the unpublished limit
        return 2 * self.limit

    @property
    def name(self) -> str:
        return f"{self.limit}/{self.window_s:g}s"


DEFAULT = Case()
RESULTS = Path(__file__).parent / "results"
ENV = {"WHALE_THRESHOLD": "10000", "NETSYNC_ENV": "test", "BROKER_VISIBILITY_TIMEOUT": "60"}


def workers() -> list[WorkerSpec]:
    return [
        WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=2, name=f"q{i}")
        for i in range(2)
    ]


def stack_for(published: bool, case: Case = DEFAULT) -> DevStack:
    rule = {"limit": case.limit, "window_s": case.window_s, "scope": "token"}
    quota = (
        f"{case.limit}/{case.window_s:g}/token"
        if published
        else f"{case.ceiling}/{case.window_s:g}/token/adaptive"
    )
    if not published:
        rule["publish"] = False
    return DevStack(
        var_dir=temp_var_dir("netsync-bench-quota-"),
        workers=workers(),
        scenario={"rate_limits": {"github": rule}},
        env={**ENV, "QUOTA_GITHUB": quota},
    )


def calls_of(stack: DevStack, token: str) -> list[dict]:
    response = requests.get(
        f"{stack.simulator_url}/_sim/calls",
        params={"provider": "github", "token": token},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["calls"]


def peak_of(stack: DevStack, token: str) -> int:
    stats = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=10).json()
    for rule in stats["rate_limits"]:
        if rule["provider"] == "github" and token in rule["by_key"]:
            return rule["by_key"][token]["peak"]
    return 0


def sync_whale(stack: DevStack, bench_api, user: str, account: dict) -> dict:
    sync_id = bench_api.login(stack, user, account)
    record = bench_api.wait_final(stack, sync_id, timeout=600)
    assert record["status"] == "succeeded", record
    assert record["connections_fetched"] == account["size"], record
    return record


def provider_windows(calls: list[dict], window_s: float) -> list[dict]:
    """The simulator's fixed windows, rebuilt from its call log.

    As the simulator counts them: a window opens at the first call after the
    previous one closed and lasts ``window_s``.
    """
    windows: list[dict] = []
    for call in calls:
        if not windows or call["t"] >= windows[-1]["start"] + window_s:
            windows.append({"start": call["t"], "admitted": 0, "rejected": 0})
        windows[-1]["rejected" if call["rate_limited"] else "admitted"] += 1
    return windows


def window_figures(windows: list[dict], rate: float) -> dict | None:
    """Utilization and rejected share over whole windows, the last (the sync's tail) left out.

    Utilization = calls admitted ÷ (the limit's rate × the time from the first
    window's opening to the last one's): waits between windows count as unused.
    """
    if len(windows) < 2:
        return None
    measured, end = windows[:-1], windows[-1]["start"]
    admitted = sum(w["admitted"] for w in measured)
    rejected = sum(w["rejected"] for w in measured)
    seconds = end - measured[0]["start"]
    return {
        "windows": len(measured),
        "admitted": admitted,
        "rejected": rejected,
        "rejected_share": round(rejected / max(1, admitted + rejected), 4),
        "seconds": round(seconds, 2),
        "utilization": round(admitted / (rate * seconds), 3),
        "per_window": [w["admitted"] for w in measured],
    }


def after_warm_up(windows: list[dict], rate: float) -> dict | None:
    """``window_figures`` from the window after the first rejection (the end of the ramp)."""
    first = next((i for i, w in enumerate(windows) if w["rejected"]), None)
    return window_figures(windows[first + 1 :], rate) if first is not None else None


def warm_up(stack: DevStack, bench_api, name: str) -> None:
    """One small sync first, so that worker start-up is not timed as quota waiting."""
    account = {
        "provider": "github",
        "id": f"warm-{name}",
        "size": 250,
        "token": f"tok-warm-{name}-{time.time_ns()}",
    }
    bench_api.add_account(stack, account)
    record = bench_api.wait_final(
        stack, bench_api.login(stack, f"bench-warm-{name}", account), timeout=120
    )
    assert record["status"] == "succeeded", record


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def learned_window_ends(stack: DevStack, token: str) -> bool:
    """Whether the gate learned a provider window's end from the answer that opened it.

    (``QuotaGate.observe`` with ``remaining == limit - 1``; when callers skip
    that answer, each window waits for the reset's whole second plus skew.)
    """
    client = redis.Redis.from_url(stack.redis_url)
    key = (
        f"{stack.base_env.get('NETSYNC_KEY_PREFIX', 'netsync')}:quota:{{github:token:"
        f"{Credential('-', token).fingerprint()}}}"
    )
    return client.hexists(key, "opened")


def run_published(stack: DevStack, bench_api, index: int, case: Case = DEFAULT) -> dict:
    account = {
        "provider": "github",
        "id": f"whale-pub-{index}",
        "size": case.size,
        "token": f"tok-pub-{index}-{time.time_ns()}",
    }
    bench_api.add_account(stack, account)
    record = sync_whale(stack, bench_api, f"bench-pub-{index}", account)
    seconds = bench_api.seconds(record["created_at"], record["finished_at"])
    calls = calls_of(stack, account["token"])
    admitted = sum(1 for c in calls if not c["rate_limited"])
    ideal = case.pages / case.rate
    return {
        "seconds": round(seconds, 2),
        "ideal_s": ideal,
        "ratio": round(seconds / ideal, 3),
        # where the time went: before the first call, the calls, after the last
        "created_to_first_call_s": round(calls[0]["t"] - epoch(record["created_at"]), 3),
        "first_to_last_call_s": round(calls[-1]["t"] - calls[0]["t"], 3),
        "last_call_to_finished_s": round(epoch(record["finished_at"]) - calls[-1]["t"], 3),
        "calls": len(calls),
        "http_429": sum(1 for c in calls if c["rate_limited"]),
        "peak_per_window": peak_of(stack, account["token"]),
        "utilization": round(admitted / (case.rate * seconds), 3),
        "quota_use_over_time": [
            [round(c["t"] - calls[0]["t"], 3), c["rate_limited"]] for c in calls
        ],
        "window_end_learned_from_opening_answer": learned_window_ends(stack, account["token"]),
    }


def run_unpublished(stack: DevStack, bench_api, index: int, case: Case = DEFAULT) -> dict:
    account = {
        "provider": "github",
        "id": f"whale-hid-{index}",
        "size": case.size,
        "token": f"tok-hid-{index}-{time.time_ns()}",
    }
    bench_api.add_account(stack, account)
    user = f"bench-hid-{index}"
    cold = sync_whale(stack, bench_api, user, account)
    cold_calls = calls_of(stack, account["token"])
    # the whale again, same token: what the adaptive bucket learned is kept in Redis
    response = requests.post(
        f"{stack.web_url}/v1/syncs",
        timeout=30,
        headers={"Authorization": f"Bearer {DEV_API_TOKEN}"},
        json={"user_id": user, "provider": "github", "force": True},
    )
    assert response.status_code == 202, response.text
    warm = bench_api.wait_final(stack, response.json()["sync_id"], timeout=600)
    assert warm["status"] == "succeeded" and warm["connections_fetched"] == case.size, warm
    warm_calls = [c for c in calls_of(stack, account["token"]) if c["seq"] > cold_calls[-1]["seq"]]
    out = {}
    for name, record, calls in (("cold", cold, cold_calls), ("warm", warm, warm_calls)):
        seconds = bench_api.seconds(record["created_at"], record["finished_at"])
        admitted = sum(1 for c in calls if not c["rate_limited"])
        windows = provider_windows(calls, case.window_s)
        out[name] = {
            "seconds": round(seconds, 2),
            "calls": len(calls),
            "rejected": len(calls) - admitted,
            "rejected_share": round((len(calls) - admitted) / len(calls), 4),
            # the whole sync, ramp and tail included
            "utilization_of_sync": round(admitted / (case.rate * seconds), 3),
            "windows": window_figures(windows, case.rate),
        }
        if name == "cold":
            out[name]["after_warm_up"] = after_warm_up(windows, case.rate)
    return out


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def published_case(bench_api, case: Case, runs: int) -> dict:
    print(
        f"quota benchmark: published {case.name}, github whale of {case.size:,} "
        f"({case.pages} pages, {case.pages / case.rate:g} s allowed), {runs} run(s) ...",
        flush=True,
    )
    with stack_for(published=True, case=case) as stack:
        warm_up(stack, bench_api, "pub")
        published = [run_published(stack, bench_api, i, case) for i in range(runs)]
    pub = {
        "limit": case.name,
        "size": case.size,
        "pages": case.pages,
        "runs": published,
        "ratio_median": median(r["ratio"] for r in published),
        "utilization_median": median(r["utilization"] for r in published),
        "http_429_total": sum(r["http_429"] for r in published),
        "peak_max": max(r["peak_per_window"] for r in published),
        "window_end_learned_from_opening_answer": all(
            r["window_end_learned_from_opening_answer"] for r in published
        ),
    }
    print(
        f"  published {case.name}: ratio {pub['ratio_median']} (runs "
        f"{[r['ratio'] for r in published]}), utilization {pub['utilization_median']}, "
        f"429s {pub['http_429_total']}, peak {pub['peak_max']}/{case.limit}",
        flush=True,
    )
    return pub


def adaptive_case(bench_api, case: Case, runs: int) -> dict:
    print(
        f"quota benchmark: unpublished {case.name} (netsync told {case.ceiling}, adaptive), "
        f"whale of {case.size:,}, cold + warm, {runs} run(s) ...",
        flush=True,
    )
    with stack_for(published=False, case=case) as stack:
        warm_up(stack, bench_api, "hidden")
        hidden = [run_unpublished(stack, bench_api, i, case) for i in range(runs)]
    parts = {
        "cold_whole_sync": [
            (r["cold"]["utilization_of_sync"], r["cold"]["rejected_share"]) for r in hidden
        ],
        "cold_after_warm_up": [
            (
                r["cold"]["after_warm_up"]["utilization"],
                r["cold"]["after_warm_up"]["rejected_share"],
            )
            for r in hidden
            if r["cold"]["after_warm_up"]
        ],
        "warm_resync": [
            (r["warm"]["windows"]["utilization"], r["warm"]["windows"]["rejected_share"])
            for r in hidden
            if r["warm"]["windows"]
        ],
    }
    unpub = {"limit": case.name, "size": case.size, "runs": hidden}
    for part, figures in parts.items():
        unpub[part] = {
            "utilization_median": median(u for u, _ in figures),
            "rejected_share_median": median(x for _, x in figures),
            "utilization_runs": [u for u, _ in figures],
            "rejected_share_runs": [x for _, x in figures],
        }
        print(
            f"  unpublished {part.replace('_', ' ')}: utilization "
            f"{unpub[part]['utilization_median']} (runs {unpub[part]['utilization_runs']}), "
            f"rejected {unpub[part]['rejected_share_median']}",
            flush=True,
        )
    return unpub


def main(runs: int = RUNS, quick: bool = False) -> dict:
    from bench import api as bench_api

    slow = Case(limit=10, window_s=5.0, size=1_000 if quick else 4_000)
    fast = Case(limit=100, window_s=5.0, size=20_000 if quick else 50_000)
    published = [published_case(bench_api, slow, runs), published_case(bench_api, fast, runs)]
    unpub = adaptive_case(bench_api, Case(size=30_000) if quick else DEFAULT, runs)
    out = {
        "scenario": "github whales under a per-token limit; 2 prefork workers x 2",
        "machine": "2 cores; simulator, Redis, web, scheduler and workers share them",
        "goals": {
            "published": "ratio <= 1.05, zero 429s",
            "unpublished": ">= 85% utilization, <= 2% rejected",
        },
        "published_cases": published,
        "published": published[-1],
        "unpublished": unpub,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quota.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
