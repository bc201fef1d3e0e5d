"""What the dashboard shows, gathered in one place (also served as JSON).

Everything comes from Redis as the processes left it: sync records, the
broker's lists, the quota buckets, the delayed set, the kill switches and
the callback outbox. Nothing here changes state.
"""

from __future__ import annotations

import time
from collections import Counter

from flask import Flask

from service.api import iso, sync_view
from service.config import PROVIDERS
from service.metrics import _FIELD as _COUNTER
from service.metrics import _LABEL, queue_depths
from state.quota_view import shared_levels
from sync.runtime import Services

#: how many recent syncs are looked at for "in flight" and "recent failures"
RECENT_WINDOW = 300
FAILED_STATUSES = ("failed", "needs_reauth")


def progress(view: dict) -> float | None:
    """Share of the expected connections fetched (None while the size is unknown)."""
    total = view.get("expected_total")
    if not total:
        return 1.0 if view.get("status") in ("succeeded", "partial") else None
    return min(1.0, view["connections_fetched"] / total)


def syncs_sections(svc: Services, paused: dict) -> tuple[list, list]:
    records = svc.store.list_syncs(None, None, RECENT_WINDOW)
    in_flight, failures = [], []
    for record in records:
        view = sync_view(record, record.get("provider") in paused)
        view["progress"] = progress(view)
        if view["status"] in ("queued", "running"):
            in_flight.append(view)
        elif view["status"] in FAILED_STATUSES and len(failures) < 20:
            failures.append(view)
    return in_flight, failures


def parked_section(svc: Services, now: float) -> list[dict]:
    """Parked work grouped by provider and reason: how many, and the next one due."""
    groups: dict[tuple, dict] = {}
    for entry in svc.delayed.entries():
        provider = entry.task_name.split(".", 1)[0]
        group = groups.setdefault(
            (provider, entry.reason),
            {"provider": provider, "reason": entry.reason, "count": 0, "next_due_in_s": None},
        )
        group["count"] += 1
        due_in = max(0.0, entry.due_at - now)
        if group["next_due_in_s"] is None or due_in < group["next_due_in_s"]:
            group["next_due_in_s"] = round(due_in, 1)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["provider"], g["reason"]))


def quota_section(svc: Services, now: float) -> list[dict]:
    rows = []
    for provider in PROVIDERS:
        for level in shared_levels(svc.quota, provider, now):
            rows.append(
                {
                    "provider": provider,
                    "scope": level.scope,
                    "limit": level.limit,
                    "capacity": level.capacity,
                    "window_s": level.window_s,
                    "adaptive": level.adaptive,
                    "used": level.used,
                    "level": round(level.level, 4),
                }
            )
    return rows


def spend_section(svc: Services) -> list[dict]:
    """Each provider's UTC day so far: spent against its budget, and how its calls counted.

    Providers with no price, no budget and no call today are left out.
    """
    rows = []
    spend = svc.settings.spend
    for day in svc.gate.days(PROVIDERS):
        budget, price = spend.budget(day.provider), spend.price(day.provider)
        if not (day.calls or budget is not None or price):
            continue
        rows.append(
            {
                "provider": day.provider,
                "day": day.day,
                "price": price,
                "spent_usd": round(day.spent_usd, 6),
                "reserved_usd": round(day.reserved_usd, 6),
                "budget_usd": budget,
                "level": round(day.spent_usd / budget, 4) if budget else None,
                "calls": day.calls,
                "counted_calls": day.counted_calls,
                "not_modified": day.not_modified,
                "resources": day.resources,
            }
        )
    return rows


def provider_rows(svc: Services, paused: dict) -> list[dict]:
    """Each provider's switch, then the instances of federated ones worth a row of their
    own: the busiest (``Metrics.busiest_instances``) and every paused one."""
    rows = [{"provider": name, "paused": name in paused} for name in PROVIDERS]
    named = {n for n in paused if "@" in n}
    for provider, instances in svc.metrics.busiest_instances().items():
        named.update(f"{provider}@{instance}" for instance in instances)
    rows += [{"provider": name, "paused": name in paused} for name in sorted(named)]
    return rows


def modes_section(svc: Services) -> list[dict]:
    """Per provider: syncs, calls and dollars by mode, and what the incremental ones saved
    against a full re-read (the ``sync_mode_*`` counters, ``sync.telemetry.count_mode``)."""
    rows: dict[str, dict] = {}
    for field, value in svc.metrics.raw().items():
        match = _COUNTER.match(field.decode())
        if not match or not match.group(1).startswith("sync_mode_"):
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        row = rows.setdefault(labels.get("provider", "-"), {"provider": labels.get("provider")})
        name = match.group(1).removeprefix("sync_mode_")
        key = f"{labels['mode']}_{name}" if "mode" in labels else name
        row[key] = int(value)
    for row in rows.values():
        for key in [k for k in row if k.endswith("usd_micro")]:
            row[key.removesuffix("_micro")] = round(row.pop(key) / 1e6, 6)
        row["usd_saved"] = round(row.pop("usd_saved_micro", 0) / 1e6, 6)
    return [rows[name] for name in sorted(rows)]


def snapshot(app: Flask, svc: Services) -> dict:
    """The whole dashboard as data."""
    now = time.time()
    paused = svc.switches.paused()
    in_flight, failures = syncs_sections(svc, paused)
    depths = queue_depths(app, svc)
    by_status = Counter(view["status"] for view in in_flight)
    return {
        "generated_at": iso(now),
        "paused": [
            {"provider": name, "since": iso(info.get("at")), "reason": info.get("reason")}
            for name, info in sorted(paused.items())
        ],
        "providers": provider_rows(svc, paused),
        "in_flight": in_flight,
        "in_flight_counts": dict(by_status),
        "failures": failures,
        "queues": [
            {
                "queue": name,
                "by_priority": {str(k): v for k, v in steps.items() if v},
                "total": sum(steps.values()),
            }
            for name, steps in depths.items()
        ],
        "queues_known": bool(depths),
        "quotas": quota_section(svc, now),
        "spend": spend_section(svc),
        "modes": modes_section(svc),
        "parked": parked_section(svc, now),
        "callbacks": svc.outbox.counts(),
    }
