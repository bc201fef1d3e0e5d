"""A page task's first round trip (``sync.context.load``) against a real Redis.

It sends the sync's snapshot, the breaker's verdict and, for a sync this
process has called for before, what the call will take: the configured
quota's first bucket (a provider that announces no limits: LinkedIn), or the
gate's concurrency lease and announced take (GitHub), in one round trip; a
take that no call uses is given back.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis.connection
from celery import Celery

from providers.github import GitHub
from providers.linkedin import LinkedIn
from state.admission import CallGate
from state.announced import Caller
from state.breaker import CircuitBreaker
from state.control import ProviderSwitches
from state.credentials import Credential, CredentialStore
from state.quota import QuotaConfig, QuotaGate
from state.spend_settings import SpendSettings
from state.store import SyncStore
from sync.memory import WorkerMemory
from sync.tasks import PageTask

KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1kby1ub3QtdXNlLSE="


class GitHubPage(PageTask):
    name = "test.github.page"
    provider_class = GitHub


class LinkedInPage(PageTask):
    name = "test.linkedin.page"
    provider_class = LinkedIn


@pytest.fixture(params=["linkedin"])
def world(request, redis_client, key_prefix):
    """A sync of a provider with a configured quota (LinkedIn announces none)."""
    return make_world(redis_client, key_prefix, request.param)


@pytest.fixture
def github(redis_client, key_prefix):
    """A sync of a provider that announces its limits (the gate's lease and take)."""
    return make_world(redis_client, key_prefix, "github")


def make_world(redis_client, key_prefix, provider: str):
    svc = SimpleNamespace(
        store=SyncStore(redis_client, key_prefix),
        breaker=CircuitBreaker(redis_client, key_prefix),
        quota=QuotaGate(redis_client, key_prefix, QuotaConfig.from_env({})),
        switches=ProviderSwitches(redis_client, key_prefix, cache_s=60.0),
        credentials=CredentialStore(redis_client, key_prefix, (KEY,)),
        settings=SimpleNamespace(api_url=lambda name: "http://127.0.0.1:1"),
        redis=redis_client,
        memory=WorkerMemory(),
        gate=CallGate(redis_client, key_prefix, SpendSettings.from_env({})),
    )
    app = Celery("test-page-round-trips")
    app.netsync_services = svc
    task = {"github": GitHubPage, "linkedin": LinkedInPage}[provider]()
    task.bind(app)
    svc.credentials.save(provider, "u", Credential("octo", "tok-secret"))
    sync_id = svc.store.begin_sync(
        user_id="u",
        provider=provider,
        relation="followers",
        account_id="octo",
        queue="normal",
        trigger="test",
        force=True,
        freshness_s=0,
        stale_s=3600,
    ).sync_id
    svc.store.add_pending(sync_id, "", ["p0", "p1"])
    fingerprint = Credential("octo", "tok-secret").fingerprint()
    scopes = {"token": fingerprint}
    caller = Caller("octo", fingerprint, "127.0.0.1:1")
    return SimpleNamespace(
        svc=svc,
        task=task,
        sync_id=sync_id,
        scopes=scopes,
        caller=caller,
        provider=provider,
        client=redis_client,
    )


def quota_used(world) -> int:
    key = world.svc.quota.buckets(world.provider, world.scopes)[0].redis_key
    return sum(int(v) for f, v in world.client.hgetall(key).items() if f.startswith(b"s"))


def hint(world) -> None:
    """What a call of this sync in this process left behind (``sync.outbound.take_quota``)."""
    world.svc.memory.remember_quota(world.sync_id, world.scopes, "normal")


def count_sent(monkeypatch) -> list:
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
    return sent


def test_one_round_trip_before_the_call(world, monkeypatch):
    hint(world)
    world.task.load(world.sync_id, "p0").settle()  # warm-up: sync index cached, scripts known
    sent = count_sent(monkeypatch)
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
    world.svc.switches.pause(world.provider, "maintenance")
    ctx = world.task.load(world.sync_id, "p0")
    assert ctx.prefetched is None and quota_used(world) == 0


# -- a provider that announces its limits: the gate's lease and announced take ---------------
def gate_held(world) -> tuple[int, int]:
    """(leases held, calls the announced rule counts) of the GitHub account."""
    svc, call = world.svc, GitHub("http://127.0.0.1:1").page_call("octo", "p0")
    bound = svc.gate.announced.bind(GitHub("http://127.0.0.1:1"), call, world.caller)
    state = svc.gate.announced.state(bound)["5000-3600-all"]
    return svc.gate.leases.held("github", "127.0.0.1:1|octo"), state.get("g", 0)


def remember_caller(world) -> None:
    """What a call of this sync in this process left behind (``SyncContext.take_admission``)."""
    world.svc.memory.remember_caller(world.sync_id, world.caller, "normal")


def test_the_gate_s_lease_and_take_ride_the_first_round_trip(github, monkeypatch):
    world = github
    remember_caller(world)
    world.task.load(world.sync_id, "p0").settle()  # warm-up; the probe's take is given back
    sent = count_sent(monkeypatch)
    ctx = world.task.load(world.sync_id, "p0")
    assert len(sent) == 1
    assert ctx.admission_ahead is not None and ctx.prefetched is None
    call = ctx.provider.page_call("octo", "p0")
    admission = ctx.take_admission(call, "page")  # used by the call: no round trip of its own
    assert admission.granted and admission.lease is not None and admission.grant.probe
    assert len(sent) == 1
    assert gate_held(world) == (1, 1)
    world.svc.gate.abandon(admission)
    assert gate_held(world) == (0, 0)


def test_an_admission_sent_ahead_that_no_call_uses_is_given_back(github):
    world = github
    remember_caller(world)
    ctx = world.task.load(world.sync_id, "p0")
    assert gate_held(world) == (1, 1)
    ctx.settle()  # e.g. the provider was paused meanwhile: no call
    assert gate_held(world) == (0, 0)


def test_an_admission_sent_ahead_for_another_call_is_given_back(github):
    world = github
    remember_caller(world)
    ctx = world.task.load(world.sync_id, "p0")
    other = ctx.provider.page_call("octo", "p1")
    assert ctx.take_admission(other, "page") is None  # the call decides afresh
    assert gate_held(world) == (0, 0)


def test_an_ended_sync_gives_the_gate_s_take_back(github):
    world = github
    world.svc.store.fail(world.sync_id, "cancelled", "cancelled", "by an operator")
    remember_caller(world)
    assert world.task.load(world.sync_id, "p1") is None
    assert gate_held(world) == (0, 0)
