"""Pipeline throughput: one 200,000-follower GitHub sync, no latency, no limit.

For each worker pool (prefork, threads, gevent) it measures, in one run:
- the pipeline: pages/s and connections/s of a real sync (webhook → profile →
  2,000 page tasks → stored network), median of RUNS;
- raw Celery: tasks/s of a no-op task on the same broker, pool and
  concurrency, publishing included as the pipeline publishes (one task
  sends the N no-ops, as a profile task sends a sync's pages), median of RUNS;
and reports pipeline pages/s ÷ raw tasks/s. ``make bench`` runs the prefork
pool (the fastest with no latency); ``python -m bench.pipeline`` all three.
``scaling`` gives pages/s with 1, 2 and 4 prefork page-worker processes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench import profiling
from devtools.devstack import DevStack, WorkerSpec, stop_process, temp_var_dir

SIZE = 200_000
RUNS = 3
NOOP_TASKS = 4_000
POOLS = [("prefork", 2), ("threads", 8), ("gevent", 32)]
RESULTS = Path(__file__).parent / "results"


def run_pipeline(stack, bench_api, index: int, size: int = SIZE) -> dict:
    account = {"provider": "github", "id": f"whale-{index}", "size": size, "token": f"tok-w{index}"}
    bench_api.add_account(stack, account)
    sync_id = bench_api.login(stack, f"bench-user-{index}", account)
    record = bench_api.wait_final(stack, sync_id, timeout=600)
    assert record["status"] == "succeeded", record
    seconds = bench_api.seconds(record["created_at"], record["finished_at"])
    return {
        "seconds": seconds,
        "pages": record["pages_fetched"],
        "pages_per_s": record["pages_fetched"] / seconds,
        "connections_per_s": record["connections_fetched"] / seconds,
    }


def run_noop(stack, pool: str, concurrency: int) -> float:
    """Raw Celery: a worker runs one task that publishes NOOP_TASKS no-ops (as a profile task
    publishes a sync's pages) and then the no-ops; tasks/s from the send to the last ack."""
    env = stack.base_env
    client = redis.Redis.from_url(stack.redis_url)
    lists = ["noopq"] + [f"noopq:{step}" for step in range(1, 10)]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.noop_app",
            "worker",
            "-Q",
            "noopq",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            "noop@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        env=env,
        cwd=env["PYTHONPATH"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        send = (
            "import sys\nfrom bench.noop_app import app\n"
            "replies = []\n"
            "while not replies: replies = app.control.ping(timeout=0.5)\n"
            f"app.send_task('bench.fanout', args=[{NOOP_TASKS}], queue='noopq')\n"
        )
        subprocess.run(
            [sys.executable, "-c", send], env=env, check=True, cwd=env["PYTHONPATH"], timeout=120
        )
        started = time.monotonic()
        while sum(client.llen(name) for name in lists) + client.hlen("unacked"):
            time.sleep(0.005)
        return NOOP_TASKS / (time.monotonic() - started)
    finally:
        stop_process(worker)


def bench_pool(pool: str, concurrency: int, bench_api, runs: int = RUNS, size: int = SIZE) -> dict:
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-"),
        scheduler=True,
        workers=[WorkerSpec("normal,whale", pool=pool, concurrency=concurrency, name="pages")],
    )
    with stack:
        pipeline = [run_pipeline(stack, bench_api, i, size) for i in range(runs)]
        stop_process(stack.processes.pop("pages"))
        profile = profiled_run(stack, bench_api, pool, concurrency, size)
        # the no-op runs alone on the same machine
        raw = [run_noop(stack, pool, concurrency) for _ in range(runs)]
    pages = statistics.median(r["pages_per_s"] for r in pipeline)
    raw_median = statistics.median(raw)
    return {
        "pool": pool,
        "concurrency": concurrency,
        "pipeline_runs": pipeline,
        "pages_per_s_median": round(pages, 1),
        "connections_per_s_median": round(
            statistics.median(r["connections_per_s"] for r in pipeline)
        ),
        "raw_noop_tasks_per_s_runs": [round(r, 1) for r in raw],
        "raw_noop_tasks_per_s_median": round(raw_median, 1),
        "ratio": round(pages / raw_median, 3),
        "profile": profile,
    }


def profiled_run(stack, bench_api, pool: str, concurrency: int, size: int) -> dict:
    """One more sync (not among the timed runs) with py-spy sampling the page worker."""
    recorder = profiling.Recorder(f"pipeline-{pool}")
    stack.start_worker(
        WorkerSpec(
            "normal,whale",
            pool=pool,
            concurrency=concurrency,
            name="pages-profiled",
            wrap=recorder.wrap,
        )
    )
    stack.wait_workers_ready()
    run_pipeline(stack, bench_api, 99, size // 2)
    return recorder.stop(stack.processes.pop("pages-profiled")).summary()


def scaling(bench_api, processes=(1, 2, 4), size: int = 100_000) -> dict:
    """Pages/s of one sync with 1, 2, 4 prefork page-worker processes (one worker, -c N)."""
    rows = []
    for count in processes:
        stack = DevStack(
            var_dir=temp_var_dir("netsync-bench-scale-"),
            scheduler=True,
            workers=[WorkerSpec("normal,whale", pool="prefork", concurrency=count, name="pages")],
        )
        with stack:
            run = run_pipeline(stack, bench_api, 0, size)
        rows.append(
            {
                "processes": count,
                "pages_per_s": round(run["pages_per_s"], 1),
                "connections_per_s": round(run["connections_per_s"]),
                "seconds": round(run["seconds"], 2),
            }
        )
        print(
            f"  scaling: {count} page-worker process(es) -> {rows[-1]['pages_per_s']} pages/s",
            flush=True,
        )
    base = rows[0]["pages_per_s"]
    for row in rows:
        row["speed_up"] = round(row["pages_per_s"] / base, 2)
    return {
        "scenario": f"github account of {size:,} followers, no latency, no limit; prefork "
        "-c N on this 2-core machine (simulator, Redis and web share the cores)",
        "rows": rows,
    }


def main(pools=POOLS, runs: int = RUNS, size: int = SIZE) -> dict:
    from bench import api as bench_api

    results = []
    for pool, concurrency in pools:
        print(
            f"pipeline benchmark: pool={pool} concurrency={concurrency}, {size:,} followers, "
            f"{runs} run(s) ...",
            flush=True,
        )
        result = bench_pool(pool, concurrency, bench_api, runs, size)
        print(
            f"  pages/s {result['pages_per_s_median']}, connections/s "
            f"{result['connections_per_s_median']}, raw no-op tasks/s "
            f"{result['raw_noop_tasks_per_s_median']}, ratio {result['ratio']}; largest cost: "
            f"{profiling.describe(result['profile'])}",
            flush=True,
        )
        results.append(result)
    best = max(results, key=lambda r: r["pages_per_s_median"])
    out = {
        "scenario": f"github account of {size} followers, no latency, no rate limit",
        "runs_per_pool": runs,
        "machine": "2 cores; simulator, Redis and workers share them",
        "results": results,
        "best_pool": best["pool"],
        "goal": "ratio >= 0.6",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
