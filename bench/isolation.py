"""Isolation: do whales slow ordinary users' logins down?

200 normal GitHub logins (sizes 50–2,000, uniform) arrive as a Poisson
process over ~60 s; the simulator answers every call after 80 ± 20 ms.
Three cases, each on a fresh stack of real processes (embedded Redis, the
simulator, the web app, the scheduler, two Celery worker processes):

(a) the logins alone, on the split queues (worker ``normal`` consumes
    ``normal``, worker ``whale`` consumes ``whale``);
(b) the same logins while 3 whales of 100,000 followers sync (1,000 pages
    each), split queues: whales page on ``whale``;
(c) case (b) with everything on a single queue: the same two worker
    processes with the same pools and slots both consume one queue, and no
    account is classified as a whale (``WHALE_THRESHOLD`` out of reach) —
    the setup most Celery users start with.

The whales log in ``WHALE_LEAD_S`` before the first normal login, so their
pages are already flowing; the run ends when every normal sync is final
(whales still paging are left behind: the stack is stopped). Runs go
a, b, c, a, b: (a) and (b) twice, interleaved, so that a burst of other
load on this shared machine does not land on one case only; a case's
percentiles are over all its runs' latencies (p99 of 200 samples is the
third-largest value: two runs steady it). The whale worker process runs at
nice +10 in every case: in production whale workers have hosts of their own,
here they share two cores with everything, and the benchmark measures queue
isolation, not that. Each run reports the CPU this benchmark's processes
used and what other processes on the machine used meanwhile.

Reported: trigger-to-done (the sync record's ``created_at`` at the trigger
to ``finished_at`` when its last page is stored) p50/p95/p99 of the normal
syncs per case, and (b)/(a), (c)/(a). Same seed, arrival times and sizes in
every case. Quota does not bind: GitHub's limit is per token (each whale has
its own) and is set generously here; the shared-bucket shares are covered by
tests/integration/test_queues.py.

``python -m bench.isolation`` writes bench/results/isolation.json and
bench/results/isolation.png (the three latency distributions) and prints a table.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import redis

from devtools.devstack import DevStack, WorkerSpec, temp_var_dir
from state.store import FINAL, SyncStore

NORMALS = 200
ARRIVAL_S = 60.0
NORMAL_SIZES = (50, 2_000)
WHALES = 3
WHALE_SIZE = 100_000
LATENCY_MS = {"mean": 80, "jitter": 20}
#: whales log in this long before the first normal login
WHALE_LEAD_S = 3.0
#: the one pool and the slots per worker process, identical in every case
POOL = os.environ.get("ISO_POOL", "threads")
NORMAL_SLOTS = int(os.environ.get("ISO_NORMAL_SLOTS", "8"))
WHALE_SLOTS = int(os.environ.get("ISO_WHALE_SLOTS", "4"))
SEED = 5
#: per token, far above what a sync here needs: quota must not be what is measured
GENEROUS_QUOTA = "1000000/3600/token"
#: (c) puts whales on normal by never calling anything a whale
NO_WHALES_THRESHOLD = 10**12
DRAIN_TIMEOUT_S = 300
#: the order of the runs: (a) and (b) twice, interleaved, so a burst of other load on
#: the machine does not land on one case only; (c) once (its gap is far past any noise)
ORDER = ("a", "b", "c", "a", "b")
#: CPU priority of the whale worker process (see ``why_nice`` in the output)
WHALE_NICE = 10
RESULTS = Path(__file__).parent / "results"

CASES = {
    "a": "normal logins alone (split queues)",
    "b": f"+ {WHALES} whales of {WHALE_SIZE:,} (split queues)",
    "c": f"+ {WHALES} whales of {WHALE_SIZE:,} (one queue, same workers)",
}


def plan(seed: int = SEED, normals: int = NORMALS, arrival_s: float = ARRIVAL_S) -> dict:
    """Arrival offsets and sizes of the normal logins, and the accounts, from one seed."""
    rng = random.Random(seed)
    t, arrivals = 0.0, []
    for _ in range(normals):
        t += rng.expovariate(normals / arrival_s)
        arrivals.append(round(t, 3))
    count = normals
    normals = [
        {
            "provider": "github",
            "id": f"iso-n{i}",
            "token": f"tok-iso-n{i}",
            "size": rng.randint(*NORMAL_SIZES),
            "start": 0,
        }
        for i in range(count)
    ]
    whales = [
        {
            "provider": "github",
            "id": f"iso-w{i}",
            "token": f"tok-iso-w{i}",
            "size": WHALE_SIZE,
            "start": 0,
        }
        for i in range(WHALES)
    ]
    return {
        "arrivals": arrivals,
        "normals": normals,
        "whales": whales,
        "normals_count": count,
        "arrival_s": arrival_s,
    }


def workers(
    single_queue: bool,
    pool: str = POOL,
    normal_slots: int = NORMAL_SLOTS,
    whale_slots: int = WHALE_SLOTS,
) -> list[WorkerSpec]:
    """Two worker processes; (c) points both at the one queue, same pools and slots."""
    return [
        WorkerSpec("normal", pool=pool, concurrency=normal_slots, name="worker-normal"),
        WorkerSpec(
            "normal" if single_queue else "whale",
            pool=pool,
            concurrency=whale_slots,
            name="worker-whale",
        ),
    ]


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(latencies: list[float]) -> dict:
    return {
        "n": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "mean_s": round(statistics.fmean(latencies), 3),
        "max_s": round(max(latencies), 3),
    }


class CpuSampler:
    """CPU use per second: this benchmark's process tree (driver + stack) and everything else.

    The machine is shared: what other processes burn is reported with each case.
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, every_s: float = 1.0):
        import threading

        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (ours, others) in cores
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _machine() -> tuple[float, float]:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def _ours(self) -> float:
        """CPU seconds of this process and all its descendants (alive now)."""
        parents, times = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
            times[int(entry)] = (int(stat[11]) + int(stat[12])) / self.TICK
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            for child, parent in parents.items():
                if parent == pid and child not in mine:
                    mine.add(child)
                    frontier.append(child)
        return sum(times.get(pid, 0.0) for pid in mine)

    def _run(self):
        busy0, total0 = self._machine()
        ours0, t0 = self._ours(), time.monotonic()
        cores = os.cpu_count() or 1
        while not self._stop.wait(self.every_s):
            busy1, total1 = self._machine()
            ours1, t1 = self._ours(), time.monotonic()
            machine = (busy1 - busy0) / max(total1 - total0, 1) * cores
            ours = max(0.0, (ours1 - ours0) / (t1 - t0))
            self.samples.append((ours, max(0.0, machine - ours)))
            busy0, total0, ours0, t0 = busy1, total1, ours1, t1

    def report(self) -> dict:
        if not self.samples:
            return {}
        ours = [s[0] for s in self.samples]
        others = [s[1] for s in self.samples]
        return {
            "ours_cores_mean": round(statistics.fmean(ours), 2),
            "others_cores_mean": round(statistics.fmean(others), 2),
            "others_cores_max": round(max(others), 2),
            "per_second": [[round(a, 2), round(b, 2)] for a, b in self.samples],
        }


