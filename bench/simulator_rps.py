"""How many GitHub follower pages per second the simulator serves.

Starts ``python -m simulator`` as a subprocess on a free port with one
200,000-follower GitHub account (no latency, a GitHub rate limit too large
to bite, so the quota path and its headers are exercised), then hammers
``/users/{login}/followers?per_page=100&page=N`` from concurrent aiohttp
clients for a fixed time. Reports the median requests/s over the runs and
writes ``bench/results/simulator.json``.

The load generator runs on the same machine and competes with the
simulator for its cores: the figure is a floor, not the simulator alone.

    python bench/simulator_rps.py [--duration 10] [--concurrency 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "simulator.json"
FOLLOWERS = 200_000
PAGE_SIZE = 100
TOKEN = "bench-token"
SCENARIO = {
    "latency_ms": {"mean": 0, "jitter": 0},
    "accounts": [{"provider": "github", "id": "whale", "size": FOLLOWERS, "token": TOKEN}],
    "rate_limits": {"github": {"limit": 1_000_000_000, "window_s": 3600, "scope": "token"}},
    "faults": [],
}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_simulator(scenario_path: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--scenario", scenario_path],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline().strip()
    if not line.startswith("simulator listening on "):
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return process, line.rsplit(" ", 1)[1]


async def hammer(base: str, concurrency: int, duration: float, max_requests: int | None) -> dict:
    """Concurrent clients fetching follower pages until time (or the request budget) runs out."""
    pages = FOLLOWERS // PAGE_SIZE
    counter = {"sent": 0, "ok": 0, "errors": 0, "bytes": 0}
    headers = {"Authorization": f"token {TOKEN}"}
    deadline = time.perf_counter() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline and (
            max_requests is None or counter["sent"] < max_requests
        ):
            page = counter["sent"] % pages + 1
            counter["sent"] += 1
            url = f"{base}/github/users/whale/followers?per_page={PAGE_SIZE}&page={page}"
            async with session.get(url, headers=headers) as response:
                body = await response.read()
                if response.status == 200:
                    counter["ok"] += 1
                    counter["bytes"] += len(body)
                else:
                    counter["errors"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": counter["ok"],
        "errors": counter["errors"],
        "seconds": round(elapsed, 3),
        "requests_per_second": round(counter["ok"] / elapsed, 1),
        "mean_body_bytes": counter["bytes"] // max(counter["ok"], 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--requests", type=int, default=None, help="stop a run after N requests")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(SCENARIO, fh)
    process, base = start_simulator(fh.name)
    try:
        asyncio.run(hammer(base, args.concurrency, 1.0, None))  # warm-up
        runs = []
        for _ in range(args.runs):
            cpu_before = cpu_seconds(process.pid)
            run = asyncio.run(hammer(base, args.concurrency, args.duration, args.requests))
            cpu_after = cpu_seconds(process.pid)
            if cpu_before is not None and cpu_after is not None and run["requests"]:
                # the simulator's own cost, whatever else shares the machine
                run["simulator_cpu_ms_per_request"] = round(
                    (cpu_after - cpu_before) * 1000 / (run["requests"] + run["errors"]), 3
                )
            runs.append(run)
    finally:
        process.terminate()
        process.wait(timeout=10)
        os.unlink(fh.name)

    median = statistics.median(r["requests_per_second"] for r in runs)
    cpu_costs = [
        r["simulator_cpu_ms_per_request"] for r in runs if "simulator_cpu_ms_per_request" in r
    ]
    cpu_ms = statistics.median(cpu_costs) if cpu_costs else None
    cores = os.cpu_count()
    result = {
        "requests_per_second_median": median,
        "runs": runs,
        "concurrency": args.concurrency,
        "page_size": PAGE_SIZE,
        "followers": FOLLOWERS,
        "simulator_cpu_ms_per_request_median": cpu_ms,
        "simulator_capacity_per_core_estimate": round(1000 / cpu_ms) if cpu_ms else None,
        "cpu_count": cores,
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": f"the aiohttp load generator shares the machine's {cores} cores with the "
        "simulator (one process each): the figure is a floor for the simulator alone",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    errors = sum(r["errors"] for r in runs)
    capacity = (
        f", {cpu_ms} ms simulator CPU per page (~{1000 / cpu_ms:.0f}/s per core)" if cpu_ms else ""
    )
    print(
        f"simulator: {median:.0f} GitHub follower pages/s median of {args.runs} runs "
        f"(per_page={PAGE_SIZE}, {args.concurrency} concurrent clients, {errors} errors; "
        f"load generator shares the {cores} cores{capacity}) -> {RESULTS.relative_to(ROOT)}"
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
