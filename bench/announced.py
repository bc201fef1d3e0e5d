"""Limits the providers announce, and spend (issue 17): ``python -m bench --only announced``.

Each case runs on its own stack (embedded Redis, the simulator, the web app,
2 prefork workers × 2 processes, the scheduler), judged by the simulator's
own records:

- **GitHub, announced only**: the simulator allows 10 (then 100) calls per
  5 s per token, and 100 per 60 s, and says so only in ``x-ratelimit-*``;
  netsync keeps the real default (5,000 an hour). Beside it the **configured** case: the same limit,
  and ``QUOTA_GITHUB=<limit>/5/token`` (its window is what the headers do not
  state). Figures: 429s (goal 0) and sync time ÷ the limit's bound (pages ÷
  rate; goal ≤ 1.05), as ``bench.quota`` measures them.
- **Mastodon's paging throttle, announced only**: 30,000 followers (375
  pages chained on ``rel="next"``, 374 of them paging calls) against the
  paging rule alone, scaled from 300 per 15 min to 300 per 15 s (aligned
  windows, as Mastodon's); netsync knows the documented 300 per 15 min.
  Figures: 429s (goal 0), and the share of the paging budget used in the
  windows that held the sync back (goal ≥ 90 %).
- **Spend**: X at its documented $0.010 per follower, ``BUDGET_TWITTER=5/day``,
  a 2,000-follower account: what the simulator billed (its ``usage``: resources
  × price; goal ≤ $5.00), and the sync waiting (``running``, ``waiting_for:
  spend_budget`` until the next UTC day) rather than failing.

Results: ``bench/results/announced.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from bench import quota
from devtools.devstack import DevStack, temp_var_dir
from simulator.providers import sample_account_id

RESULTS = Path(__file__).parent / "results"
MASTODON_PAGE = 80


def github_stack(case: quota.Case, configured: bool) -> DevStack:
    rule = {"limit": case.limit, "window_s": case.window_s, "scope": "token"}
    env = dict(quota.ENV)
    if configured:
        env["QUOTA_GITHUB"] = f"{case.limit}/{case.window_s:g}/token"
    return DevStack(
        var_dir=temp_var_dir("netsync-bench-announced-"),
        workers=quota.workers(),
        scenario={"rate_limits": {"github": [rule]}},
        env=env,
    )


def github_case(bench_api, case: quota.Case, configured: bool) -> dict:
    label = "configured" if configured else "announced only"
    print(
        f"announced benchmark: github {case.name} per token, {label}, whale of "
        f"{case.size:,} ({case.pages} pages, {case.pages / case.rate:g} s allowed) ...",
        flush=True,
    )
    with github_stack(case, configured) as stack:
        quota.warm_up(stack, bench_api, "gh")
        run = quota.run_published(stack, bench_api, 0, case)
    run.pop("quota_use_over_time", None)
    out = {"limit": case.name, "size": case.size, "pages": case.pages, "netsync": label, **run}
    print(
        f"  github {case.name} {label}: ratio {run['ratio']}, 429s {run['http_429']}, "
        f"peak {run['peak_per_window']}/{case.limit}",
        flush=True,
    )
    return out


# -- Mastodon: the paging throttle -------------------------------------------------------------
def mastodon_stack(limit: int, window_s: float) -> DevStack:
    rule = {"limit": limit, "window_s": window_s, "scope": "user", "applies_to": "paging"}
    return DevStack(
        var_dir=temp_var_dir("netsync-bench-masto-"),
        workers=quota.workers(),
        scenario={"rate_limits": {"mastodon": [rule]}},
        env=dict(quota.ENV),
    )


def paging_windows(pages: list[dict], window_s: float) -> list[dict]:
    """Paging calls per aligned window (the first page asks without ``max_id``: not paging),
    and whether the sync waited for the window's end (more than a second between the
    window's last call and the next one)."""
    paging = pages[1:]
    windows: dict[int, list[float]] = {}
    for call in paging:
        windows.setdefault(int(call["t"] // window_s), []).append(call["t"])
    out = []
    numbers = sorted(windows)
    for i, number in enumerate(numbers):
        times = windows[number]
        after = windows[numbers[i + 1]][0] if i + 1 < len(numbers) else None
        waited = after is not None and after - times[-1] > 1.0
        out.append({"window": number, "paging_calls": len(times), "held_back": waited})
    return out


def mastodon_case(bench_api, size: int, limit: int = 300, window_s: float = 15.0) -> dict:
    print(
        f"announced benchmark: mastodon {size:,} followers, paging throttle {limit} per "
        f"{window_s:g} s announced only ...",
        flush=True,
    )
    with mastodon_stack(limit, window_s) as stack:
        account = {
            "provider": "mastodon",
            "id": sample_account_id("mastodon", f"masto-{time.time_ns()}"),
            "size": size,
            "token": f"tok-masto-{time.time_ns()}",
        }
        bench_api.add_account(stack, account)
        sync_id = bench_api.login(stack, "bench-masto", account)
        record = bench_api.wait_final(stack, sync_id, timeout=900)
        assert record["status"] == "succeeded", record
        assert record["connections_fetched"] == size, record
        calls = calls_of(stack, "mastodon", account["token"])
        stats = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=10).json()
    pages = [c for c in calls if c["kind"] == "page"]
    windows = paging_windows(pages, window_s)
    held = [w for w in windows if w["held_back"]]
    (rule,) = [r for r in stats["rate_limits"] if r["provider"] == "mastodon"]
    out = {
        "size": size,
        "rule": f"{limit} paging calls per {window_s:g} s per user (scaled from 15 min)",
        "seconds": round(bench_api.seconds(record["created_at"], record["finished_at"]), 2),
        "pages": len(pages),
        "paging_calls": len(pages) - 1,
        "http_429": sum(1 for c in calls if c["rate_limited"]),
        "rule_rejected": rule["rejected"],
        "per_window": [w["paging_calls"] for w in windows],
        "windows_held_back": len(held),
        "paging_budget_used_when_held_back": (
            round(sum(w["paging_calls"] for w in held) / (limit * len(held)), 3) if held else None
        ),
    }
    print(
        f"  mastodon: 429s {out['http_429']}, paging calls per window {out['per_window']}, "
        f"budget used where held back {out['paging_budget_used_when_held_back']}",
        flush=True,
    )
    return out


def calls_of(stack: DevStack, provider: str, token: str) -> list[dict]:
    response = requests.get(
        f"{stack.simulator_url}/_sim/calls",
        params={"provider": provider, "token": token},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["calls"]


# -- spend: X at $0.010 per follower under a daily budget ------------------------------------
def spend_case(bench_api, size: int = 2_000, budget: float = 5.0) -> dict:
    print(
        f"announced benchmark: x {size:,} followers at $0.010 each, BUDGET_TWITTER="
        f"{budget:g}/day ...",
        flush=True,
    )
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-spend-"),
        workers=quota.workers(),
        env={**quota.ENV, "BUDGET_TWITTER": f"{budget:g}/day"},
    )
    with stack:
        account = {
            "provider": "twitter",
            "id": sample_account_id("twitter", f"spend-{time.time_ns()}"),
            "size": size,
            "token": f"tok-spend-{time.time_ns()}",
        }
        bench_api.add_account(stack, account)
        started = time.monotonic()
        sync_id = bench_api.login(stack, "bench-spend", account)
        record = wait_parked_for_budget(stack, bench_api, sync_id)
        parked_after = time.monotonic() - started
        time.sleep(3)  # nothing more is billed while it waits
        record = bench_api.sync(stack, sync_id)
        usage = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=10).json()["usage"]
    billed = usage.get("twitter", {})
    out = {
        "size": size,
        "budget_usd": budget,
        "billed_resources": billed.get("resources", 0),
        "billed_usd": round(billed.get("resources", 0) * 0.010, 6),
        "calls": billed.get("calls", 0),
        "status": record["status"],
        "waiting_for": record["waiting_for"],
        "waiting_until": (record.get("waiting") or {}).get("until"),
        "connections_fetched": record["connections_fetched"],
        "cost": record["cost"],
        "seconds_to_wait": round(parked_after, 2),
    }
    print(
        f"  spend: billed ${out['billed_usd']:.2f} of ${budget:.2f} ({out['billed_resources']} "
        f"resources), sync {out['status']}, waiting for {out['waiting_for']} until "
        f"{out['waiting_until']}",
        flush=True,
    )
    return out


