"""The guards against providers' pagination bugs, and restart generations (real Redis).

The guard's memory is recorded by the scripts that launch or store a page
(``SyncStore.launch_pages``, ``SyncStore.complete_page``), so the checks go
through them, as the page task does.
"""

from __future__ import annotations

import pytest

from providers import pagination
from providers.provider import Page, Pagination, Provider
from state.page_guard import guard_args
from state.store import SyncStore

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


class Chained(Provider):
    NAME = "fake"
    PAGE_SIZE = 50
    PAGINATION = Pagination.CURSOR
    ONE_ITEM_RUN_LIMIT = 3


def people(*ids):
    return [(str(i), f"p{i}") for i in ids]


class Guard:
    """One sync's page guard, asked as the page task asks it."""

    def __init__(self, store: SyncStore):
        self.store = store
        self.sync_id = store.begin_sync(
            user_id="u",
            provider="fake",
            relation="followers",
            account_id="a",
            queue="normal",
            trigger="test",
            force=True,
            freshness_s=0,
            stale_s=3600,
        ).sync_id

    def check(self, provider, cursor, page, launches, pages_done, expected_total) -> str:
        """Why paging stops at this page ("" to go on)."""
        args = guard_args(provider, cursor, page, launches, pages_done, expected_total)
        if launches:
            reason, _ = self.store.launch_pages(self.sync_id, cursor, launches, args)
            return reason
        # a page that launches nothing is only remembered, with its storage
        self.store.complete_page(self.sync_id, cursor, page.connections, guard=args)
        return ""


@pytest.fixture
def guard(redis_client, key_prefix):
    return Guard(SyncStore(redis_client, key_prefix))


def test_a_run_of_one_item_pages_stops(guard):
    provider = Chained("http://x")
    reasons = [
        guard.check(
            provider, f"c{i}", Page(people(i), next_cursor=f"c{i + 1}"), [f"c{i + 1}"], i + 1, None
        )
        for i in range(5)
    ]
    assert reasons == ["", "", "one_item_pages", "one_item_pages", "one_item_pages"]


def test_a_full_page_resets_the_run(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1)), ["b"], 1, None) == ""
    assert guard.check(provider, "b", Page(people(2)), ["c"], 2, None) == ""
    assert guard.check(provider, "c", Page(people(*range(3, 53))), ["d"], 3, None) == ""
    assert guard.check(provider, "d", Page(people(60)), ["e"], 4, None) == ""


def test_the_run_guard_can_be_off(guard):
    provider = Chained("http://x")
    provider.ONE_ITEM_RUN_LIMIT = None
    assert all(
        guard.check(provider, f"c{i}", Page(people(i)), ["n"], i, None) == "" for i in range(6)
    )


def test_a_repeated_page_stops(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1, 2, 3)), ["b"], 1, None) == ""
    assert guard.check(provider, "b", Page(people(3, 2, 1)), ["c"], 2, None) == "repeated_page"


def test_a_redelivered_page_is_not_a_repeat(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1, 2)), ["b"], 1, None) == ""
    assert guard.check(provider, "a", Page(people(1, 2)), ["b"], 1, None) == ""


def test_a_page_that_launched_nothing_is_remembered_with_its_storage(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1, 2, 3)), [], 1, None) == ""
    assert guard.check(provider, "b", Page(people(1, 2, 3)), ["c"], 2, None) == "repeated_page"


def test_a_stopped_page_launches_nothing(guard):
    provider = Chained("http://x")
    guard.check(provider, "a", Page(people(1, 2)), ["b"], 1, None)
    reason, marks = guard.store.launch_pages(
        guard.sync_id, "c", ["d"], guard_args(provider, "c", Page(people(2, 1)), ["d"], 2, None)
    )
    assert (reason, marks) == ("repeated_page", [])
    assert guard.store.pending_cursors(guard.sync_id) == ["b"]


def test_an_ended_sync_records_nothing(guard, redis_client):
    provider = Chained("http://x")
    guard.store.fail(guard.sync_id, "cancelled", "cancelled", "by an operator")
    assert guard.store.launch_pages(
        guard.sync_id, "a", ["b"], guard_args(provider, "a", Page(people(1)), ["b"], 1, None)
    ) == ("", [])
    assert not redis_client.exists(guard.store._sync_keys(guard.sync_id).guard)


def test_empty_pages_are_never_repeats(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page([]), ["b"], 1, None) == ""
    assert guard.check(provider, "b", Page([]), ["c"], 2, None) == ""


def test_more_pages_than_the_size_allows_stop(guard):
    provider = Chained("http://x")  # 100 people: 2 pages + slack 3
    assert guard.check(provider, "e", Page(people(*range(50))), ["f"], 4, 100) == ""
    assert guard.check(provider, "f", Page(people(*range(50, 100))), ["g"], 5, 100) == "page_limit"


def test_a_last_page_is_never_stopped(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "z", Page(people(1)), [], 99, 10) == ""


def test_restart_generations():
    assert pagination.split_generation("after:QVFI") == (0, "after:QVFI")
    assert pagination.split_generation("r1|after:QVFI") == (1, "after:QVFI")
    assert (
        pagination.with_generation(0, "x") == "x" and pagination.with_generation(2, "x") == "r2|x"
    )
    assert pagination.split_generation("/mastodon/api?x=r1|y") == (0, "/mastodon/api?x=r1|y")
