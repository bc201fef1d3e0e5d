"""A page task's first round trip (``sync.context.load``) against a real Redis.

It sends the sync's snapshot, the breaker's verdict and, for a sync this
process has called for before, the quota take of its first bucket, in one
round trip; a take that no call uses is given back.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis.connection
from celery import Celery

from providers.github import GitHub
from state.breaker import CircuitBreaker
from state.control import ProviderSwitches
from state.credentials import Credential, CredentialStore
from state.quota import QuotaConfig, QuotaGate
from state.store import SyncStore
from sync.memory import WorkerMemory
from sync.tasks import PageTask

KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1kby1ub3QtdXNlLSE="


class GitHubPage(PageTask):
    name = "test.github.page"
    provider_class = GitHub


@pytest.fixture
def world(redis_client, key_prefix):
    svc = SimpleNamespace(
        store=SyncStore(redis_client, key_prefix),
        breaker=CircuitBreaker(redis_client, key_prefix),
        quota=QuotaGate(redis_client, key_prefix, QuotaConfig.from_env({})),
        switches=ProviderSwitches(redis_client, key_prefix, cache_s=60.0),
        credentials=CredentialStore(redis_client, key_prefix, (KEY,)),
        settings=SimpleNamespace(api_url=lambda name: "http://127.0.0.1:1"),
        redis=redis_client,
        memory=WorkerMemory(),
    )
    app = Celery("test-page-round-trips")
    app.netsync_services = svc
    task = GitHubPage()
    task.bind(app)
    svc.credentials.save("github", "u", Credential("octo", "tok-secret"))
    sync_id = svc.store.begin_sync(
        user_id="u",
        provider="github",
        relation="followers",
        account_id="octo",
        queue="normal",
        trigger="test",
        force=True,
        freshness_s=0,
        stale_s=3600,
    ).sync_id
    svc.store.add_pending(sync_id, "", ["p0", "p1"])
    scopes = {"token": Credential("octo", "tok-secret").fingerprint()}
    return SimpleNamespace(svc=svc, task=task, sync_id=sync_id, scopes=scopes, client=redis_client)


def quota_used(world) -> int:
    key = world.svc.quota.buckets("github", world.scopes)[0].redis_key
    return sum(int(v) for f, v in world.client.hgetall(key).items() if f.startswith(b"s"))


def hint(world) -> None:
    """What a call of this sync in this process left behind (``sync.outbound.take_quota``)."""
    world.svc.memory.remember_quota(world.sync_id, world.scopes, "normal")


def test_one_round_trip_before_the_call(world, monkeypatch):
    hint(world)
    world.task.load(world.sync_id, "p0").settle()  # warm-up: sync index cached, scripts known
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(
        redis.connection.AbstractConnection,
        "send_packed_command",
        lambda self, command, check_health=True: (
            sent.append(command),
            original(self, command, check_health),
        )[1],
    )
    ctx = world.task.load(world.sync_id, "p0")
    assert len(sent) == 1
    assert ctx.record["sync_id"] == world.sync_id and ctx.prefetched is not None
    assert ctx.peeked_verdict.value.verdict == "closed"
    assert ctx.credential.fingerprint() == world.scopes["token"]
    ctx.settle()


def test_no_take_before_this_process_called_for_the_sync(world):
    ctx = world.task.load(world.sync_id, "p0")
    assert ctx.prefetched is None and quota_used(world) == 0


def test_a_take_no_call_used_is_given_back(world):
    hint(world)
    ctx = world.task.load(world.sync_id, "p0")
    assert quota_used(world) == 1
    ctx.settle()  # e.g. the provider was paused meanwhile: no call
    assert quota_used(world) == 0


def test_a_redelivered_stored_page_gives_its_take_back(world):
    world.svc.store.complete_page(world.sync_id, "p0", [("1", "a")])
    hint(world)
    assert world.task.load(world.sync_id, "p0") is None
    assert quota_used(world) == 0


def test_an_ended_sync_gives_its_take_back(world):
    world.svc.store.fail(world.sync_id, "cancelled", "cancelled", "by an operator")
    hint(world)
    assert world.task.load(world.sync_id, "p1") is None
    assert quota_used(world) == 0


def test_no_take_while_the_provider_is_paused(world):
    hint(world)
    world.svc.switches.pause("github", "maintenance")
    ctx = world.task.load(world.sync_id, "p0")
    assert ctx.prefetched is None and quota_used(world) == 0