def wait_parked_for_budget(stack, bench_api, sync_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = bench_api.sync(stack, sync_id)
        until = (record.get("waiting") or {}).get("until") or ""
        far = until > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 120))
        if record["waiting_for"] == "spend_budget" and far:
            return record
        if record["status"] not in ("queued", "running"):
            return record
        time.sleep(0.1)
    raise TimeoutError(f"sync {sync_id} never waited for its budget")


def main(quick: bool = False) -> dict:
    from bench import api as bench_api

    slow = quota.Case(limit=10, window_s=5.0, size=1_000 if quick else 4_000)
    fast = quota.Case(limit=100, window_s=5.0, size=20_000 if quick else 50_000)
    github = [
        github_case(bench_api, case, configured)
        for case in (slow, fast)
        for configured in (False, True)
    ]
    if not quick:  # the same limit per minute: the per-window cost, at a twelfth of the share
        github.append(github_case(bench_api, quota.Case(100, 60.0, 50_000), False))
    out = {
        "scenario": "limits announced only in the provider's headers, and spend; "
        "2 prefork workers x 2",
        "machine": "2 cores; simulator, Redis, web, scheduler and workers share them",
        "goals": {
            "github": "zero 429s, sync ÷ the limit's bound <= 1.05",
            "mastodon": "zero 429s, >= 90 % of the paging budget used where it held the sync back",
            "spend": "billed <= budget; the sync waits (running, spend_budget), not failed",
        },
        "github": github,
        "mastodon": mastodon_case(bench_api, 6_000 if quick else 30_000),
        "spend": spend_case(bench_api),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "announced.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
