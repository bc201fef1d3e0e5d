"""state.batch: several state objects' steps in one round trip (real Redis)."""

from __future__ import annotations

import pytest
import redis
import redis.connection

from state.batch import Batch
from state.breaker import CircuitBreaker
from state.metrics import Metrics
from state.quota import QuotaConfig, QuotaGate
from state.store import SyncStore
from tests.conftest import ManualClock
from tests.quota_helpers import acquire, fingerprint

FP = fingerprint("tok-batch")


@pytest.fixture
def round_trips(monkeypatch):
    """Counts what this process sends to Redis: one send, one round trip."""
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return sent


def begin(store: SyncStore) -> str:
    ticket = store.begin_sync(
        user_id="u",
        provider="github",
        relation="followers",
        account_id="a",
        queue="normal",
        trigger="test",
        force=True,
        freshness_s=0,
        stale_s=3600,
    )
    store.add_pending(ticket.sync_id, "", ["p0"])
    return ticket.sync_id


def bucket_calls(client, gate: QuotaGate, scopes: dict) -> int:
    key = gate.buckets("github", scopes)[0].redis_key
    return sum(int(v) for f, v in client.hgetall(key).items() if f.startswith(b"s"))


def test_the_snapshot_the_verdict_and_a_take_are_one_round_trip(
    redis_client, key_prefix, round_trips
):
    store = SyncStore(redis_client, key_prefix)
    breaker = CircuitBreaker(redis_client, key_prefix)
    gate = QuotaGate(redis_client, key_prefix, QuotaConfig.from_env({}))
    sync_id = begin(store)
    store.get_sync(sync_id)  # the sync index is read (and cached) once per sync and process
    breaker.allow("github")  # Redis knows both scripts already (else: NOSCRIPT, sent again)
    acquire(gate, "github", {"token": fingerprint("tok-other")}, "normal")
    batch = Batch(redis_client)
    snapshot = store.queue_snapshot(batch, sync_id, "p0")
    verdict = breaker.queue_peek(batch, "github")
    first = gate.queue_take_first(batch, "github", {"token": FP}, "normal")
    round_trips.clear()
    batch.execute()
    assert len(round_trips) == 1
    record, done, blob = snapshot.value
    assert record["sync_id"] == sync_id and done is False and blob is None
    assert verdict.value.verdict == "closed"
    assert first.reply.value[0] == 1


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_script_redis_forgot_is_sent_again_with_its_text(redis_client, key_prefix):
    store = SyncStore(redis_client, key_prefix)
    sync_id = begin(store)
    redis_client.script_flush()  # as after a Redis restart
    assert store.complete_page(sync_id, "p0", [("1", "a")]) == "finalize"


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_best_effort_step_never_fails_the_batch_but_others_do(redis_client, key_prefix):
    metrics = Metrics(redis_client, key_prefix)
    wrong_type = f"{key_prefix}:a-string"
    redis_client.set(wrong_type, "x")
    batch = Batch(redis_client)
    batch.add(lambda pipe: pipe.hincrby(wrong_type, "f", 1), best_effort=True)
    metrics.count_many([("pages_fetched", {"provider": "github"})], batch=batch)
    batch.execute()
    assert any(b"pages_fetched" in f for f in metrics.raw())
    batch = Batch(redis_client)
    failing = batch.add(lambda pipe: pipe.hincrby(wrong_type, "f", 1))
    fine = batch.add(lambda pipe: pipe.get(wrong_type), read=lambda replies: replies[0])
    with pytest.raises(redis.ResponseError):
        batch.execute()
    assert fine.value == b"x"
    with pytest.raises(redis.ResponseError):
        failing.value  # noqa: B018


def prefetched_take(redis_client, key_prefix: str, queue_class: str):
    """A gate and its first bucket's take for FP, sent ahead in a batch of its own."""
    gate = QuotaGate(redis_client, key_prefix, QuotaConfig.from_env({}), clock=ManualClock())
    batch = Batch(redis_client)
    first = gate.queue_take_first(batch, "github", {"token": FP}, queue_class)
    batch.execute()
    return gate, first


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_prefetched_take_is_used_once(redis_client, key_prefix):
    gate, first = prefetched_take(redis_client, key_prefix, "whale")
    assert acquire(gate, "github", {"token": FP}, "whale", first=first) == 0.0
    assert bucket_calls(redis_client, gate, {"token": FP}) == 1


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_prefetched_take_no_call_uses_is_given_back(redis_client, key_prefix):
    gate, first = prefetched_take(redis_client, key_prefix, "normal")
    assert bucket_calls(redis_client, gate, {"token": FP}) == 1
    gate.release(first)
    assert bucket_calls(redis_client, gate, {"token": FP}) == 0


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_prefetched_take_for_another_bucket_or_class_is_given_back(redis_client, key_prefix):
    gate = QuotaGate(redis_client, key_prefix, QuotaConfig.from_env({}), clock=ManualClock())
    new_token = {"token": fingerprint("tok-refreshed")}
    batch = Batch(redis_client)
    stale = gate.queue_take_first(batch, "github", {"token": FP}, "normal")
    batch.execute()
    # the token was refreshed meanwhile: the call takes from the new token's bucket
    assert acquire(gate, "github", new_token, "normal", first=stale) == 0.0
    assert bucket_calls(redis_client, gate, {"token": FP}) == 0
    assert bucket_calls(redis_client, gate, new_token) == 1
    batch = Batch(redis_client)
    other_class = gate.queue_take_first(batch, "github", new_token, "normal")
    batch.execute()
    # the sync moved to the whale queue meanwhile: taken again, as a whale
    assert acquire(gate, "github", new_token, "whale", first=other_class) == 0.0
    key = gate.buckets("github", new_token)[0].redis_key
    fields = {
        f.decode().rsplit(":", 1)[1]: int(v)
        for f, v in redis_client.hgetall(key).items()
        if f.startswith(b"s")
    }
    assert fields == {"n": 1, "w": 1}


# also on Redis Cluster, where a batch sends each command as it is queued
@pytest.mark.cluster
def test_a_refused_prefetched_take_says_how_long_to_wait(redis_client, key_prefix):
    clock = ManualClock()
    gate = QuotaGate(
        redis_client, key_prefix, QuotaConfig.from_env({"QUOTA_GITHUB": "1/60/token"}), clock=clock
    )
    assert acquire(gate, "github", {"token": FP}, "normal") == 0.0
    batch = Batch(redis_client)
    first = gate.queue_take_first(batch, "github", {"token": FP}, "normal")
    batch.execute()
    wait = acquire(gate, "github", {"token": FP}, "normal", first=first)
    assert wait > 60 and wait == acquire(gate, "github", {"token": FP}, "normal")
    assert bucket_calls(redis_client, gate, {"token": FP}) == 1
