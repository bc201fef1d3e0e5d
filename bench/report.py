"""bench/results/report.md from one run's figures (bench/results/figures.json).

``python -m bench.report`` re-renders the report from the last figures.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.profiling import describe

RESULTS = Path(__file__).parent / "results"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ok(value, goal) -> str:
    if value is None:
        return "–"
    return "yes" if goal(value) else "**no**"


def github_announced_rows(cases: list) -> list[tuple[str, str, str, str, str]]:
    """GitHub whales against limits announced only in headers, and configured beside them."""
    out = []
    for case in cases:
        out.append(
            (
                f"4 GitHub {case['limit']} per token, netsync {case['netsync']} "
                f"({case['pages']} pages)",
                f"sync ÷ bound {case['ratio']}, {case['http_429']} × 429, peak "
                f"{case['peak_per_window']} per window",
                "≤ 1.05, zero 429s",
                _ok(case["ratio"], lambda v, c=case: v <= 1.05 and c["http_429"] == 0),
                "announced only: each window waits for the whole-second reset + 1 s skew "
                "(GitHub states no window length)"
                if case["netsync"] != "configured"
                else "the configured window ends each window one window after the answer "
                "of the call that opened it",
            )
        )
    return out


def announced_rows(a: dict) -> list[tuple[str, str, str, str, str]]:
    """Issue 17: limits announced only in the provider's headers, and spend (``bench.announced``)."""
    out = github_announced_rows(a.get("github", []))
    if m := a.get("mastodon"):
        out.append(
            (
                f"4 Mastodon paging throttle announced only ({m['paging_calls']} paging calls, "
                f"{m['rule']})",
                f"{m['http_429']} × 429; paging calls per window {m['per_window']}; "
                f"{_pct(m['paging_budget_used_when_held_back'])} of the budget used where it "
                "held the sync back",
                "zero 429s, ≥ 90 %",
                _ok(
                    m["paging_budget_used_when_held_back"],
                    lambda v: v >= 0.9 and m["http_429"] == 0,
                ),
                "the header speaks for two rules of limit 300: the non-paging calls count in "
                "the other's window too",
            )
        )
    if s := a.get("spend"):
        out.append(
            (
                f"4 spend: X {s['size']:,} followers at $0.010, ${s['budget_usd']:.2f}/day",
                f"billed ${s['billed_usd']:.2f} ({s['billed_resources']} resources); sync "
                f"{s['status']}, waiting for {s['waiting_for']} until {s['waiting_until']}",
                "billed ≤ budget, the sync waits",
                _ok(
                    s["billed_usd"],
                    lambda v: v <= s["budget_usd"] and s["waiting_for"] == "spend_budget",
                ),
                "the budget: a page asks for what it has left (499 after the profile's $0.01)",
            )
        )
    return out


def federation_rows(f: dict) -> list[tuple[str, str, str, str, str]]:
    """Issue 18: federated instances (``bench.federation``)."""
    out = []
    if o := f.get("outage"):
        out.append(
            (
                f"18 one Mastodon instance down {o['outage_s']:g} s, {o['users_per_instance']} "
                f"users of {o['size']:,} on each of two",
                f"healthy instance's syncs: time ×{o['makespan_ratio_median']} of the same "
                f"users alone (runs {o['makespan_ratios']}), "
                f"×{o.get('makespan_ratio_vs_both_healthy_median')} of both instances healthy; "
                f"{o['calls_into_dead_instance_median']} calls "
                f"into the dead instance while {o['syncs_waiting_on_dead_instance']} of its syncs waited",
                "ratio ≤ 1.1, calls bounded by the breaker",
                _ok(o["makespan_ratio_median"], lambda v: v <= 1.1),
                "the dead instance's syncs park (no worker held): the healthy ones get the workers",
            )
        )
    if m := f.get("many"):
        out.append(
            (
                f"18 {m['instances']} instances × {m['users_per_instance']} users, limits "
                "announced per instance",
                f"{m['http_429']} × 429; {m['exact']}/{m['syncs']} exact in {m['seconds']} s; "
                f"quota+breaker state {m['state_bytes_per_instance_median']:g} B per instance "
                f"({m['state_bytes_per_account_median']:g} B per account)",
                "zero 429s, all exact",
                _ok(m["http_429"], lambda v: v == 0 and m["exact"] == m["syncs"]),
                "one announced-rules hash per account and instance",
            )
        )
    return out


