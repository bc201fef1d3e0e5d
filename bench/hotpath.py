"""What each hot-path change buys, measured in one process, side by side in the same run.

The pipeline figure moves with the whole machine; the parts of a page
task's CPU that the hot-path changes touch are measured here directly, each
with and without the change, median of ``REPEATS`` rounds of ``N`` calls:

- decoding a provider's page body: ``json.loads`` (what ``requests``'
  ``Response.json`` does) vs ``orjson.loads`` (sync/http.py), for a GitHub
  page (100 follower objects) and a Twitter/X page (1,000 ids), the bodies
  the simulator serves;
- encoding the page's connections for the page-completion script:
  ``json.dumps`` vs ``orjson.dumps`` (state/lua.py, the scripts' arguments);
- one Redis round trip that returns a sync record (``HGETALL``, 20 fields):
  redis-py's pure-Python reply parser vs hiredis;
- serializing a page task's Celery message (kombu's JSON), for scale.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

REPEATS = 5


def per_call_us(fn, n: int) -> float:
    rounds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return round(statistics.median(rounds), 2)


def bodies() -> dict[str, bytes]:
    import requests

    from simulator.testing import run_simulator

    scenario = {
        "accounts": [
            {"provider": "github", "id": "hot", "size": 200, "token": "tok-hot"},
            {"provider": "twitter", "id": "2244994945", "size": 2000, "token": "tok-hot-x"},
        ]
    }
    with run_simulator(scenario) as sim:
        github = requests.get(
            sim.url("github", "/users/hot/followers"),
            params={"per_page": 100, "page": 1},
            headers={"Authorization": "token tok-hot"},
            timeout=10,
        ).content
        twitter = requests.get(
            sim.url("twitter", "/2/users/2244994945/followers"),
            params={"max_results": 1000},
            headers={"Authorization": "Bearer tok-hot-x"},
            timeout=10,
        ).content
    return {"github_page_100": github, "twitter_page_1000": twitter}


def decoding(raw: dict[str, bytes]) -> dict:
    import orjson

    out = {}
    for name, body in raw.items():
        n = 2000 if len(body) < 50_000 else 300
        text = body.decode()
        out[name] = {
            "bytes": len(body),
            "json_loads_us": per_call_us(lambda: json.loads(text), n),
            "orjson_loads_us": per_call_us(lambda: orjson.loads(body), n),
        }
        out[name]["saved_us"] = round(out[name]["json_loads_us"] - out[name]["orjson_loads_us"], 1)
    return out


def encoding() -> dict:
    import orjson

    out = {}
    for name, count in (("github_100", 100), ("twitter_1000", 1000)):
        flat = [part for i in range(count) for part in (str(10_000_000 + i), f"user{i}")]
        out[name] = {
            "json_dumps_us": per_call_us(lambda: json.dumps(flat, separators=(",", ":")), 1000),
            "orjson_dumps_us": per_call_us(lambda: orjson.dumps(flat), 1000),
        }
    return out


def redis_parsers() -> dict:
    import redis
    from redis._parsers import _HiredisParser, _RESP2Parser

    from devtools.devstack import temp_var_dir
    from state.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(temp_var_dir("netsync-hot-") / "redis", persist=False)
    url = server.start()
    try:
        out = {}
        for name, parser in (("python_parser", _RESP2Parser), ("hiredis", _HiredisParser)):
            pool = redis.ConnectionPool.from_url(url, parser_class=parser)
            client = redis.Redis(connection_pool=pool)
            client.hset("rec", mapping={f"field{i}": f"value-{i}-" + "x" * 20 for i in range(20)})
            out[f"{name}_hgetall_us"] = per_call_us(lambda: client.hgetall("rec"), 2000)
            pool.disconnect()
        out["saved_us"] = round(out["python_parser_hgetall_us"] - out["hiredis_hgetall_us"], 1)
        return out
    finally:
        server.stop()


def message() -> dict:
    from kombu.serialization import dumps

    body = (
        [f"s_{'a' * 24}", "https://api.example/users/x/followers?per_page=100&page=17"],
        {"attempt": 0, "waits": 0, "refreshed": 0, "restarts": 0},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    return {"kombu_json_task_body_us": per_call_us(lambda: dumps(body, "json"), 5000)}


def main(quick: bool = False, ab: bool = True) -> dict:
    print("hot-path parts: decode, encode, Redis parser, message (in-process) ...", flush=True)
    out = {
        "decode_page_body": decoding(bodies()),
        "encode_page_connections": encoding(),
        "redis_round_trip": redis_parsers(),
        "celery_message": message(),
        "repeats": REPEATS,
    }
    d = out["decode_page_body"]
    print(
        f"  decode GitHub page {d['github_page_100']['json_loads_us']} -> "
        f"{d['github_page_100']['orjson_loads_us']} us, Twitter page "
        f"{d['twitter_page_1000']['json_loads_us']} -> {d['twitter_page_1000']['orjson_loads_us']} us; "
        f"HGETALL {out['redis_round_trip']['python_parser_hgetall_us']} -> "
        f"{out['redis_round_trip']['hiredis_hgetall_us']} us",
        flush=True,
    )
    if ab:
        print("hot path, whole pipeline: before vs after, interleaved ...", flush=True)
        out["pipeline_ab"] = pipeline_ab(runs=1 if quick else 3, size=30_000 if quick else 50_000)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))


SHIM = Path(__file__).parent / "stdlib_shim"
VARIANTS = {
    "before (json module, redis-py's Python parser)": True,
    "after (orjson, hiredis)": False,
}


def with_shim(cmd: list[str]) -> list[str]:
    """The worker command with the standard-library stand-ins first on its path."""
    from devtools.devstack import ROOT

    return ["env", f"PYTHONPATH={SHIM}:{ROOT}"] + list(cmd)


def pipeline_ab(runs: int = 3, size: int = 100_000) -> dict:
    """Pipeline pages/s before and after the hot-path changes: one stack, the page worker
    restarted per variant, runs interleaved (before, after, before, ...), medians."""
    from bench import api as bench_api
    from bench.pipeline import run_pipeline
    from devtools.devstack import DevStack, WorkerSpec, stop_process, temp_var_dir

    pages: dict[str, list[float]] = {name: [] for name in VARIANTS}
    stack = DevStack(var_dir=temp_var_dir("netsync-bench-ab-"), workers=[])
    with stack:
        index = 0
        for _ in range(runs):
            for name, shimmed in VARIANTS.items():
                stack.start_worker(
                    WorkerSpec(
                        "normal,whale",
                        pool="prefork",
                        concurrency=2,
                        name="pages",
                        wrap=with_shim if shimmed else None,
                    )
                )
                stack.wait_workers_ready()
                pages[name].append(run_pipeline(stack, bench_api, index, size)["pages_per_s"])
                index += 1
                stop_process(stack.processes.pop("pages"))
    out = {
        "scenario": f"github account of {size:,} followers, no latency, prefork -c 2; "
        f"{runs} runs per variant, interleaved",
        "variants": {
            name: {
                "pages_per_s_runs": [round(p, 1) for p in runs_],
                "pages_per_s_median": round(statistics.median(runs_), 1),
            }
            for name, runs_ in pages.items()
        },
    }
    before, after = (v["pages_per_s_median"] for v in out["variants"].values())
    out["gain"] = round(after / before, 3)
    print(f"  pipeline before {before} pages/s, after {after} pages/s (x{out['gain']})", flush=True)
    return out
