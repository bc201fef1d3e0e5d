"""The report's plots, from the figures of one ``python -m bench`` run (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency(b: dict, path: Path) -> bool:
    iso, peer = b.get("isolation", {}), b.get("peer", {})
    series = [
        (f"netsync ({k}) {c['description']}", c["latencies_s"])
        for k, c in iso.get("cases", {}).items()
        if c.get("latencies_s")
    ]
    if peer.get("beside_whales", {}).get("latencies_s"):
        series.append(
            (
                "peer: one Celery task per sync, one queue, + whales",
                peer["beside_whales"]["latencies_s"],
            )
        )
    if not series:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, xs in series:
        xs = sorted(xs)
        ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("normal login: trigger-to-done, seconds (log)")
    ax.set_ylabel("share of logins")
    ax.set_title("Latency distributions: normal logins at 200/min")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def quota_use(b: dict, path: Path) -> bool:
    cases = [c for c in b.get("quota", {}).get("published_cases", []) if c.get("runs")]
    if not cases:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        run = case["runs"][0]
        calls = run.get("quota_use_over_time", [])
        admitted = [t for t, limited in calls if not limited]
        ax.step(admitted, range(1, len(admitted) + 1), where="post", label="calls admitted")
        limit, window = case["limit"].rstrip("s").split("/")
        rate = float(limit) / float(window)
        end = admitted[-1] if admitted else 1
        ax.plot(
            [0, end], [float(limit), float(limit) + rate * end], "--", label="the limit's bound"
        )
        rejected = [t for t, limited in calls if limited]
        if rejected:
            ax.plot(rejected, [0] * len(rejected), "rx", label="429")
        ax.set_title(
            f"published {case['limit']}: ratio {case['ratio_median']}, "
            f"{case['http_429_total']} x 429"
        )
        ax.set_xlabel("seconds since the first call")
        ax.set_ylabel("calls")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Quota use over time (a whale under a per-token limit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def rss(b: dict, path: Path) -> bool:
    mem = b.get("memory", {})
    if not mem.get("small"):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in ("small", "large"):
        run = mem[key]
        points = run.get("rss_over_time_mib", [])
        ax.plot(
            [t for t, _ in points],
            [m for _, m in points],
            label=f"{run['connections']:,} connections (peak {run['peak_rss_mib']} MiB)",
        )
    ax.set_xlabel("seconds since the login")
    ax.set_ylabel("page worker RSS, MiB")
    ax.set_title("Page worker memory while syncing (threads pool, 4 slots)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def scaling(b: dict, path: Path) -> bool:
    rows = b.get("scaling", {}).get("rows")
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["processes"] for r in rows]
    ax.plot(xs, [r["pages_per_s"] for r in rows], "o-", label="measured")
    ax.plot(xs, [rows[0]["pages_per_s"] * x for x in xs], ":", label="linear")
    ax.set_xticks(xs)
    ax.set_xlabel("page-worker processes (prefork -c N)")
    ax.set_ylabel("pages/s")
    ax.set_title("Scaling on one 2-core machine")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def modes(b: dict, path: Path) -> bool:
    """Counted calls and dollars per phase (mode) per provider (``bench/modes.py``)."""
    data = b.get("modes", {}).get("providers")
    if not data:
        return False
    phases = ("first", "unchanged", "added_1pct", "removed_0_1pct_full")
    labels = ("first (full)", "unchanged (incr.)", "+1 % (incr.)", "-0.1 % (full)")
    names = list(data)
    plt = _plt()
    fig, (calls_ax, usd_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.8 / len(phases)
    for i, (phase, label) in enumerate(zip(phases, labels)):
        xs = [n + (i - (len(phases) - 1) / 2) * width for n in range(len(names))]
        counted = [max(data[p]["phases"][phase]["counted_calls"], 0.5) for p in names]
        usd = [max(data[p]["phases"][phase]["usd"], 0.005) for p in names]
        calls_ax.bar(xs, counted, width, label=label)
        usd_ax.bar(xs, usd, width, label=label)
    calls_ax.set_yscale("log")
    calls_ax.set_ylabel("counted calls (log; 0 drawn at 0.5)")
    usd_ax.set_yscale("log")
    usd_ax.set_ylabel("USD billed (log; free drawn at $0.005)")
    for ax in (calls_ax, usd_ax):
        ax.set_xticks(range(len(names)), names)
        ax.grid(True, axis="y", alpha=0.3)
    size = b["modes"].get("size")
    calls_ax.set_title(f"Counted calls per sync, {size:,}-connection network")
    usd_ax.set_title("Dollars per sync (X bills $0.010 per user read)")
    usd_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(benchmarks: dict, results: Path) -> list[str]:
    written = []
    for name, draw in (
        ("latency.png", latency),
        ("quota_use.png", quota_use),
        ("rss.png", rss),
        ("scaling.png", scaling),
        ("modes.png", modes),
    ):
        try:
            if draw(benchmarks, results / name):
                written.append(str(results / name))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            print(f"[bench] plot {name} skipped: {exc!r}", flush=True)
    return written
