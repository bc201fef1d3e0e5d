"""Sentry, metrics and logs as the running processes produce them.

Sentry: the ops stack's processes send to a stand-in ingest endpoint in the
test process (``SentryReceiver``: a real HTTP transport, the SDK unchanged).
"""
from __future__ import annotations

import json

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
    ops_stack.cli("providers", "pause", "mastodon")
    try:
        user, account = new_user(), ops_stack.add_account("mastodon", 20)
        sync_id = ops_stack.login(user, account).json()["syncs"][0]["sync_id"]
        wait_until(lambda: parked_of(ops_stack, sync_id), what="parked call")
        ops_stack.redis().hset(record_key(ops_stack, "mastodon", user, sync_id), "queue", "bogus")
    finally:
        ops_stack.cli("providers", "resume", "mastodon")
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
