"""The benchmark figures as the README's markdown, from bench/results/*.json."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def pipeline_section(data: dict) -> list[str]:
    lines = [f"**Pipeline throughput** ({data['scenario']}; median of {data['runs_per_pool']} runs "
             "per pool):", "",
             "| pool | concurrency | pages/s | connections/s | raw no-op tasks/s | ratio |",
             "|---|---|---|---|---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['pool']} | {r['concurrency']} | {r['pages_per_s_median']} | "
                     f"{r['connections_per_s_median']:,} | {r['raw_noop_tasks_per_s_median']} | "
                     f"{r['ratio']} |")
    return lines + ["", f"Highest throughput with no latency (CPU-bound): `{data['best_pool']}`.", ""]


def quota_section(data: dict) -> list[str]:
    pub, unpub = data["published"], data["unpublished"]
    return [f"**Quotas** ({data['scenario']}; median of 3):", "",
            "| case | figure |", "|---|---|",
            f"| published limit | sync time ÷ (pages ÷ rate) = {pub['ratio_median']}, utilization "
            f"{pub['utilization_median']:.1%}, {pub['http_429_total']} × 429, peak {pub['peak_max']} per window |",
            f"| unpublished (adaptive), after warm-up | utilization "
            f"{unpub['cold_after_warm_up']['utilization_median']:.1%}, rejected "
            f"{unpub['cold_after_warm_up']['rejected_share_median']:.1%} |",
            f"| unpublished, warm re-sync | utilization {unpub['warm_resync']['utilization_median']:.1%}, "
            f"rejected {unpub['warm_resync']['rejected_share_median']:.1%} |",
            f"| unpublished, whole cold sync (ramp included) | utilization "
            f"{unpub['cold_whole_sync']['utilization_median']:.1%}, rejected "
            f"{unpub['cold_whole_sync']['rejected_share_median']:.1%} |", ""]


def isolation_section(data: dict) -> list[str]:
    lines = [f"**Isolation** ({data['scenario']}); trigger-to-done of the normal logins, seconds:", "",
             "| case | n | p50 | p95 | p99 |", "|---|---|---|---|---|"]
    for case in data["cases"].values():
        lines.append(f"| ({case['case']}) {case['description']} | {case['n']} | {case['p50_s']} | "
                     f"{case['p95_s']} | {case['p99_s']} |")
    for name, ratio in data["ratios"].items():
        lines.append(f"| ratio {name} | | {ratio['p50']} | {ratio['p95']} | {ratio['p99']} |")
    return lines + ["", "Plot: `bench/results/isolation.png`.", ""]


def simulator_section(data: dict) -> list[str]:
    return [f"**Simulator**: {data['requests_per_second_median']} GitHub follower pages/s "
            f"(100 per page, {data['concurrency']} concurrent clients on the same 2 cores).", ""]


def networks_section(data: dict) -> list[str]:
    stored = data["storage"]
    lines = [f"**Networks in PostgreSQL** ({data['server']}); finalization = one transaction: "
             "staging read from Redis, COPY, diff by the database, network replaced, feed "
             "entries; staging = every page of 1,000 stored:", "",
             "| connections | first sync | re-sync (1% out, 1% in) | staging: Redis hash "
             "| staging: UNLOGGED COPY |", "|---|---|---|---|---|"]
    for run in data["finalization"]:
        lines.append(f"| {run['size']:,} | {run['first_sync']['finalize_s']} s "
                     f"| {run['resync_1pct']['finalize_s']} s "
                     f"| {run['first_sync']['redis_staging_s']} s "
                     f"| {run['unlogged_copy_staging_s']} s |")
    members = data["members"]
    lines += ["", f"Storage: {stored['bytes_per_connection_total']} bytes per connection "
              f"(table {stored['table']}, primary key {stored['primary_key']}, member_joined "
              f"index {stored['member_joined_index']}) against 180 in Redis before; Redis "
              f"staging keys left after final: {data['redis_staging_keys_left_after_final']}.",
              f"Members of a {members['network']:,}-connection network among "
              f"{members['linked_accounts']:,} linked accounts: page of 100 p50 "
              f"{members['limit_100']['p50_ms']} ms / p99 {members['limit_100']['p99_ms']} ms; "
              f"page of 1,000 p50 {members['limit_1000']['p50_ms']} ms / p99 "
              f"{members['limit_1000']['p99_ms']} ms.",
              f"Change feed: {data['feed']['entries_per_s']:,} entries/s read in pages of "
              "1,000.", ""]
    return lines


def markdown() -> str:
    lines: list[str] = []
    for name, render in (("pipeline.json", pipeline_section), ("quota.json", quota_section),
                         ("isolation.json", isolation_section), ("simulator.json", simulator_section),
                         ("networks.json", networks_section)):
        data = _load(name)
        if data:
            lines += render(data)
    return "\n".join(lines)


def main() -> str:
    text = markdown()
    (RESULTS / "summary.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