def renice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of ``pid`` and its children (Linux nice is per thread)."""
    pids = [pid] + [int(c) for c in _children(pid)]
    for proc in pids:
        try:
            tasks = os.listdir(f"/proc/{proc}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError:
                pass


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def run_case(
    case: str,
    scenario: dict,
    pool: str = POOL,
    normal_slots: int = NORMAL_SLOTS,
    whale_slots: int = WHALE_SLOTS,
) -> dict:
    from bench import api as bench_api

    with_whales = case in ("b", "c")
    env = {"QUOTA_GITHUB": GENEROUS_QUOTA, "LOG_LEVEL": "WARNING"}
    if case == "c":
        env["WHALE_THRESHOLD"] = str(NO_WHALES_THRESHOLD)
    accounts = scenario["normals"] + (scenario["whales"] if with_whales else [])
    stack = DevStack(
        var_dir=temp_var_dir(f"netsync-bench-iso-{case}-"),
        env=env,
        workers=workers(case == "c", pool, normal_slots, whale_slots),
        scenario={"seed": SEED, "latency_ms": LATENCY_MS, "accounts": accounts},
    )
    load_before = os.getloadavg()
    with stack, CpuSampler() as cpu:
        store = SyncStore(redis.Redis.from_url(stack.redis_url), "netsync")
        time.sleep(3)  # the worker processes finish booting
        renice(stack.processes["worker-whale"].pid, WHALE_NICE)
        whale_syncs = [
            bench_api.login(stack, f"iso-whale-{i}", account)
            for i, account in enumerate(scenario["whales"] if with_whales else [])
        ]
        if with_whales:
            time.sleep(WHALE_LEAD_S)
        whale_pages_at_start = _whale_pages(store, whale_syncs)
        started = time.monotonic()
        sent = _arrive(stack, bench_api, scenario)
        normal_syncs = [sync_id for sync_id, _ in sent]
        last_arrival = time.monotonic()
        whales_running = [store.get_sync(s).get("status") for s in whale_syncs]
        records = _drain(store, normal_syncs)
        drained = time.monotonic()
        whale_pages_at_end = _whale_pages(store, whale_syncs)
        whale_status_end = [store.get_sync(s).get("status") for s in whale_syncs]
        trigger_ms = trigger_latencies(stack, scenario, sent)
    latencies = [float(r["finished_at"]) - float(r["created_at"]) for r in records]
    statuses = sorted({r["status"] for r in records})
    queues_used = sorted({r.get("queue", "") for r in records})
    result = {
        "case": case,
        "description": CASES[case],
        **summary(latencies),
        "pool": pool,
        "normal_slots": normal_slots,
        "whale_slots": whale_slots,
        "latencies_s": [round(x, 4) for x in latencies],
        "statuses": statuses,
        "normal_sync_queues": queues_used,
        "arrival_window_s": round(last_arrival - started, 1),
        "run_s": round(drained - started, 1),
        "load_avg_1m_before": round(load_before[0], 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "cpu": cpu.report(),
        "trigger_latency_ms": [round(x, 1) for x in trigger_ms],
    }
    if with_whales:
        elapsed = drained - started
        result["whales"] = {
            "status_at_last_login": whales_running,
            "status_when_normals_done": whale_status_end,
            "pages_while_normals_ran": whale_pages_at_end - whale_pages_at_start,
            "pages_per_s_while_normals_ran": round(
                (whale_pages_at_end - whale_pages_at_start) / elapsed, 1
            ),
        }
    return result


def _arrive(stack, bench_api, scenario) -> list[str]:
    """Send each login at its arrival time (a few threads, so a slow answer never delays the next)."""
    begin = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for i, (offset, account) in enumerate(zip(scenario["arrivals"], scenario["normals"])):
            delay = begin + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(
                (pool.submit(bench_api.login, stack, f"iso-user-{i}", account), time.time())
            )
        return [(f.result(), t) for f, t in futures]


def trigger_latencies(stack, scenario, sent) -> list[float]:
    """Per normal login: webhook sent -> the simulator receives its sync's first call, ms."""
    import requests

    response = requests.get(
        f"{stack.simulator_url}/_sim/calls", params={"provider": "github"}, timeout=60
    )
    first: dict[str, float] = {}
    for call in response.json()["calls"]:
        first.setdefault(call["token"], call["t"])
    return [
        (first[account["token"]] - t) * 1000
        for account, (_, t) in zip(scenario["normals"], sent)
        if account["token"] in first
    ]


