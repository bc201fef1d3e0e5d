"""Only a provider answer we cannot read is the provider's fault; our own bugs surface."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import kombu.exceptions
import psycopg
import pytest
import redis.exceptions
from celery import Celery
from celery.exceptions import Reject
from psycopg_pool import PoolTimeout

from providers.errors import Action
from providers.github import GitHub
from sync.context import SyncContext
from sync.http import parsing
from sync.memory import WorkerMemory
from sync.tasks import ProviderTask


class FakeStore:
    def __init__(self):
        self.failed = []

    def fail(self, sync_id, status, kind, message):
        self.failed.append((status, kind))
        return True


class Recorder(ProviderTask):
    name = "test.recorder"
    provider_class = GitHub

    def on_provider_error(self, ctx, error):
        ctx.seen.append(error)
        return error.action


@pytest.fixture
def task_and_ctx():
    svc = SimpleNamespace(
        store=FakeStore(),
        settings=SimpleNamespace(callback_url=None),
        metrics=SimpleNamespace(count=lambda *a, **k: None),
        memory=WorkerMemory(),
    )
    app = Celery("test-task-errors")
    app.netsync_services = svc
    task = Recorder()
    task.bind(app)
    ctx = SyncContext(
        svc, {"sync_id": "s-1", "user_id": "u", "account_id": "a"}, GitHub("https://api.github.com")
    )
    ctx.seen = []
    return task, ctx


def test_an_answer_of_the_wrong_shape_is_unparseable(task_and_ctx):
    task, ctx = task_and_ctx

    def body():
        with parsing("page answer"):
            GitHub("https://api.github.com").parse_page({"not": "a list"}, {}, "/users/x/followers")

    assert task.guarded(ctx, body) is Action.BACKOFF
    assert ctx.seen[0].rule.kind == "unparseable_response"
    assert "page answer" in ctx.seen[0].message
    assert ctx.svc.store.failed == []


def test_our_own_bug_fails_the_sync_and_surfaces_with_its_traceback(task_and_ctx, caplog):
    task, ctx = task_and_ctx

    def body():
        return {}["a key our code forgot"]  # a KeyError outside any provider parsing

    with caplog.at_level(logging.ERROR, logger="netsync.tasks"), pytest.raises(KeyError):
        task.guarded(ctx, body)
    assert ctx.svc.store.failed == [("failed", "internal_error")]
    assert ctx.seen == []  # not treated as a provider error: no backoff
    assert caplog.records[0].exc_info is not None  # the traceback is logged


@pytest.mark.parametrize(
    "outage",
    [
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        kombu.exceptions.OperationalError("Error 111 connecting"),
        # PostgreSQL: a pooled connection closed under a finalization, no connection to be had
        psycopg.OperationalError("consuming input failed: server closed the connection"),
        PoolTimeout("couldn't get a connection after 30.00 sec"),
    ],
)
def test_a_store_or_broker_outage_requeues_the_message_and_fails_nothing(task_and_ctx, outage):
    task, ctx = task_and_ctx

    def body():
        raise outage  # e.g. complete_page while Redis restarts

    with pytest.raises(type(outage)):
        task.guarded(ctx, body)
    assert ctx.svc.store.failed == [] and ctx.seen == []
    task.run = lambda *a, **k: task.guarded(ctx, body)
    with pytest.raises(Reject) as rejected:
        task("s-1", "/users/x/followers")
    assert rejected.value.requeue is True
