"""Across hosts: the hosts tests' figures, run several times, medians kept.

``python -m bench.hosts [--runs N] [-k EXPR]`` runs ``tests/hosts`` (each role in
a network namespace of its own; root) ``N`` times (default 3), reads the figures
each run appended to ``var/hosts-figures.jsonl`` and writes the median of every
figure per case and broker to ``bench/results/hosts.json``:

- a worker host lost for good at 75 % of a 30,000-follower sync, on Redis and
  RabbitMQ: seconds from the cut to the sync's end, the remaining work's own
  time (the surviving worker's pace before the cut) and the difference;
- a 20 s partition of a worker, healed: when the sync ended after the cut, when
  the worker beat again after the heal, the provider calls made twice;
- a message the broker lost at a partition; PostgreSQL away for 60 s during the
  finalization; the web host cut off from Redis; the sweeping scheduler's host
  lost (lateness of parked work);
- a far region 150 ms away: the same sync by a worker near the provider and by
  one at the main site, regional ÷ central.

Not part of ``make bench`` (it needs root and takes ~5 minutes a run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "var" / "hosts-figures.jsonl"
RESULTS = ROOT / "bench" / "results" / "hosts.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-k", default="", help="pytest -k expression: a subset of the cases")
    args = parser.parse_args(argv)
    if FIGURES.exists():
        FIGURES.unlink()
    for run in range(args.runs):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hosts"]
        if args.k:
            command += ["-k", args.k]
        done = subprocess.run(command, cwd=ROOT)
        print(f"bench.hosts: run {run + 1} of {args.runs}: pytest exit {done.returncode}")
    runs: dict = defaultdict(list)
    for line in FIGURES.read_text().splitlines() if FIGURES.exists() else []:
        figure = json.loads(line)
        runs[(figure.pop("case"), figure.get("broker", ""))].append(figure)
    # a subset (-k) updates the cases it ran and keeps the others' last figures
    results = json.loads(RESULTS.read_text()) if args.k and RESULTS.exists() else {}
    for (case, broker), figures in sorted(runs.items()):
        numbers = defaultdict(list)
        for figure in figures:
            for name, value in figure.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    numbers[name].append(value)
        results[f"{case}/{broker}" if broker else case] = {
            "runs": len(figures),
            "median": {name: statistics.median(values) for name, values in numbers.items()},
            "range": {name: [min(values), max(values)] for name, values in numbers.items()},
        }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
