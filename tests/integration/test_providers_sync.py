"""End-to-end syncs of Twitter, Facebook, LinkedIn, Mastodon and Bluesky against the simulator.

Real processes (the ``stack`` fixture): signed login webhook → web → Celery
workers → stored network, compared with the simulator's truth. Sizes are
chosen around each provider's page size (0, 1, page−1, page, page+1,
several pages), plus each provider's pagination quirks.
"""

from __future__ import annotations

import time

import pytest

import providers
from tests.integration.conftest import new_user
from tests.integration.provider_helpers import (
    calls,
    client,
    login,
    sync_new_account,
    token_calls,
)

#: the core sync tests: also run on a Redis Cluster + RabbitMQ (make integration-cluster)
pytestmark = pytest.mark.cluster

#: the page size netsync asks each provider for (GitHub's syncs: test_sync_github.py)
PAGE = {
    name: cls.PAGE_SIZE for name, cls in providers.provider_classes().items() if name != "github"
}


def sizes(page: int) -> tuple[int, ...]:
    """Around one page (0, 1, page-1, page, page+1), and several pages and a part."""
    return (0, 1, page - 1, page, page + 1, 3 * page + page // 2)


CASES = [pytest.param(p, n, id=f"{p}-{n}") for p in PAGE for n in sizes(PAGE[p])]


def assert_network_is_truth(stack, user, account, record):
    ids = stack.network_ids(user, account["provider"])
    truth = stack.truth(account["provider"], account["id"])
    assert len(ids) == len(set(ids)) == len(truth)
    assert set(ids) == truth
    assert record["connections_fetched"] == len(truth)


@pytest.mark.parametrize("provider,size", CASES)
def test_sync_equals_truth(stack, provider, size):
    user, account, record = sync_new_account(stack, provider, size)
    assert record["status"] == "succeeded", record
    assert record["expected_total"] == size
    assert_network_is_truth(stack, user, account, record)


def test_twitter_short_pages_mid_stream_go_on(stack):
    """ "result_count may be below max_results mid-stream": the next_token decides."""
    account = stack.add_account("twitter", 2600)
    stack.add_faults(
        {
            "kind": "short_page",
            "provider": "twitter",
            "account": account["id"],
            "items": 1,
            "every_n": 2,
        }
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)


def test_twitter_oauth1_token_signs_calls(stack):
    user, account, record = sync_new_account(stack, "twitter", 1500, token_secret="tw-secret")
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)


def test_twitter_expired_token_refreshes_client_side_once(stack):
    before = token_calls(stack).get("twitter", 0)
    user, account, record = sync_new_account(
        stack, "twitter", 2100, refresh_token="tw-rt-" + new_user(), expires_at=time.time() - 60
    )
    assert record["status"] == "succeeded", record
    assert token_calls(stack)["twitter"] - before == 1
    assert not calls(stack, "twitter", token=account["token"])  # the expired token never went out
    assert_network_is_truth(stack, user, account, record)


def test_facebook_empty_pages_with_next_lose_nothing(stack):
    account = stack.add_account("facebook", 11000)
    stack.add_faults(
        {
            "kind": "empty_page_with_next",
            "provider": "facebook",
            "account": account["id"],
            "at_call": 3,
        }
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)


def test_facebook_short_pages_with_next_go_on(stack):
    account = stack.add_account("facebook", 10500)
    stack.add_faults(
        {
            "kind": "short_page",
            "provider": "facebook",
            "account": account["id"],
            "items": 1,
            "at_call": 2,
        }
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)


def test_linkedin_off_by_one_ends_with_the_right_set_in_a_few_calls(stack):
    """The talk's bug: past the end, an endless run of one-person pages."""
    account = stack.add_account("linkedin", 150)
    stack.add_faults(
        {"kind": "off_by_one", "provider": "linkedin", "account": account["id"], "after_start": 150}
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] in ("succeeded", "partial"), record
    assert_network_is_truth(stack, user, account, record)
    made = [c for c in calls(stack, "linkedin", token=account["token"]) if c["kind"] == "page"]
    assert len(made) <= 150 // PAGE["linkedin"] + 2  # the planned pages, and at most a couple more


def test_linkedin_one_person_pages_inside_the_total_are_flagged(stack):
    """The bug mid-list: people are missing, and the status says so."""
    account = stack.add_account("linkedin", 150)
    stack.add_faults(
        {"kind": "off_by_one", "provider": "linkedin", "account": account["id"], "after_start": 100}
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] == "partial" and record["partial_reason"] == "short_page", record
    assert set(stack.network_ids(user, "linkedin")) <= stack.truth("linkedin", account["id"])


def test_mastodon_short_pages_go_on(stack):
    account = stack.add_account("mastodon", 300)
    stack.add_faults(
        {
            "kind": "short_page",
            "provider": "mastodon",
            "account": account["id"],
            "items": 1,
            "every_n": 2,
        }
    )
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)


def test_mastodon_hidden_network_is_partial_not_empty(stack):
    user, account, record = sync_new_account(stack, "mastodon", 40, hidden=True)
    assert record["status"] == "partial" and record["partial_reason"] == "hidden_network", record


def test_twitter_per_item_problems_beside_data_keep_the_page(stack):
    """A 200 with data and errors[] (a follower we may not see): the page is good."""
    account = stack.add_account("twitter", 2500)
    stack.add_faults(
        {
            "kind": "error",
            "provider": "twitter",
            "account": account["id"],
            "name": "not_authorized_for_resource",
            "beside_data": True,
            "at_call": 3,
        }
    )
    user = new_user()
    sync_id = login(stack, user, account)["sync_id"]
    record = stack.wait_final(sync_id, timeout=60)
    assert record["status"] == "succeeded", record
    assert_network_is_truth(stack, user, account, record)
    raw = client(stack).hget(f"netsync:{{twitter:{user}}}:sync:{sync_id}", "item_problems")
    assert raw == b"not-authorized-for-resource"
