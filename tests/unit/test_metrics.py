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
