"""Memory: a page worker's peak RSS syncing a small and a huge network; bytes per connection in Redis.

One Facebook account of ``SMALL`` and one of ``LARGE`` friends (5,000 per
page, cursor-chained), each synced by a fresh page worker (the Procfile's
whale line: threads, 4 slots); the worker's resident set is sampled every
``SAMPLE_S`` from /proc while it syncs. Figures: peak RSS of each and the
growth (goal under 10 MB: a page task holds one page, never the network),
and the bytes Redis holds per stored connection (``MEMORY USAGE`` of the
live network's sorted set and id→handle hash, exact, ÷ connections).
The quota is set out of reach (memory is measured, not the limit).
"""

from __future__ import annotations

import os
import threading
import time

import redis

from bench import profiling
from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

SMALL, LARGE = 10_000, 1_000_000
SAMPLE_S = 0.1
UNBOUND_QUOTA = "1000000000/3600/token"
#: the simulator without Facebook's real app limit (200 calls an hour per user of the
#: app: a million friends are 200 pages): what is measured here is memory, not the quota
UNBOUND_SCENARIO = {"rate_limits": {"facebook": []}}


def rss_kib(pid: int) -> int:
    """Resident set of ``pid`` and its children, KiB (0 once gone)."""
    total = 0
    for proc in [pid] + _children(pid):
        try:
            with open(f"/proc/{proc}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self._stop_event = pid, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self._stop_event.wait(SAMPLE_S):
            self.samples.append((round(time.monotonic() - self.t0, 2), rss_kib(self.pid)))

    def stop(self) -> list:
        self._stop_event.set()
        self.join()
        return self.samples


def sync_one(size: int, bench_api, profile: bool) -> dict:
    recorder = profiling.Recorder(f"memory-{size}") if profile else None
    worker = WorkerSpec(
        "normal,whale",
        pool="threads",
        concurrency=4,
        name="page-worker",
        wrap=recorder.wrap if recorder else None,
    )
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-memory-"),
        workers=[worker],
        scenario=UNBOUND_SCENARIO,
        env={"LOG_LEVEL": "WARNING", "QUOTA_FACEBOOK": UNBOUND_QUOTA},
    )
    with stack:
        pid = stack.processes["page-worker"].pid
        account = {
            "provider": "facebook",
            "id": str(100_000_000_000_000 + size),
            "size": size,
            "token": f"tok-mem-{size}",
        }
        bench_api.add_account(stack, account)
        time.sleep(1.0)
        idle_kib = rss_kib(pid)
        sampler = RssSampler(pid)
        sampler.start()
        started = time.monotonic()
        record = bench_api.wait_final(
            stack, bench_api.login(stack, f"mem-{size}", account), timeout=900, poll=0.2
        )
        seconds = time.monotonic() - started
        samples = sampler.stop()
        assert record["status"] == "succeeded" and record["connections_fetched"] == size, record
        client = redis.Redis.from_url(stack.redis_url)
        base = f"netsync:{{facebook:mem-{size}}}"
        zset = client.memory_usage(f"{base}:network", samples=0) or 0
        handles = client.memory_usage(f"{base}:network_h", samples=0) or 0
        stored = client.zcard(f"{base}:network")
        out = {
            "connections": size,
            "pages": record["pages_fetched"],
            "seconds": round(seconds, 1),
            "idle_rss_mib": round(idle_kib / 1024, 1),
            "peak_rss_mib": round(max(k for _, k in samples) / 1024, 1) if samples else None,
            "rss_over_time_mib": [[t, round(k / 1024, 1)] for t, k in samples],
            "stored": stored,
            "redis_network_bytes": zset,
            "redis_handles_bytes": handles,
            "redis_bytes_per_connection": round((zset + handles) / max(1, stored), 1),
        }
        if recorder:
            out["profile"] = recorder.stop(stack.processes.pop("page-worker")).summary()
    return out


def main(quick: bool = False) -> dict:
    from bench import api as bench_api

    large = 200_000 if quick else LARGE
    print(
        f"memory benchmark: page worker RSS syncing {SMALL:,} vs {large:,} Facebook friends ...",
        flush=True,
    )
    small_run = sync_one(SMALL, bench_api, profile=False)
    large_run = sync_one(large, bench_api, profile=True)
    growth = round(large_run["peak_rss_mib"] - small_run["peak_rss_mib"], 1)
    out = {
        "small": small_run,
        "large": large_run,
        "peak_rss_growth_mib": growth,
        "goal": "growth under 10 MB",
        "profile": large_run.pop("profile", {}),
        "redis_bytes_per_connection": large_run["redis_bytes_per_connection"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(
        f"  peak RSS {small_run['peak_rss_mib']} MiB ({SMALL:,}) vs {large_run['peak_rss_mib']} "
        f"MiB ({large:,}): growth {growth} MiB; Redis {out['redis_bytes_per_connection']} bytes "
        f"per stored connection; {large:,} synced in {large_run['seconds']} s",
        flush=True,
    )
    return out
