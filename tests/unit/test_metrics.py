"""Redis-backed counters and histograms, rendered as Prometheus text and parsed back."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import counter_families, histogram_families
from state.metrics import Metrics

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


class Families:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        yield from counter_families(self.metrics.raw())
        yield from histogram_families(self.metrics.raw_histograms())


def samples(metrics: Metrics) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(metrics))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_cumulative_with_sum_and_count(redis_client, key_prefix):
    metrics = Metrics(redis_client, key_prefix)
    for value in (0.3, 0.7, 0.7, 4.0, 99999.0):
        metrics.observe("sync_duration_seconds", value, (0.5, 1, 5), provider="github")
    got = samples(metrics)

    def bucket(le):
        return got[("netsync_sync_duration_seconds_bucket", (("le", le), ("provider", "github")))]

    assert (bucket("0.5"), bucket("1.0"), bucket("5.0"), bucket("+Inf")) == (1, 3, 4, 5)
    assert got[("netsync_sync_duration_seconds_count", (("provider", "github"),))] == 5
    assert (
        abs(got[("netsync_sync_duration_seconds_sum", (("provider", "github"),))] - 100004.7) < 1e-6
    )


def test_counters_in_one_round_trip_keep_their_labels(redis_client, key_prefix):
    metrics = Metrics(redis_client, key_prefix)
    metrics.count_many(
        [
            ("provider_answers", {"provider": "github", "action": "ok"}),
            ("pages_fetched", {"provider": "github", "queue": "normal"}),
        ]
    )
    metrics.count("provider_answers", provider="github", action="ok")
    got = samples(metrics)
    assert got[("netsync_provider_answers_total", (("action", "ok"), ("provider", "github")))] == 2
    assert got[("netsync_pages_fetched_total", (("provider", "github"), ("queue", "normal")))] == 1


def test_instance_labels_name_the_busiest_instances_and_sum_the_rest(redis_client, key_prefix):
    """Federated providers have unboundedly many instances: the metrics name the
    ``per_provider`` busiest, and every other instance's answers add up in ``other``."""
    from sync.telemetry import count_answer

    metrics = Metrics(redis_client, key_prefix)
    for n in range(6):  # instance n answers n + 1 times
        for _ in range(n + 1):
            count_answer(metrics, "mastodon", "normal", None, page=True, instance=f"i{n}.example")
    count_answer(metrics, "bluesky", "normal", None, page=True, instance="pds.example/x")
    busiest = metrics.busiest_instances(per_provider=3)
    assert busiest == {
        "mastodon": ["i5.example", "i4.example", "i3.example"],
        "bluesky": ["pds.example/x"],
    }

    class Folded:
        def collect(self):
            yield from counter_families(metrics.raw(), busiest)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Folded())
    got = {
        s.labels["instance"]: s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name == "netsync_instance_answers_total" and s.labels["provider"] == "mastodon"
    }
    assert got == {"i5.example": 6, "i4.example": 5, "i3.example": 4, "other": 1 + 2 + 3}
