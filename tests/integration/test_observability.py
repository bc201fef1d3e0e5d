"""Sentry, metrics and logs as the running processes produce them.

Sentry: the ops stack's processes send to a stand-in ingest endpoint in the
test process (``SentryReceiver``: a real HTTP transport, the SDK unchanged).
"""

from __future__ import annotations

import json

import requests

from queues import is_redis_broker
from service.config import DEV_API_TOKEN
from tests.integration.conftest import new_user
from tests.integration.test_operations import parked_of, wait_until


def record_key(stack, provider: str, user: str, sync_id: str) -> str:
    return f"netsync:{{{provider}:{user}}}:sync:{sync_id}"


def test_an_internal_error_in_a_worker_reaches_sentry_tagged_and_without_tokens(ops_stack):
    # First an expected provider failure (503 until the retries run out): not a Sentry event.
    broken = ops_stack.add_account("github", 5)
    ops_stack.add_faults({"kind": "outage", "provider": "github", "token": broken["token"]})
    expected_sync = ops_stack.login(new_user(), broken).json()["syncs"][0]["sync_id"]
    assert ops_stack.wait_final(expected_sync)["status"] == "failed"

    # Then our own bug: a sync record corrupted under a parked task (an unknown queue
    # class makes the quota gate raise ValueError inside the worker).
    ops_stack.pause("mastodon")
    try:
        user, account = new_user(), ops_stack.add_account("mastodon", 20)
        sync_id = ops_stack.login(user, account).json()["syncs"][0]["sync_id"]
        wait_until(lambda: parked_of(ops_stack, sync_id), what="parked call")
        ops_stack.redis().hset(record_key(ops_stack, "mastodon", user, sync_id), "queue", "bogus")
    finally:
        ops_stack.resume("mastodon")
    final = ops_stack.wait_final(sync_id)
    assert (final["status"], final["error"]["kind"]) == ("failed", "internal_error")

    event = ops_stack.sentry.wait_for(lambda e: e.get("tags", {}).get("sync_id") == sync_id)
    tags = event["tags"]
    assert (tags["provider"], tags["queue"]) == ("mastodon", "bogus")
    assert "relation" in tags
    values = [frame for exc in event["exception"]["values"] for frame in [exc["type"]]]
    assert "ValueError" in values
    text = json.dumps(event)
    assert account["token"] not in text and broken["token"] not in text
    assert "request" not in event or "data" not in event.get("request", {})
    # the expected failure, finished before, sent nothing
    everything = json.dumps(ops_stack.sentry.events)
    assert expected_sync not in everything


def scrape(stack) -> dict:
    """Every sample of ``/metrics``, parsed: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{stack.web}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels) -> float:
    """Sum of a sample's series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, series), value in samples.items()
        if sample == name and wanted <= set(series)
    )


def test_metrics_move_while_a_sync_runs_across_processes(ops_stack):
    before = scrape(ops_stack)
    user, account = new_user(), ops_stack.add_account("github", 6_000)
    ops_stack.add_faults(
        {
            "kind": "latency",
            "provider": "github",
            "token": account["token"],
            "mean": 150,
            "jitter": 10,
        }
    )
    sync_id = ops_stack.login(user, account).json()["syncs"][0]["sync_id"]
    wait_until(lambda: ops_stack.sync(sync_id)["pages_fetched"] >= 3, what="pages stored")
    during = scrape(ops_stack)
    assert ops_stack.sync(sync_id)["status"] == "running"
    pages = "netsync_pages_fetched_total"
    assert total(during, pages, provider="github") > total(before, pages, provider="github")
    wait_until(
        lambda: (
            total(scrape(ops_stack), pages, provider="github")
            > total(during, pages, provider="github")
        ),
        what="pages counter moving",
    )
    assert ops_stack.wait_final(sync_id)["status"] == "succeeded"
    ops_stack.receiver.wait_for(user, 1)
    after = wait_until(
        lambda: (
            (s := scrape(ops_stack))
            and total(s, "netsync_callback_deliveries_total", outcome="delivered")
            > total(before, "netsync_callback_deliveries_total", outcome="delivered")
            and s
        ),
        what="the callback counted",
    )

    def grew(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("netsync_syncs_started_total", provider="github", trigger="webhook") >= 1
    assert grew("netsync_syncs_finished_total", provider="github", status="succeeded") >= 1
    assert grew(pages, provider="github") >= 60
    assert grew("netsync_provider_answers_total", provider="github", action="ok") >= 61
    assert grew("netsync_sync_duration_seconds_count", provider="github") >= 1
    assert grew("netsync_sync_duration_seconds_bucket", provider="github", le="+Inf") >= 1
    assert grew("netsync_trigger_to_first_call_seconds_count", provider="github") >= 1
    gauges = [
        "netsync_provider_paused",
        "netsync_callbacks",
        "netsync_quota_allowed",
        "netsync_delayed_tasks",
    ]
    if is_redis_broker(ops_stack.dev.base_env["CELERY_BROKER_URL"]):
        gauges += ["netsync_queue_depth", "netsync_queue_length"]  # read from the broker's lists
    for gauge in gauges:
        assert any(name == gauge for name, _ in after), gauge
    assert after[("netsync_redis_up", ())] == 1


def shared_quota_used(stack, provider: str, scope: str) -> tuple[int, float]:
    """Calls in a shared quota bucket's window, as the dashboard and ``/metrics`` show them."""
    state = requests.get(
        f"{stack.web}/dashboard/state.json",
        headers={"Authorization": f"Bearer {DEV_API_TOKEN}"},
        timeout=10,
    ).json()
    (row,) = [q for q in state["quotas"] if (q["provider"], q["scope"]) == (provider, scope)]
    return sum(row["used"].values()), total(
        scrape(stack), "netsync_quota_used", provider=provider, scope=scope
    )


def test_a_workers_quota_takes_show_on_the_dashboard_and_in_metrics(ops_stack):
    """The worker takes Facebook's app-wide bucket under the key the readers read
    (``state.quota.SHARED_KEYS``): each call of the sync moves both figures."""
    board_before, metrics_before = shared_quota_used(ops_stack, "facebook", "app")
    user, account = new_user(), ops_stack.add_account("facebook", 120)
    sync_id = ops_stack.login(user, account).json()["syncs"][0]["sync_id"]
    record = ops_stack.wait_final(sync_id)
    assert record["status"] == "succeeded" and record["calls"] >= 2, record
    board_after, metrics_after = shared_quota_used(ops_stack, "facebook", "app")
    # the bucket's window is an hour: no call of this test has left it
    assert board_after - board_before >= record["calls"]
    assert metrics_after - metrics_before >= record["calls"]
