"""Where a page worker's memory goes: ``python -m bench.memtrace [--sizes 10000,10000,1000000]``.

The memory figure's workload (``bench/memory.py``: Facebook accounts, 5,000
friends per page, the Procfile's whale worker: threads, 4 slots), synced one
after the other by ONE worker run under ``tracemalloc``. A thread in the
worker samples its RSS and the memory Python holds (current, and the peak
since the last mark) every ``SAMPLE_S``; at each mark (before the first
sync, after each) it takes a snapshot. Printed per sync: the peak RSS and
the peak of Python's allocations during it, what Python still holds after
it, and the allocation sites that grew since the previous mark (file:line,
with the netsync frame that led there). The first sync also pays the
imports; the growth from a small sync to a huge one is the second's.

RSS beyond Python's allocations is the allocator's (memory freed but not
returned to the system) or C libraries'; tracemalloc's own bookkeeping
inflates RSS here, so compare RSS with ``bench/memory.py``'s, not with this.
A diagnostic, not one of ``make bench``'s figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.2
NFRAMES = 16
TOP = 15

BOOT = (
    "import sys, runpy; sys.path.insert(0, {root!r}); import bench.memtrace as m; "
    "m.install({out!r}); module = sys.argv[2]; sys.argv = [module] + sys.argv[3:]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _site(trace) -> str:
    """The allocating line, and the innermost netsync frame that led to it."""
    frames = list(trace)[::-1]  # tracemalloc lists the oldest frame first
    where = f"{_short(frames[0].filename)}:{frames[0].lineno}"
    ours = next(
        (
            f
            for f in frames
            if f.filename.startswith(str(ROOT))
            and "/.venv" not in f.filename
            and "/bench/" not in f.filename
        ),
        None,
    )
    if ours is not None and ours is not frames[0]:
        where += f" <- {_short(ours.filename)}:{ours.lineno}"
    return where


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def install(out_dir: str) -> None:
    """Trace this process' allocations. A sampler thread writes ``<out_dir>/state.json``;
    a file ``<out_dir>/mark-<name>`` asks it for a mark (a snapshot, compared with the last)."""
    import tracemalloc

    tracemalloc.start(NFRAMES)
    out = Path(out_dir)
    state = {"marks": [], "samples": []}
    started = time.monotonic()

    def mark(name: str, previous):
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        samples = [
            s
            for s in state["samples"]
            if s[0] >= (state["marks"][-1]["t"] if state["marks"] else 0)
        ]
        entry = {
            "name": name,
            "t": round(time.monotonic() - started, 2),
            "traced_mib": round(current / 2**20, 1),
            "peak_traced_mib_since_last": round(peak / 2**20, 1),
            "peak_rss_mib_since_last": round(max((s[1] for s in samples), default=0) / 1024, 1),
            "rss_mib": round(_rss_kib() / 1024, 1),
        }
        if previous is not None:
            grown = snapshot.compare_to(previous, "traceback")
            entry["grew"] = [
                {
                    "site": _site(d.traceback),
                    "kib": round(d.size_diff / 1024, 1),
                    "blocks": d.count_diff,
                }
                for d in grown[:TOP]
            ]
        tracemalloc.reset_peak()
        state["marks"].append(entry)
        return snapshot

    def sample():
        previous = None
        while True:
            time.sleep(SAMPLE_S)
            current, peak = tracemalloc.get_traced_memory()
            state["samples"].append(
                [round(time.monotonic() - started, 2), _rss_kib(), current // 1024, peak // 1024]
            )
            for request in sorted(out.glob("mark-*")):
                previous = mark(request.name[len("mark-") :], previous)
                request.unlink()
            (out / "state.tmp").write_text(json.dumps(state))
            (out / "state.tmp").replace(out / "state.json")

    threading.Thread(target=sample, daemon=True, name="memtrace").start()


def wrap_for(out_dir: Path):
    def wrap(cmd: list[str]) -> list[str]:
        assert cmd[1] == "-m", cmd
        return [cmd[0], "-c", BOOT.format(root=str(ROOT), out=str(out_dir))] + cmd[1:]

    return wrap


def _mark(out_dir: Path, name: str, timeout: float = 120.0) -> None:
    (out_dir / f"mark-{name}").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out_dir / "state.json"
        if path.exists() and any(m["name"] == name for m in json.loads(path.read_text())["marks"]):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no mark {name} from the worker")


def traced_syncs(sizes: list[int]) -> list[dict]:
    from bench import api as bench_api
    from bench.memory import UNBOUND_QUOTA, UNBOUND_SCENARIO
    from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

    out_dir = Path(tempfile.mkdtemp(prefix="netsync-memtrace-"))
    worker = WorkerSpec(
        "normal,whale", pool="threads", concurrency=4, name="page-worker", wrap=wrap_for(out_dir)
    )
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-memtrace-"),
        workers=[worker],
        scenario=UNBOUND_SCENARIO,
        env={"LOG_LEVEL": "WARNING", "QUOTA_FACEBOOK": UNBOUND_QUOTA},
    )
    runs = []
    with stack:
        time.sleep(1.0)
        _mark(out_dir, "idle")
        for i, size in enumerate(sizes):
            account = {
                "provider": "facebook",
                "id": str(100_000_000_000_000 + i * 10**7 + size),
                "size": size,
                "token": f"tok-mem-{i}-{size}",
            }
            bench_api.add_account(stack, account)
            started = time.monotonic()
            record = bench_api.wait_final(
                stack, bench_api.login(stack, f"mem-{i}-{size}", account), timeout=1800, poll=0.2
            )
            assert record["status"] == "succeeded", record
            runs.append(
                {
                    "connections": size,
                    "pages": record["pages_fetched"],
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            time.sleep(1.0)
            _mark(out_dir, f"after-{i}-{size}")
    marks = json.loads((out_dir / "state.json").read_text())["marks"]
    for run, found in zip(runs, marks[1:]):
        run.update(found)
    return [marks[0]] + runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memtrace", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sizes",
        default="10000,10000,1000000",
        help="synced in turn by one worker (the first also pays the imports)",
    )
    args = parser.parse_args(argv)
    print(json.dumps(traced_syncs([int(s) for s in args.sizes.split(",")]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
