"""The guards against providers' pagination bugs, and restart generations (real Redis)."""
from __future__ import annotations

import pytest

from state.page_guard import PageGuard
from providers import pagination
from providers.provider import Page, Pagination, Provider

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


class Chained(Provider):
    NAME = "fake"
    PAGE_SIZE = 50
    PAGINATION = Pagination.CURSOR
    ONE_ITEM_RUN_LIMIT = 3


def people(*ids):
    return [(str(i), f"p{i}") for i in ids]


@pytest.fixture
def guard(redis_client, key_prefix):
    return PageGuard(redis_client, f"{key_prefix}:{{fake:u}}:sync:s1:guard")


def test_a_run_of_one_item_pages_stops(guard):
    provider = Chained("http://x")
    reasons = [guard.check(provider, f"c{i}", Page(people(i), next_cursor=f"c{i + 1}"),
                           [f"c{i + 1}"], i + 1, None) for i in range(5)]
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
    assert all(guard.check(provider, f"c{i}", Page(people(i)), ["n"], i, None) == "" for i in range(6))


def test_a_repeated_page_stops(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1, 2, 3)), ["b"], 1, None) == ""
    assert guard.check(provider, "b", Page(people(3, 2, 1)), ["c"], 2, None) == "repeated_page"


def test_a_redelivered_page_is_not_a_repeat(guard):
    provider = Chained("http://x")
    assert guard.check(provider, "a", Page(people(1, 2)), ["b"], 1, None) == ""
    assert guard.check(provider, "a", Page(people(1, 2)), ["b"], 1, None) == ""


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
    assert pagination.with_generation(0, "x") == "x" and pagination.with_generation(2, "x") == "r2|x"
    assert pagination.split_generation("/mastodon/api?x=r1|y") == (0, "/mastodon/api?x=r1|y")
