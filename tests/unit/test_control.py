"""Kill switches, the delayed set's ops helpers, and an outbox that outlives a Redis restart."""

from __future__ import annotations

import redis

from service.api import waiting_view
from state.control import PAUSE_RECHECK_S, ProviderSwitches, provider_gate
from state.delayed import DelayedSet
from state.embedded_redis import EmbeddedRedis
from state.outbox import CallbackOutbox, Delivery


def test_a_paused_provider_gates_its_calls_until_resumed(redis_client, key_prefix):
    switches = ProviderSwitches(redis_client, key_prefix, clock=lambda: 100.0)
    assert provider_gate(switches, "github") == 0.0
    assert switches.pause("github", "outage") is True
    assert switches.pause("github", "again") is False
    assert provider_gate(switches, "github") == PAUSE_RECHECK_S
    assert provider_gate(switches, "twitter") == 0.0
    assert switches.paused() == {"github": {"at": 100.0, "reason": "outage"}}
    assert switches.resume("github") is True and switches.resume("github") is False
    assert provider_gate(switches, "github") == 0.0


def test_delayed_entries_can_be_listed_dropped_and_made_due(redis_client, key_prefix):
    now = [1000.0]
    delayed = DelayedSet(redis_client, key_prefix, clock=lambda: now[0])
    a = delayed.park("github.page", ["s_1", "c"], {}, "normal", 60, reason="provider_paused")
    b = delayed.park("github.page", ["s_2", "c"], {}, "normal", 60, reason="quota")
    assert {e.id for e in delayed.entries()} == {a, b}
    assert delayed.claim_due() == []
    assert delayed.make_due([a]) == 1
    assert [e.id for e in delayed.claim_due()] == [a]
    assert delayed.drop([b]) == 1 and delayed.size() == 1
    delayed.release(a)
    assert delayed.make_due([a]) == 0  # a released entry is not revived


def test_waiting_view_says_why_an_active_sync_waits():
    running = {"status": "running", "wait_reason": "quota", "wait_until": "200"}
    assert waiting_view(running, False, now=100)["reason"] == "quota"
    assert waiting_view(running, False, now=300) is None
    assert waiting_view(running, True, now=300) == {"reason": "provider_paused", "until": None}
    assert waiting_view({**running, "status": "succeeded"}, True, now=100) is None


def test_a_pending_delivery_survives_a_redis_restart(tmp_path):
    server = EmbeddedRedis(tmp_path, persist=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("appendfsync", "always")
        CallbackOutbox(client, "p").add(
            Delivery(
                id="s_1.sync.succeeded",
                event="sync.succeeded",
                sync_id="s_1",
                provider="github",
                body="{}",
                created_at=1.0,
            )
        )
    finally:
        server.process.kill()  # a crash, not a clean shutdown: the append-only file holds it
        server.process.wait()
    server.start()
    try:
        delivery = CallbackOutbox(redis.Redis.from_url(server.url), "p").get("s_1.sync.succeeded")
        assert delivery is not None and delivery.state == "pending"
    finally:
        server.stop()


def test_a_cached_switch_reads_redis_at_most_once_per_period(redis_client, key_prefix):
    switches = ProviderSwitches(redis_client, key_prefix, cache_s=60)
    assert switches.is_paused("github") is False
    ProviderSwitches(redis_client, key_prefix).pause("github")
    assert switches.is_paused("github") is False  # still the set read a moment ago
    switches._cached = None  # the period is over
    assert switches.is_paused("github") is True
    ProviderSwitches(redis_client, key_prefix).resume("github")
    assert switches.is_paused("github") is False  # a resume is seen at once