def _drain(store: SyncStore, sync_ids: list[str]) -> list[dict]:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    pending = set(sync_ids)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} normal syncs not final after {DRAIN_TIMEOUT_S}s")
        pending = {s for s in pending if (store.get_sync(s) or {}).get("status") not in FINAL}
        if pending:
            time.sleep(0.5)
    return [store.get_sync(s) for s in sync_ids]


def _whale_pages(store: SyncStore, sync_ids: list[str]) -> int:
    return sum(int((store.get_sync(s) or {}).get("pages_fetched", 0)) for s in sync_ids)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ecdf, box) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"a": "tab:green", "b": "tab:blue", "c": "tab:red"}
    for case, result in results.items():
        xs = sorted(result["latencies_s"])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ecdf.step(
            xs,
            ys,
            where="post",
            color=colors[case],
            label=f"({case}) {result['description']}: p99 {result['p99_s']:.2f} s",
        )
        ecdf.axvline(result["p99_s"], color=colors[case], linestyle=":", linewidth=1)
    ecdf.set_xscale("log")
    ecdf.set_xlabel("trigger-to-done, seconds (log scale)")
    ecdf.set_ylabel("share of the normal logins (all runs of a case)")
    ecdf.set_title("Normal logins: latency distribution (dotted: p99)")
    ecdf.grid(True, which="both", alpha=0.3)
    ecdf.legend(loc="lower right", fontsize=8)
    box.boxplot(
        [results[c]["latencies_s"] for c in results],
        whis=(1, 99),
        tick_labels=[f"({c})" for c in results],
        showfliers=True,
    )
    box.set_yscale("log")
    box.set_ylabel("seconds (log scale)")
    box.set_title("box: p25–p75, whiskers p1–p99")
    box.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        "normal GitHub logins at 200/min, simulator "
        f"{LATENCY_MS['mean']}±{LATENCY_MS['jitter']} ms; {POOL} "
        f"{NORMAL_SLOTS}+{WHALE_SLOTS} slots in every case",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(out: dict) -> str:
    rows = [f"{'case':<58} {'runs':>4} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}"]
    for case, r in out["cases"].items():
        rows.append(
            f"({case}) {r['description']:<54} {len(r['runs']):>4} {r['n']:>4} "
            f"{r['p50_s']:>7.3f} {r['p95_s']:>7.3f} {r['p99_s']:>7.3f}"
        )
    for name, ratio in out["ratios"].items():
        rows.append(
            f"{'ratio ' + name:<58} {'':>4} {'':>4} {ratio['p50']:>7.2f} "
            f"{ratio['p95']:>7.2f} {ratio['p99']:>7.2f}"
        )
    return "\n".join(rows)


