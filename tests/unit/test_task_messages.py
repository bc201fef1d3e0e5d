"""A task's messages: what goes back to the broker is the message that came, plus changes.

Parking and re-sending read Celery's own ``self.request`` (the current
message's args and kwargs); the task names and run signatures are the wire
format, so messages already in a broker keep running.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from celery import Celery

from providers.errors import Action, ErrorRule, ProviderError
from providers.github import GitHub
from sync import outcomes
from sync.context import SyncContext, Tries
from sync.memory import BoundedCache, WorkerMemory
from sync.outbound import MustWait
from sync.tasks import PageTask, ProfileTask, task_classes_for

CURSOR = "/users/octo/followers?per_page=100&page=3"


class Recorder:
    """Stands in for each service a park touches, and remembers the calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


@pytest.fixture
def page_task():
    svc = SimpleNamespace(
        store=Recorder(),
        metrics=Recorder(),
        delayed=Recorder(),
        progress=Recorder(),
        memory=WorkerMemory(),
        settings=SimpleNamespace(
            provider_regions={},
            max_backoff_attempts=5,
            retry_budget_seconds=300.0,
            backoff_base_seconds=1.0,
            backoff_cap_seconds=10.0,
        ),
    )
    app = Celery("test-task-messages", broker="redis://127.0.0.1:1/0")
    app.netsync_services = svc
    _, page_cls = task_classes_for(GitHub)
    task = page_cls()
    task.bind(app)
    # the message as a broker delivered it: identity positional, counters as kwargs
    task.push_request(args=["s-1", CURSOR], kwargs={"attempt": 1, "failing_since": 5.0})
    record = {"sync_id": "s-1", "user_id": "u", "account_id": "octo", "queue": "normal"}
    ctx = SyncContext(
        svc,
        record,
        GitHub("https://api.github.com"),
        cursor=CURSOR,
        tries=Tries(attempt=1, failing_since=5.0),
    )
    yield task, ctx
    task.pop_request()


def parked(ctx) -> list:
    return [
        (args[0], args[1], args[2], kwargs["reason"])
        for name, args, kwargs in ctx.svc.delayed.calls
        if name == "park"
    ]


def test_again_is_the_current_message_with_its_counters_changed(page_task):
    task, _ = page_task
    again = task.again(refreshed=1)
    assert again.task == "github.page"
    assert list(again.args) == ["s-1", CURSOR]
    assert again.kwargs == {"attempt": 1, "failing_since": 5.0, "refreshed": 1}


def test_a_backoff_parks_the_message_with_one_more_attempt(page_task):
    task, ctx = page_task
    error = ProviderError(ErrorRule(Action.BACKOFF, "server_error"), 503, "down")
    outcomes.back_off(task, ctx, error)
    assert parked(ctx) == [
        ("github.page", ["s-1", CURSOR], {"attempt": 2, "failing_since": 5.0}, "server_error")
    ]


def test_a_call_that_must_wait_parks_its_message_and_is_not_an_attempt(page_task):
    task, ctx = page_task

    def body():
        raise MustWait(2.5, "circuit_open", failing_since=7.0)

    assert task.guarded(ctx, body) == "parked"
    assert parked(ctx) == [
        ("github.page", ["s-1", CURSOR], {"attempt": 1, "failing_since": 7.0}, "circuit_open")
    ]


def test_task_names_and_run_signatures_are_the_wire_format():
    profile, page = task_classes_for(GitHub)
    assert (profile.name, page.name) == ("github.profile", "github.page")
    assert list(inspect.signature(ProfileTask.run).parameters)[1:] == [
        "sync_id",
        "attempt",
        "waits",
        "refreshed",
        "failing_since",
    ]
    assert list(inspect.signature(PageTask.run).parameters)[1:] == [
        "sync_id",
        "cursor",
        "attempt",
        "waits",
        "refreshed",
        "restarts",
        "failing_since",
    ]


def test_a_bounded_cache_evicts_the_least_recently_used():
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert ("a" in cache, "b" in cache, "c" in cache, len(cache)) == (True, False, True, 2)


def test_worker_memory_keeps_a_syncs_quota_hint_until_it_finishes():
    memory = WorkerMemory(max_syncs=2)
    memory.remember_quota("s-1", {"token": "f" * 16}, "normal")
    memory.requeue("s-1", "whale")
    assert memory.quota_hint("s-1") == ({"token": "f" * 16}, "whale")
    memory.requeue("s-2", "whale")  # never called here: nothing to move
    assert memory.quota_hint("s-2") is None
    memory.remember_quota("s-2", {}, "normal")
    memory.remember_quota("s-3", {}, "normal")  # over the bound: s-1 goes
    assert memory.quota_hint("s-1") is None
    memory.forget("s-3")
    assert memory.quota_hint("s-3") is None and memory.quota_hint("s-2") is not None


def test_worker_memory_keeps_one_provider_per_base_url():
    memory = WorkerMemory()
    one = memory.provider(GitHub, "http://127.0.0.1:1")
    assert memory.provider(GitHub, "http://127.0.0.1:1") is one
    assert memory.provider(GitHub, "http://127.0.0.1:2") is not one
    assert not memory.breaker_said_wait("github")
    memory.note_breaker("github", waiting=True)
    assert memory.breaker_said_wait("github")


def test_worker_memory_keeps_a_syncs_caller_until_it_finishes():
    from state.announced import Caller

    memory = WorkerMemory()
    caller = Caller("octocat", "f" * 16, "api.github.com")
    memory.remember_caller("s-1", caller, "normal")
    memory.requeue("s-1", "whale")
    assert memory.caller_hint("s-1") == (caller, "whale")
    memory.forget("s-1")
    assert memory.caller_hint("s-1") is None