def rows(b: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, measured, goal, met, largest remaining cost)."""
    out = []
    if (p := b.get("pipeline")) and p.get("results"):
        r = p["results"][0]
        out.append(
            (
                "1 pipeline efficiency (200k followers, no latency)",
                f"{r['pages_per_s_median']} pages/s, {r['connections_per_s_median']:,} conn/s; "
                f"raw Celery no-op {r['raw_noop_tasks_per_s_median']}/s; ratio {r['ratio']}",
                "ratio ≥ 0.6",
                _ok(r["ratio"], lambda v: v >= 0.6),
                describe(r.get("profile", {})),
            )
        )
    if (cl := b.get("cluster")) and cl.get("setups"):
        setups = cl["setups"]
        out.append(
            (
                "1 pipeline on a three-master Redis Cluster (same sync, stacks alternating)",
                "; ".join(
                    f"{name} {f['pages_per_s_median']} pages/s (round trip "
                    f"{f.get('state_round_trip_us', '?')} µs)"
                    for name, f in setups.items()
                )
                + f"; cluster ÷ one Redis (both RabbitMQ) {cl['cluster_vs_one_redis_same_broker']}",
                "–",
                "–",
                "the 2 cores: three stacks' processes (the cluster's three nodes) share them",
            )
        )
    elif cl and cl.get("skipped"):
        out.append(
            (
                "1 pipeline on a three-master Redis Cluster",
                "skipped: " + cl["skipped"],
                "–",
                "–",
                "–",
            )
        )
    if (c := b.get("chain")) and "ratio" in c:
        out.append(
            (
                "2 chain overhead (cursor chain, 40 ms provider)",
                f"ratio {c['ratio']} over {c['calls']} calls; {c['per_hop_overhead_ms']} ms per hop "
                f"(hop gap p50 {c['hop_gap_ms']['p50']} ms; a bare client's call takes "
                f"{c['direct_call_ms_median']} ms, ratio vs that {c['ratio_vs_direct_client']})",
                "≤ 1.10",
                _ok(c["ratio"], lambda v: v <= 1.10),
                describe(c.get("profile", {})),
            )
        )
        idle = c["trigger_latency_idle"]
        busy = (b.get("isolation", {}).get("cases", {}).get("a") or {}).get("trigger_latency")
        busy_text = (
            f"; at 200 logins/min p50 {busy['p50_ms']} ms, p99 {busy['p99_ms']} ms" if busy else ""
        )
        out.append(
            (
                "3 trigger latency (webhook sent → first provider call)",
                f"idle p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms{busy_text}",
                "–",
                "–",
                "web: " + describe((b.get("ingest") or {}).get("profile", {})),
            )
        )
    if (q := b.get("quota")) and q.get("published_cases"):
        for case in q["published_cases"]:
            run = case["runs"][0]
            out.append(
                (
                    f"4 rate-limit fidelity, published {case['limit']} ({case['pages']} pages)",
                    f"sync ÷ bound {case['ratio_median']}, utilization {_pct(case['utilization_median'])}, "
                    f"{case['http_429_total']} × 429, peak {case['peak_max']} per window",
                    "≤ 1.05, zero 429s",
                    _ok(case["ratio_median"], lambda v: v <= 1.05 and case["http_429_total"] == 0),
                    f"time before the first call {run['created_to_first_call_s']} s, after the "
                    f"last {run['last_call_to_finished_s']} s; the rest is waiting for windows",
                )
            )
        u = q["unpublished"]
        aw = u["cold_after_warm_up"]
        out.append(
            (
                f"4 rate-limit fidelity, adaptive (hidden {u['limit']})",
                f"after warm-up {_pct(aw['utilization_median'])} used, {_pct(aw['rejected_share_median'])} "
                f"rejected; warm re-sync {_pct(u['warm_resync']['utilization_median'])} used, "
                f"{_pct(u['warm_resync']['rejected_share_median'])} rejected; whole cold sync "
                f"{_pct(u['cold_whole_sync']['utilization_median'])}",
                "≥ 85 %, ≤ 2 % rejected",
                _ok(
                    aw["utilization_median"],
                    lambda v: v >= 0.85 and (aw["rejected_share_median"] or 0) <= 0.02,
                ),
                "the ramp before the first rejection (cold) and the 0.9× cut after one",
            )
        )
    out.extend(announced_rows(b.get("announced") or {}))
    out.extend(federation_rows(b.get("federation") or {}))
    if (i := b.get("isolation")) and i.get("cases"):
        cases, ratios = i["cases"], i["ratios"]
        text = "; ".join(f"({k}) p99 {v['median_of_runs']['p99']} s" for k, v in cases.items())
        ba = ratios.get("(b)/(a)", {}).get("p99")
        runs = len(cases.get("a", {}).get("runs", []))
        others = [
            r.get("cpu", {}).get("others_cores_mean") for c in cases.values() for r in c["runs"]
        ]
        others = [o for o in others if o is not None]
        out.append(
            (
                f"5 isolation (median of {runs} runs)",
                f"{text}; (b)/(a) {ba}",
                "(b)/(a) ≤ 1.2 at p99",
                _ok(ba, lambda v: v <= 1.2),
                f"CPU: two cores shared by every process (other processes on the machine used "
                f"{max(others) if others else '?'} cores at most, on average)",
            )
        )
    if (pe := b.get("peer")) and pe.get("whale_under_limit"):
        out += peer_rows(b, pe)
    if (g := b.get("ingest")) and "steps" in g:
        steps = ", ".join(
            f"{s['connections']}c {s['requests_per_s']}/s p99 {s['latency_ms'].get('p99')} ms"
            for s in g["steps"]
        )
        best = g["requests_per_s_at_p99_limit"]
        out.append(
            (
                "7 webhook ingestion (gunicorn, wrk)",
                f"{best} webhooks/s with p99 ≤ 50 ms ({steps})",
                "≥ 800/s",
                _ok(best, lambda v: v >= 800),
                describe(g.get("profile", {})),
            )
        )
    if (m := b.get("memory")) and m.get("small"):
        out.append(
            (
                "8 memory: page worker peak RSS",
                f"{m['small']['peak_rss_mib']} MiB ({m['small']['connections']:,}) vs "
                f"{m['large']['peak_rss_mib']} MiB ({m['large']['connections']:,}): +{m['peak_rss_growth_mib']} MiB; "
                f"Redis {m['redis_bytes_per_connection']} bytes per stored connection",
                "growth < 10 MB",
                _ok(m["peak_rss_growth_mib"], lambda v: v < 10),
                describe(m.get("profile", {})),
            )
        )
    if (s := b.get("scaling")) and s.get("rows"):
        out.append(
            (
                "9 scaling (prefork page workers)",
                ", ".join(
                    f"{r['processes']}: {r['pages_per_s']} pages/s (×{r['speed_up']})"
                    for r in s["rows"]
                ),
                "–",
                "–",
                "the 2 cores: simulator, Redis and web share them with the workers",
            )
        )
    if (sim := b.get("simulator")) and "requests_per_second_median" in sim:
        out.append(
            (
                "simulator (context)",
                f"{sim['requests_per_second_median']} GitHub pages/s",
                "–",
                "–",
                "aiohttp on one core",
            )
        )
    if (n := b.get("networks")) and n.get("finalization"):
        final = "; ".join(
            f"{f['size']:,}: first {f['first_sync']['finalize_s']} s, re-sync "
            f"{f['resync_1pct']['finalize_s']} s"
            for f in n["finalization"]
        )
        out.append(
            (
                "10 PostgreSQL networks: finalization (one transaction, COPY)",
                final,
                "–",
                "–",
                "reading the staging from Redis in Python and feeding COPY",
            )
        )
        stored = n.get("storage", {})
        out.append(
            (
                "10 bytes per stored connection (PostgreSQL, with indexes)",
                f"{stored.get('bytes_per_connection_total')} B (Redis before: 180 B); Redis "
                f"staging keys left after final: {n.get('redis_staging_keys_left_after_final')}",
                "no network data left in Redis",
                _ok(n.get("redis_staging_keys_left_after_final"), lambda v: v == 0),
                "–",
            )
        )
    if (st := b.get("streams")) and st.get("latency"):
        lat = "; ".join(
            f"{r['rate_asked']}/s: p50 {r['p50_s']} s, p99 {r['p99_s']} s "
            f"({r['arrived']}/{r['events']} arrived)"
            for r in st["latency"]
        )
        worst = max(r["p99_s"] or 99 for r in st["latency"])
        out.append(
            (
                "11 streams: pushed change → feed entry (Jetstream)",
                lat,
                "p99 < 2 s",
                _ok(worst, lambda v: v < 2),
                "the feed poll (20 ms) and the 50 ms batch window",
            )
        )
        h = st.get("holding", {})
        if h:
            out.append(
                (
                    "11 streams: one process holding Mastodon streams + Jetstream + X",
                    f"{h['mastodon_streams']:,} streams: RSS {h['rss_mib']} MiB "
                    f"({h['per_stream_kib']} KiB a stream over {h['baseline_rss_mib']} MiB), "
                    f"idle CPU {h['idle_cpu_percent']} %; 100,000 → "
                    f"{h['projection_100k']['rss_gib']} GiB, "
                    f"{h['projection_100k']['idle_cpu_cores']} cores",
                    "–",
                    "–",
                    "heartbeats of every stream (Mastodon beats each 15 s)",
                )
            )
    if (fr := b.get("freshness")) and fr.get("streams"):
        out.append(
            (
                f"11 cost of freshness, a simulated day ({fr['users']} X users of "
                f"{fr['followers']:,})",
                f"full hourly ${fr['full_hourly']['usd']:,}; incremental hourly "
                f"${fr['incremental_hourly']['usd']:,} (networks = truth "
                f"{fr['incremental_hourly']['networks_equal_truth']}); streams + a daily full "
                f"${fr['streams']['usd']:,} (events ${fr['streams']['usd_events_only']}), "
                f"= truth {fr['streams']['networks_equal_truth']}",
                "–",
                "–",
                "the daily verifying full sync",
            )
        )
    if (m := b.get("modes")) and m.get("providers"):
        out += modes_rows(m)
    return out


def modes_rows(m: dict) -> list[tuple]:
    """Issue 19's goals: GitHub unchanged at 0 counted calls, heads ≤ 1.2 × the physical
    minimum, X +1 % ≤ 2 % of a full re-read's dollars; and the cache's bytes."""
    out, p = [], m["providers"]
    if gh := p.get("github"):
        unchanged, full = gh["phases"]["unchanged"], gh["phases"]["removed_0_1pct_full"]
        added = gh["phases"]["added_1pct"]
        cache = gh.get("conditional_cache", {})
        out.append(
            (
                f"19 GitHub re-sync, nothing changed ({m['size']:,})",
                f"{unchanged['counted_calls']} counted calls of {unchanged['calls']} "
                f"({unchanged['not_modified']} × 304; full re-read {full['counted_calls']}); "
                f"cache {cache.get('bytes_per_connection')} B/connection in Redis",
                "0 counted calls",
                _ok(unchanged["counted_calls"], lambda v: v == 0),
                "–",
            )
        )
        out.append(
            (
                "19 GitHub re-sync, +1 %",
                f"{added['counted_calls']} counted calls of {added['calls']} (minimum "
                f"{added.get('physical_minimum_counted_calls')}: the moved page and the profile)",
                "≤ 1.2 × the pages changed + 1",
                _ok(added.get("counted_vs_minimum"), lambda v: v <= 1.2),
                "–",
            )
        )
    for name in ("twitter", "bluesky", "mastodon"):
        if name not in p:
            continue
        added = p[name]["phases"]["added_1pct"]
        out.append(
            (
                f"19 {name} head re-sync, +1 %",
                f"{added['calls']} calls (minimum {added['physical_minimum_calls']}: "
                f"{added['calls_vs_minimum']}×; with the known connection a head must "
                f"meet: {added.get('minimum_with_a_known_connection')}, "
                f"{added.get('calls_vs_minimum_with_a_known_connection')}×)",
                "≤ 1.2 × ⌈changed ÷ page⌉ + 1",
                _ok(added["calls_vs_minimum"], lambda v: v <= 1.2),
                "–",
            )
        )
    if tw := p.get("twitter"):
        added, full = tw["phases"]["added_1pct"], tw["phases"]["removed_0_1pct_full"]
        out.append(
            (
                "19 X re-sync +1 %: dollars against a full re-read",
                f"${added['usd']:.2f} of ${full['usd']:.2f} ({added.get('usd_share_of_full', 0):.2%})",
                "≤ 2 %",
                _ok(added.get("usd_share_of_full"), lambda v: v <= 0.02),
                "–",
            )
        )
    return out


def peer_rows(b: dict, pe: dict) -> list[tuple]:
    out = []
    whale = pe["whale_under_limit"]
    ours = next(
        (c for c in b.get("quota", {}).get("published_cases", []) if c["limit"] == whale["limit"]),
        None,
    )
    if ours:
        ns_seconds = ours["runs"][0]["seconds"]
        out.append(
            (
                f"6 vs peer: whale under published {whale['limit']}",
                f"sync time netsync {ns_seconds} s ÷ peer {whale['seconds']} s = "
                f"{round(ns_seconds / whale['seconds'], 2)}; 429s netsync {ours['http_429_total']} "
                f"vs peer {whale['http_429']}",
                "–",
                "–",
                "peer: Celery's rate_limit limits task starts, not calls: it learns the limit from 429s",
            )
        )
    beside, iso_b = pe["beside_whales"], b.get("isolation", {}).get("cases", {}).get("b")
    if iso_b:
        ns = iso_b["median_of_runs"]["p99"]
        out.append(
            (
                "6 vs peer: normal p99 beside 3 whales",
                f"netsync {ns} s ÷ peer {beside['p99_s']} s = {round(ns / beside['p99_s'], 2)} "
                f"(peer p50 {beside['p50_s']} s, {beside['unfinished']} unfinished)",
                "–",
                "–",
                "peer: a sync pages one call at a time in one task; whales hold slots for minutes",
            )
        )
    kill = pe.get("killed_mid_whale")
    if kill:
        ns, peer = kill["netsync"], kill["peer"]
        out.append(
            (
                "6 vs peer: worker killed mid-whale",
                f"lost {ns['lost']} vs {peer['lost']}, extra {ns['extra']} vs {peer['extra']}, "
                f"pages fetched again {ns['pages_fetched_again']} vs {peer['pages_fetched_again']}, "
                f"complete {ns['seconds_to_complete_after_kill']} s vs "
                f"{peer['seconds_to_complete_after_kill']} s after the kill (netsync vs peer)",
                "–",
                "–",
                "both wait for the visibility timeout + kombu's restore sweep (~100 s)",
            )
        )
    return out


def hotpath_lines(h: dict) -> list[str]:
    d, e, r = h["decode_page_body"], h["encode_page_connections"], h["redis_round_trip"]
    return [
        "**What each hot-path change buys** (per call, in one process, same run, median of "
        f"{h['repeats']} rounds; `bench/hotpath.py`):",
        "",
        "| change | before | after |",
        "|---|---|---|",
        f"| orjson decodes a GitHub page (100 followers, {d['github_page_100']['bytes']:,} B) | "
        f"{d['github_page_100']['json_loads_us']} µs | {d['github_page_100']['orjson_loads_us']} µs |",
        f"| orjson decodes a Twitter/X page (1,000 ids, {d['twitter_page_1000']['bytes']:,} B) | "
        f"{d['twitter_page_1000']['json_loads_us']} µs | {d['twitter_page_1000']['orjson_loads_us']} µs |",
        f"| orjson encodes a page's connections for the store (100 / 1,000) | "
        f"{e['github_100']['json_dumps_us']} / {e['twitter_1000']['json_dumps_us']} µs | "
        f"{e['github_100']['orjson_dumps_us']} / {e['twitter_1000']['orjson_dumps_us']} µs |",
        f"| hiredis parses a Redis reply (HGETALL of a 20-field record, round trip) | "
        f"{r['python_parser_hgetall_us']} µs | {r['hiredis_hgetall_us']} µs |",
        f"| (for scale) kombu serializes a page task's message | "
        f"{h['celery_message']['kombu_json_task_body_us']} µs | unchanged |",
    ] + pipeline_ab_lines(h)


def pipeline_ab_lines(h: dict) -> list[str]:
    ab = h.get("pipeline_ab")
    if not ab:
        return []
    (before_name, before), (after_name, after) = ab["variants"].items()
    return [
        "",
        f"Whole pipeline, {ab['scenario']}: {before_name} {before['pages_per_s_median']} "
        f"pages/s (runs {before['pages_per_s_runs']}), {after_name} {after['pages_per_s_median']} "
        f"pages/s (runs {after['pages_per_s_runs']}): ×{ab['gain']}.",
    ]


def markdown(figures: dict) -> str:
    b = figures.get("benchmarks", {})
    kind = "quick run (smaller workloads, once each)" if figures.get("quick") else "full run"
    lines = [
        f"# netsync benchmarks — {kind}",
        "",
        f"Run at {figures.get('started_at')} on {figures.get('machine', {}).get('cpus')} cores "
        f"(load average at start {figures.get('machine', {}).get('load_avg_1m_at_start')}); "
        f"{figures.get('total_seconds')} s in all"
        + (
            f"; re-run at {figures['updated']['at']}: {', '.join(figures['updated']['only'])}"
            if figures.get("updated")
            else ""
        )
        + ". Every figure: `bench/results/figures.json`.",
        "",
        "| figure | measured | goal | met | largest remaining cost (profile) |",
        "|---|---|---|---|---|",
    ]
    for row in rows(b):
        lines.append("| " + " | ".join(str(x).replace("|", "/") for x in row) + " |")
    if (h := b.get("hotpath")) and "decode_page_body" in h:
        lines += ["", *hotpath_lines(h)]
    errors = [name for name, v in b.items() if isinstance(v, dict) and "error" in v]
    if errors:
        lines += ["", f"Failed in this run: {', '.join(errors)} (traceback in figures.json)."]
    lines += ["", "Plots: " + ", ".join(f"`{Path(p).name}`" for p in figures.get("plots", [])), ""]
    return "\n".join(lines)


def write(figures: dict) -> str:
    text = markdown(figures)
    (RESULTS / "report.md").write_text(text + "\n")
    return text


def main() -> str:
    figures = json.loads((RESULTS / "figures.json").read_text())
    text = write(figures)
    print(text)
    return text


if __name__ == "__main__":
    main()