def pooled(runs: list[dict]) -> dict:
    """One case over its runs: percentiles of all its latencies together, and each run's."""
    latencies = [x for r in runs for x in r["latencies_s"]]
    first = runs[0]
    triggers = [x for r in runs for x in r.get("trigger_latency_ms", [])]
    out = {
        "case": first["case"],
        "description": first["description"],
        **summary(latencies),
        "runs": [
            {k: v for k, v in r.items() if k not in ("latencies_s", "trigger_latency_ms")}
            for r in runs
        ],
        "latencies_s": latencies,
        # the figure: the median over runs of each run's percentile
        "median_of_runs": {
            p: round(statistics.median(r[f"{p}_s"] for r in runs), 3) for p in ("p50", "p95", "p99")
        },
        "trigger_latency": (
            {
                "n": len(triggers),
                "p50_ms": round(percentile(triggers, 50), 1),
                "p99_ms": round(percentile(triggers, 99), 1),
            }
            if triggers
            else None
        ),
    }
    for r in out["runs"]:
        r.get("cpu", {}).pop("per_second", None)
    return out


def main(order=ORDER, normals: int = NORMALS, arrival_s: float = ARRIVAL_S) -> dict:
    scenario = plan(SEED, normals, arrival_s)
    runs: dict[str, list[dict]] = {}
    started = time.monotonic()
    for i, case in enumerate(order, 1):
        print(
            f"isolation benchmark [{i}/{len(order)}]: case ({case}) {CASES[case]} ...", flush=True
        )
        r = run_case(case, scenario)
        runs.setdefault(case, []).append(r)
        print(
            f"  p50 {r['p50_s']} s, p95 {r['p95_s']} s, p99 {r['p99_s']} s "
            f"(run {r['run_s']} s; CPU: this benchmark {r['cpu'].get('ours_cores_mean')} "
            f"cores, other processes {r['cpu'].get('others_cores_mean')} cores on average)",
            flush=True,
        )
    results = {case: pooled(runs[case]) for case in CASES if case in runs}
    ratios = {}
    if "a" in results:
        for case in ("b", "c"):
            if case in results:
                ratios[f"({case})/(a)"] = {
                    p: round(
                        results[case]["median_of_runs"][p] / results["a"]["median_of_runs"][p], 2
                    )
                    for p in ("p50", "p95", "p99")
                }
    out = {
        "scenario": (
            f"{normals} normal GitHub logins (sizes {NORMAL_SIZES[0]}-{NORMAL_SIZES[1]}, "
            f"uniform), Poisson arrivals over ~{arrival_s:.0f} s; simulator latency "
            f"{LATENCY_MS['mean']} +/- {LATENCY_MS['jitter']} ms (uniform); whales: "
            f"{WHALES} x {WHALE_SIZE:,} followers, logged in {WHALE_LEAD_S:.0f} s "
            "before the first normal login"
        ),
        "setup": {
            "workers": (
                f"2 Celery worker processes, pool={POOL}: 'worker-normal' "
                f"{NORMAL_SLOTS} slots, 'worker-whale' {WHALE_SLOTS} slots (nice "
                f"+{WHALE_NICE} in every case); (a),(b) consume normal and whale "
                "respectively; (c) both consume the one queue 'normal' "
                f"(WHALE_THRESHOLD={NO_WHALES_THRESHOLD}); total "
                f"{NORMAL_SLOTS + WHALE_SLOTS} slots in every case; no trickle work, "
                "no trickle worker"
            ),
            "runs": (
                f"order {' '.join(order)} (interleaved); a case's percentiles are over "
                "all its runs' latencies together; each run is in cases.<case>.runs"
            ),
            "pool": POOL,
            "normal_slots": NORMAL_SLOTS,
            "whale_slots": WHALE_SLOTS,
            "whale_worker_nice": WHALE_NICE,
            "why_nice": (
                "in production whale workers run on their own hosts; on this shared "
                "2-core machine the whale process gets a lower CPU priority so that "
                "what is measured is queue isolation, not the two worker processes "
                "sharing two cores (the same process setup in (a), (b) and (c))"
            ),
            "quota": f"QUOTA_GITHUB={GENEROUS_QUOTA} (per token); simulator: no rate limit",
            "machine": (
                f"{os.cpu_count()} cores shared by the simulator, Redis, web, scheduler, "
                "the workers and this driver, and by whatever else runs on the machine "
                "(cpu.others_cores_mean per run)"
            ),
            "measure": "trigger-to-done = sync record finished_at - created_at, normal syncs only",
            "seed": SEED,
        },
        "cases": results,
        "ratios": ratios,
        "goal": "(b)/(a) <= 1.2 at p99",
        "goal_met": (ratios["(b)/(a)"]["p99"] <= 1.2 if "(b)/(a)" in ratios else None),
        "benchmark_s": round(time.monotonic() - started),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "isolation.json").write_text(json.dumps(out, indent=2))
    plot(results, RESULTS / "isolation.png")
    print(table(out))
    print(f"setup: {out['setup']['workers']}; {out['setup']['runs']}; {out['setup']['quota']}")
    print(
        f"written: {RESULTS / 'isolation.json'}, {RESULTS / 'isolation.png'} "
        f"({out['benchmark_s']} s)"
    )
    return out


#: ``python -m bench.isolation sweep``: case (a) per pool and normal-worker slots, to
#: choose the Procfile's pool and concurrency (not part of ``make bench``)
SWEEP = [("threads", 4), ("threads", 8), ("threads", 16), ("gevent", 16), ("prefork", 4)]


def sweep(configs=SWEEP) -> dict:
    scenario = plan()
    rows = []
    for pool, slots in configs:
        print(f"isolation sweep: case (a), worker-normal pool={pool} slots={slots} ...", flush=True)
        r = run_case("a", scenario, pool=pool, normal_slots=slots)
        r.pop("latencies_s")
        rows.append(r)
        print(
            f"  p50 {r['p50_s']} s, p95 {r['p95_s']} s, p99 {r['p99_s']} s; CPU "
            f"{r['cpu'].get('ours_cores_mean')} cores (others "
            f"{r['cpu'].get('others_cores_mean')})",
            flush=True,
        )
        r["cpu"].pop("per_second", None)
    out = {
        "scenario": "case (a) of bench/isolation.py per worker-normal pool and slots",
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "isolation_sweep.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["sweep"]:
        sweep()
    else:
        main(tuple(sys.argv[1:]) or ORDER)
