"""``make bench`` / ``python -m bench [--quick] [--only NAME,...]``: every figure in one run.

Runs each benchmark in turn (fresh stacks of real processes each), collects
every figure into ``bench/results/figures.json``, writes
``bench/results/report.md`` and the plots (``bench/results/*.png``), and
prints the table. ``--quick`` runs smaller workloads, once each (no
worker-kill workload): a smoke run, not the figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

from bench import (
    announced,
    chain,
    cluster,
    federation,
    freshness,
    hotpath,
    ingest,
    isolation,
    memory,
    modes,
    networks,
    pipeline,
    plots,
    quota,
    report,
    simulator_rps,
    streams,
)
from bench.peer import run as peer

RESULTS = report.RESULTS


def steps(quick: bool) -> dict:
    """name -> (what it measures, callable returning its figures)."""
    runs = 1 if quick else 3
    size = 50_000 if quick else pipeline.SIZE
    iso_normals, iso_arrival = (40, 12.0) if quick else (80, 24.0)  # 200 logins/min
    iso_order = ("a", "b") if quick else ("a", "b", "c", "a", "b", "a", "b")
    return {
        "simulator": lambda: _simulator(quick),
        "hotpath": lambda: hotpath.main(quick),
        "pipeline": lambda: pipeline.main([("prefork", 2)], runs=runs, size=size),
        "cluster": lambda: cluster.main(runs=1 if quick else cluster.RUNS, size=size),
        "scaling": lambda: pipeline.scaling(_api(), size=20_000 if quick else 100_000),
        "chain": lambda: chain.main(quick),
        "quota": lambda: quota.main(runs=1, quick=quick),
        "announced": lambda: announced.main(quick),
        "federation": lambda: federation.main(quick),
        "isolation": lambda: isolation.main(iso_order, iso_normals, iso_arrival),
        "peer": lambda: peer.main(
            quick,
            kill=not quick,
            iso_scenario=isolation.plan(isolation.SEED, iso_normals, iso_arrival),
        ),
        "ingest": lambda: ingest.main(quick),
        "memory": lambda: memory.main(quick),
        "networks": lambda: _networks(quick),
        "modes": lambda: modes.main(quick),
        "streams": lambda: streams.main(quick),
        "freshness": lambda: freshness.main(quick),
    }


def _networks(quick: bool) -> dict:
    """PostgreSQL networks: finalization 10k/100k/1M, bytes per connection, members, feed."""
    networks.main(
        [
            "--sizes",
            "10000,100000" if quick else "10000,100000,1000000",
            "--member-queries",
            "200" if quick else "1000",
        ]
    )
    return json.loads(networks.RESULTS.read_text())


def _simulator(quick: bool) -> dict:
    simulator_rps.main(["--duration", "3" if quick else "5", "--runs", "1" if quick else "3"])
    return json.loads(simulator_rps.RESULTS.read_text())


def _api():
    from bench import api

    return api


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, once each")
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(steps(False))
    )
    args = parser.parse_args(argv)
    # a SIGTERM (a CI timeout, ``timeout``) unwinds like Ctrl-C, so every stack's
    # ``with`` block stops its processes instead of leaving them running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = [s for s in args.only.split(",") if s] or list(steps(args.quick))
    started = time.monotonic()
    figures: dict = {
        "quick": args.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "benchmarks": {},
        "seconds": {},
    }
    previous = RESULTS / "figures.json"
    if args.only and previous.exists():  # a partial run updates the last full one
        last = json.loads(previous.read_text())
        figures.update(
            {
                k: last[k]
                for k in ("quick", "started_at", "machine", "seconds", "total_seconds")
                if k in last
            }
        )
        figures["benchmarks"] = last.get("benchmarks", {})
        figures["updated"] = {
            "only": chosen,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    failed = []
    for name in chosen:
        t0 = time.monotonic()
        try:
            figures["benchmarks"][name] = steps(args.quick)[name]()
        except Exception:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            figures["benchmarks"][name] = {"error": traceback.format_exc(limit=3)}
        figures["seconds"][name] = round(time.monotonic() - t0, 1)
        print(
            f"[bench] {name} done in {figures['seconds'][name]} s "
            f"({round(time.monotonic() - started)} s so far)",
            flush=True,
        )
    if not args.only:
        figures["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    written = plots.write_all(figures["benchmarks"], RESULTS)
    figures["plots"] = written
    previous.write_text(json.dumps(figures, indent=1, default=str))
    text = report.write(figures)
    print(text)
    print(
        f"[bench] {len(chosen)} benchmark(s) in {round(time.monotonic() - started, 1)} s; written "
        f"{RESULTS / 'report.md'}, {previous}, {', '.join(written)}",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
