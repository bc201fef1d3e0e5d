"""The pipeline figure on a Redis Cluster of three masters, beside one Redis, in one run.

Three stacks, each as the pipeline figure's (``bench.pipeline``: one prefork
page worker ``-c 2`` on ``normal,whale``, the web app, the scheduler, the
simulator; a GitHub account with no latency and no rate limit), up at once:

- ``redis``: one Redis for the state and as the broker (the pipeline figure's set-up);
- ``redis+rabbitmq``: one Redis for the state, RabbitMQ as the broker;
- ``cluster+rabbitmq``: the state on an embedded Redis Cluster of three
  masters (``REDIS_CLUSTER=1``, redis-py's cluster client), RabbitMQ as the broker.

A cluster needs a broker other than Redis, so the cluster's cost is
``cluster+rabbitmq`` against ``redis+rabbitmq`` (same broker); ``redis`` is
the figure as ``make bench`` quotes it. The syncs alternate between the
stacks (A B C A B C …), so a load that drifts on this shared machine falls
on all three alike; the figure per set-up is the median of its runs. Beside
it, what one state round trip (an HGET) costs from Python through each
stack's client (``RedisCluster`` routes by slot in Python). On
RabbitMQ each stack has queues of its own (``DevStack(queue_region=...)``),
deleted when it stops. Without a reachable RabbitMQ (``TEST_AMQP_URL``) the
figure is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

from bench.pipeline import SIZE, run_pipeline
from devtools.devstack import DevStack, WorkerSpec, temp_var_dir
from tests.integration.brokers import AMQP_URL, rabbitmq_reachable

RUNS = 5
#: single-key round trips timed per batch, and batches, for the client's own cost
RTT_CALLS, RTT_BATCHES = 1000, 5
RESULTS = Path(__file__).parent / "results" / "cluster.json"
SETUPS = ("redis", "redis+rabbitmq", "cluster+rabbitmq")


def make_stack(setup: str) -> DevStack:
    options: dict = {}
    env: dict = {}
    if setup != "redis":
        env["CELERY_BROKER_URL"] = AMQP_URL
        options["queue_region"] = "b" + secrets.token_hex(4)
    if setup == "cluster+rabbitmq":
        options["redis_cluster"] = True
    # embedded_redis: a Redis of the stack's own, also its broker unless CELERY_BROKER_URL is given
    return DevStack(
        var_dir=temp_var_dir(f"netsync-bench-{setup.replace('+', '-')}-"),
        scheduler=True,
        embedded_redis=True,
        env=env,
        workers=[WorkerSpec("normal,whale", pool="prefork", concurrency=2, name="pages")],
        **options,
    )


def round_trip_us(client) -> float:
    """Median µs of one HGET through this client (a key of one tag), over RTT_BATCHES batches:
    what one state round trip costs from Python, cluster routing included."""
    key = "netsync:{bench}:rtt"
    client.hset(key, "f", "1")
    batches = []
    for _ in range(RTT_BATCHES):
        started = time.perf_counter()
        for _ in range(RTT_CALLS):
            client.hget(key, "f")
        batches.append((time.perf_counter() - started) / RTT_CALLS * 1e6)
    client.delete(key)
    return round(statistics.median(batches), 1)


def main(runs: int = RUNS, size: int = SIZE) -> dict:
    from bench import api as bench_api

    if not rabbitmq_reachable():
        out = {
            "skipped": f"RabbitMQ not reachable at {AMQP_URL}: a Redis Cluster needs it "
            "as the broker (set TEST_AMQP_URL)"
        }
        print(f"  skipped: {out['skipped']}", flush=True)
        return out
    print(
        f"cluster benchmark: {', '.join(SETUPS)}; {size:,} followers, {runs} run(s) each, "
        "alternating ...",
        flush=True,
    )
    results = {setup: [] for setup in SETUPS}
    with ExitStack() as stacks:
        running = {}
        for setup in SETUPS:
            stack = make_stack(setup)
            stacks.enter_context(stack)
            running[setup] = stack
        for index in range(runs):
            for setup in SETUPS:
                run = run_pipeline(running[setup], bench_api, index, size)
                results[setup].append(run)
                print(
                    f"  run {index + 1} {setup}: {run['pages_per_s']:.1f} pages/s "
                    f"({run['seconds']:.1f} s)",
                    flush=True,
                )
        rtt = {setup: round_trip_us(stack.redis_client()) for setup, stack in running.items()}
    figures = {}
    for setup, rows in results.items():
        figures[setup] = {
            "pages_per_s_median": round(statistics.median(r["pages_per_s"] for r in rows), 1),
            "connections_per_s_median": round(
                statistics.median(r["connections_per_s"] for r in rows)
            ),
            "runs": [
                {
                    "pages_per_s": round(r["pages_per_s"], 1),
                    "seconds": round(r["seconds"], 2),
                    "pages": r["pages"],
                }
                for r in rows
            ],
            "state_round_trip_us": rtt[setup],
        }
    ratio = round(
        figures["cluster+rabbitmq"]["pages_per_s_median"]
        / figures["redis+rabbitmq"]["pages_per_s_median"],
        3,
    )
    out = {
        "scenario": f"github account of {size:,} followers, no latency, no rate limit; one "
        "prefork page worker -c 2 per stack; three stacks up at once, syncs "
        "alternating between them",
        "machine": f"{os.cpu_count()} cores shared by every process of the three stacks "
        "(and whatever else runs on the machine)",
        "runs_per_setup": runs,
        "setups": figures,
        "cluster_vs_one_redis_same_broker": ratio,
    }
    print(
        "  pages/s: "
        + ", ".join(
            f"{s} {f['pages_per_s_median']} (one state round trip {f['state_round_trip_us']} µs)"
            for s, f in figures.items()
        )
        + f"; cluster ÷ one Redis (both RabbitMQ) {ratio}",
        flush=True,
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
