"""``/metrics``: Prometheus text from the numbers every process keeps in Redis.

Counters and histograms are written by whoever counts (``state.metrics``:
web, workers, scheduler, CLI, on any machine) and read here at scrape time;
gauges (queue depths, parked work, quota levels, paused providers, the
callback outbox) are read from their own Redis keys at scrape time.
"""

from __future__ import annotations

import re
from collections import Counter

import redis
from flask import Blueprint, Flask, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from service.config import PROVIDERS
from service.extensions import services
from state.metrics import label_value
from state.quota_view import shared_levels

bp = Blueprint("metrics", __name__)

_FIELD = re.compile(r"^(\w+)\{(.*)\}$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

#: help text of the counters netsync increments (others get a generic one)
COUNTER_HELP = {
    "triggers": "Sync triggers by kind (webhook, api, cli, stale) and outcome "
    "(queued, inflight, fresh, no_credentials, invalid)",
    "syncs_started": "Syncs started, by provider, relation, queue and trigger",
    "syncs_finished": "Syncs that reached a final status, by provider, relation, queue, "
    "trigger and status",
    "pages_fetched": "Pages a provider answered, by provider and queue",
    "provider_answers": "Provider answers by provider and the action they led to "
    "(ok, wait, backoff, refresh, reauth, skip, fail, restart)",
    "quota_waits": "Calls parked before they were made, by provider, queue and reason "
    "(quota, provider_paused, a provider's rate limit)",
    "callback_deliveries": "Callback delivery attempts by event and outcome "
    "(delivered, retry, failed)",
    "cancels": "Syncs cancelled by an operator, by where (api, cli)",
    "webhook_deliveries": "Login webhook deliveries by outcome (accepted, replayed, "
    "bad_signature, invalid)",
    "api_auth_failures": "Requests to /v1 refused for a wrong bearer token",
    "stream_changes": "Changes the push channels applied to networks, by provider and kind",
    "stream_disconnects": "Push channel connections closed, by provider and reason "
    "(flood, malformed, token_refused_401, closed, a network error)",
    "stream_gaps": "Push channel outages longer than the channel replays (networks marked "
    "for a full sync), by provider",
    "stream_bad_frames": "Push channel frames that did not parse, by provider",
    "stream_urls_refused": "Push channel URLs a user's instance led to that the public-address "
    "guard refused (nothing sent there), by provider and at (instance, streaming_url, connect)",
    "sync_mode_syncs": "Finalized syncs by provider and mode (full, incremental)",
    "sync_mode_calls": "Provider calls of finalized syncs, by provider and mode",
    "sync_mode_counted_calls": "Calls that used the provider's quota, by provider and mode "
    "(a free 304 does not)",
    "sync_mode_usd_micro": "Micro-USD billed for finalized syncs, by provider and mode",
    "sync_mode_calls_saved": "Counted calls incremental syncs saved against reading the same "
    "network in full (the profile and every page), by provider",
    "sync_mode_usd_saved_micro": "Micro-USD incremental syncs saved against reading the same "
    "network in full, by provider",
    "rate_headers_unreadable": "Provider rate-limit headers that did not parse (ignored for "
    "that answer), by provider and header",
    "instance_answers": "Answers from each instance of a federated provider (Mastodon, "
    "Bluesky) by the action they led to: the busiest instances by name, the rest as other",
}


def counter_families(raw: dict, named_instances: dict | None = None) -> list[CounterMetricFamily]:
    """Prometheus counters from the metrics hash (fields as written by ``count``).

    An ``instance`` label keeps its value only for the instances ``named_instances``
    lists for the series' provider (the busiest: ``Metrics.busiest_instances``); the
    others are summed as ``other``, so the label's values stay bounded.
    """
    named = {
        provider: {label_value(name) for name in names}
        for provider, names in (named_instances or {}).items()
    }
    series: dict[str, dict[tuple, float]] = {}
    for field, value in raw.items():
        match = _FIELD.match(field.decode())
        if match:
            labels = dict(_LABEL.findall(match.group(2)))
            if "instance" in labels and labels["instance"] not in named.get(
                labels.get("provider", ""), ()
            ):
                labels["instance"] = "other"
            points = series.setdefault(match.group(1), {})
            key = tuple(sorted(labels.items()))
            points[key] = points.get(key, 0.0) + float(value)
    families = []
    series = {
        name: [(dict(key), v) for key, v in points.items()] for name, points in series.items()
    }
    for name, points in sorted(series.items()):
        label_names = sorted({key for labels, _ in points for key in labels})
        family = CounterMetricFamily(
            f"netsync_{name}", COUNTER_HELP.get(name, name), labels=label_names
        )
        for labels, value in points:
            family.add_metric([labels.get(key, "") for key in label_names], value)
        families.append(family)
    return families


# -- state gauges ----------------------------------------------------------------
def _broker_redis(app: Flask, svc) -> redis.Redis | None:
    """A client for the broker when it is Redis (the state store's own when shared)."""
    url = app.extensions["celery"].conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    if url == svc.redis_url:
        return svc.redis
    client = app.extensions.get("netsync_broker_redis")
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        app.extensions["netsync_broker_redis"] = client
    return client


def queue_depths(app: Flask, svc) -> dict[str, dict[int, int]]:
    """Messages waiting per queue and priority step on a Redis broker ({} on RabbitMQ).

    kombu's Redis transport keeps one list per priority step: ``name`` for
    step 0 and ``name<sep><step>`` for the others.
    """
    import queues

    client = _broker_redis(app, svc)
    if client is None:
        return {}
    options = app.extensions["celery"].conf.broker_transport_options or {}
    sep = options.get("sep", "\x06\x16")  # kombu's defaults
    steps = options.get("priority_steps", [0, 3, 6, 9])
    names = queues.all_queue_names(svc.settings.provider_regions)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for step in steps:
                pipe.llen(f"{name}{sep}{step}" if step else name)
        lengths = iter(pipe.execute())
    return {name: {step: next(lengths) for step in steps} for name in names}


HISTOGRAM_HELP = {
    "sync_duration_seconds": "From trigger to final status, by provider, queue and status",
    "trigger_to_first_call_seconds": "From trigger to the first provider call, by provider "
    "and queue",
}


def histogram_families(raw: dict) -> list[HistogramMetricFamily]:
    """Prometheus histograms from the histogram hash (``state.metrics.Metrics.observe``)."""
    series: dict[str, dict] = {}
    for field, value in raw.items():
        name_labels, _, part = field.decode().rpartition("|")
        series.setdefault(name_labels, {})[part] = float(value)
    grouped: dict[str, list] = {}
    for name_labels, parts in series.items():
        match = _FIELD.match(name_labels)
        if match:
            grouped.setdefault(match.group(1), []).append(
                (dict(_LABEL.findall(match.group(2))), parts)
            )
    families = []
    for name, points in sorted(grouped.items()):
        label_names = sorted({key for labels, _ in points for key in labels})
        family = HistogramMetricFamily(
            f"netsync_{name}", HISTOGRAM_HELP.get(name, name), labels=label_names
        )
        for labels, parts in points:
            bounds = sorted(float(b) for b in parts if b not in ("sum", "count", "+Inf"))
            running, buckets = 0.0, []
            for bound in bounds:
                running += parts[repr(bound)]
                buckets.append((repr(bound), running))
            buckets.append(("+Inf", parts.get("count", running + parts.get("+Inf", 0))))
            family.add_metric(
                [labels.get(key, "") for key in label_names], buckets, parts.get("sum", 0.0)
            )
        families.append(family)
    return families


def state_gauges(app: Flask, svc):
    """Gauges read from the state at scrape time."""
    yield from queue_gauges(app, svc)
    yield from parked_gauges(svc)
    yield from quota_gauges(svc)
    yield from spend_gauges(svc)
    yield from paused_gauges(svc)
    yield from callback_gauges(svc)


def queue_gauges(app: Flask, svc):
    depth = GaugeMetricFamily(
        "netsync_queue_depth",
        "Messages waiting in a broker queue, by priority step (Redis broker only)",
        labels=["queue", "priority"],
    )
    length = GaugeMetricFamily(
        "netsync_queue_length", "Messages waiting in a broker queue", labels=["queue"]
    )
    for name, steps in queue_depths(app, svc).items():
        length.add_metric([name], sum(steps.values()))
        for step, n in steps.items():
            depth.add_metric([name, str(step)], n)
    yield length
    yield depth


def parked_gauges(svc):
    parked = Counter((e.task_name.split(".", 1)[0], e.reason) for e in svc.delayed.entries())
    family = GaugeMetricFamily(
        "netsync_parked_tasks",
        "Tasks parked in the delayed set, by provider (or netsync) and reason",
        labels=["provider", "reason"],
    )
    for (provider, reason), n in sorted(parked.items()):
        family.add_metric([provider, reason], n)
    yield family
    yield GaugeMetricFamily(
        "netsync_delayed_tasks",
        "Tasks parked in the delayed set until due",
        value=sum(parked.values()),
    )


def paused_gauges(svc):
    paused = svc.switches.paused()
    family = GaugeMetricFamily(
        "netsync_provider_paused",
        "1 while an operator has paused the provider",
        labels=["provider"],
    )
    for provider in PROVIDERS:
        family.add_metric([provider], 1 if provider in paused else 0)
    yield family
    # instances paused one by one (operators name them: as many as they paused)
    instances = GaugeMetricFamily(
        "netsync_instance_paused",
        "1 while an operator has paused one instance of a federated provider",
        labels=["provider", "instance"],
    )
    for name in sorted(n for n in paused if "@" in n):
        provider, _, instance = name.partition("@")
        instances.add_metric([provider, instance], 1)
    yield instances


def callback_gauges(svc):
    family = GaugeMetricFamily(
        "netsync_callbacks", "Callback deliveries kept in the outbox, by state", labels=["state"]
    )
    for state, n in svc.outbox.counts().items():
        family.add_metric([state], n)
    yield family


def quota_gauges(svc):
    used = GaugeMetricFamily(
        "netsync_quota_used",
        "Calls counted in a shared quota's sliding window, by class",
        labels=["provider", "scope", "class"],
    )
    allowed = GaugeMetricFamily(
        "netsync_quota_allowed",
        "Calls per window the gate allows now (adaptive limits: learned)",
        labels=["provider", "scope"],
    )
    level = GaugeMetricFamily(
        "netsync_quota_level",
        "Share of the allowed calls used in the window",
        labels=["provider", "scope"],
    )
    for provider in PROVIDERS:
        for q in shared_levels(svc.quota, provider):
            for cls, n in q.used.items():
                used.add_metric([provider, q.scope, cls], n)
            allowed.add_metric([provider, q.scope], q.capacity)
            level.add_metric([provider, q.scope], q.level)
    yield from (used, allowed, level)


def spend_gauges(svc):
    """Each provider's UTC day: USD spent and reserved, its budget, calls and billed items."""
    spent = GaugeMetricFamily(
        "netsync_spend_usd_today", "USD billed by the provider this UTC day", labels=["provider"]
    )
    reserved = GaugeMetricFamily(
        "netsync_spend_reserved_usd",
        "USD held for calls in flight (their worst case) this UTC day",
        labels=["provider"],
    )
    budget = GaugeMetricFamily(
        "netsync_spend_budget_usd", "BUDGET_<PROVIDER> per UTC day (where set)", labels=["provider"]
    )
    calls = GaugeMetricFamily(
        "netsync_provider_calls_today",
        "Provider calls this UTC day: sent, counted (used the provider's quota), "
        "not_modified (conditional answers that did not)",
        labels=["provider", "kind"],
    )
    items = GaugeMetricFamily(
        "netsync_billed_resources_today",
        "Items the provider bills for, this UTC day",
        labels=["provider"],
    )
    for day in svc.gate.days(PROVIDERS):
        name = day.provider
        spent.add_metric([name], day.spent_usd)
        reserved.add_metric([name], day.reserved_usd)
        if svc.settings.spend.budget(name) is not None:
            budget.add_metric([name], svc.settings.spend.budget(name))
        for kind, n in (
            ("sent", day.calls),
            ("counted", day.counted_calls),
            ("not_modified", day.not_modified),
        ):
            calls.add_metric([name, kind], n)
        items.add_metric([name], day.resources)
    yield from (spent, reserved, budget, calls, items)


class NetsyncCollector:
    """Reads the shared counters, histograms and state gauges at scrape time."""

    def __init__(self, app: Flask, svc):
        self.app, self.svc = app, svc

    def collect(self):
        up = GaugeMetricFamily("netsync_redis_up", "1 if the state store answered this scrape")
        try:
            raw, hist = self.svc.metrics.raw(), self.svc.metrics.raw_histograms()
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from counter_families(raw, self.svc.metrics.busiest_instances())
        yield from histogram_families(hist)
        try:
            gauges = list(state_gauges(self.app, self.svc))
        except (redis.RedisError, OSError):
            return
        yield from gauges


@bp.get("/metrics")
def metrics():
    """Prometheus text: shared counters and histograms, state gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NetsyncCollector(current_app._get_current_object(), services()))
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
