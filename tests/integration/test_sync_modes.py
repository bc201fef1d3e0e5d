"""Sync modes end to end: full, incremental and auto for GitHub (conditional requests),
X and Bluesky (newest-first heads), Mastodon (``min_id`` heads), and LinkedIn (nothing
cheaper: always full).

Real processes (the ``stack`` fixture); the simulator changes the networks at run
time (``POST /_sim/changes``). What each test holds to: after a full sync the
network is exactly ``/_sim/truth``; after an incremental one exactly the truth plus
the removals not seen yet; every connection's ``added`` feed entry is written once,
and ``removed`` entries only by full syncs.
"""

from __future__ import annotations

import psycopg
import pytest
import requests

from tests.integration.conftest import new_user
from tests.integration.provider_helpers import calls, client, forget_quota, login


# -- helpers ------------------------------------------------------------------------------
def resync(stack, user: str, provider: str, mode: str | None = None) -> dict:
    """A re-sync through ``POST /v1/syncs`` (forced: inside the freshness window), final."""
    body = {"user_id": user, "provider": provider, "force": True}
    if mode is not None:
        body["mode"] = mode
    response = stack.http.post(f"{stack.web}/v1/syncs", json=body, timeout=30)
    assert response.status_code == 202, response.text
    record = stack.wait_final(response.json()["sync_id"], timeout=90)
    assert record["status"] == "succeeded", record
    return record


def change(stack, account: dict, add=0, remove=()) -> dict:
    response = requests.post(
        f"{stack.sim}/_sim/changes",
        json={
            "provider": account["provider"],
            "account_id": account["id"],
            "add": add,
            "remove": list(remove),
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def first_sync(stack, provider: str, size: int, **extra) -> tuple[str, dict, dict]:
    forget_quota(stack, provider)
    account = stack.add_account(provider, size, **extra)
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=90)
    assert record["status"] == "succeeded", record
    assert record["mode"] == "full", record
    assert record["mode_reason"] in ("never_synced", "provider_offers_nothing_cheaper"), record
    return user, account, record


def network(stack, user: str, provider: str) -> set[str]:
    ids = stack.network_ids(user, provider)
    assert len(ids) == len(set(ids))
    return set(ids)


def feed(database_url: str, user: str) -> list[tuple]:
    """This user's feed entries (kind, connection id, sync id, source, counts), in order."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT kind, connection_id, sync_id, source, counts FROM changes"
            " WHERE user_id = %s ORDER BY cursor",
            (user,),
        ).fetchall()


def added_once(entries) -> set[str]:
    """The ids of ``added`` entries, each present exactly once."""
    added = [e[1] for e in entries if e[0] == "added"]
    assert len(added) == len(set(added)), "an added entry was written twice"
    return set(added)


def removed_entries(entries) -> set[str]:
    removed = [e[1] for e in entries if e[0] == "removed"]
    assert len(removed) == len(set(removed))
    return set(removed)


def synced_counts(entries, sync_id: str) -> dict:
    (counts,) = [e[4] for e in entries if e[0] == "synced" and e[2] == sync_id]
    return counts


def network_view(stack, user: str, provider: str) -> dict:
    return stack.http.get(f"{stack.web}/v1/users/{user}/networks/{provider}", timeout=30).json()


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sometimes", "", "FULL", 1, None, ["full"]])
def test_a_mode_that_is_not_one_of_the_three_is_a_422_and_writes_nothing(stack, mode):
    user, account, _ = first_sync(stack, "github", 30)
    before = calls(stack, "github", token=account["token"])
    response = stack.http.post(
        f"{stack.web}/v1/syncs",
        json={"user_id": user, "provider": "github", "force": True, "mode": mode},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "mode" in response.json()["error"]["message"]
    inflight = client(stack).get(f"netsync:{{github:{user}}}:followers:inflight")
    assert inflight is None
    assert calls(stack, "github", token=account["token"]) == before


# -- GitHub: conditional re-syncs -------------------------------------------------------------
@pytest.mark.cluster  # also on a Redis Cluster + RabbitMQ (make integration-cluster)
def test_github_modes_conditional_requests(stack, session_database):
    provider = "github"
    user, account, first = first_sync(stack, provider, 450)  # 5 pages of 100
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    view = network_view(stack, user, provider)
    assert view["verified_at"] is not None and view["updated_at"] is not None

    # unchanged: every call a free 304, zero counted calls
    same = resync(stack, user, provider)
    assert same["mode"] == "incremental" and same["mode_reason"] == "auto", same
    assert same["cost"]["counted_calls"] == 0, same["cost"]
    assert same["cost"]["not_modified"] == same["cost"]["calls"] == 1 + 5
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    assert network_view(stack, user, provider)["verified_at"] == view["verified_at"]

    # a page's worth added (GitHub lists oldest first: the new ones are the last page's,
    # and a sixth page page one's rel="last" does not announce: its body did not change)
    new = change(stack, account, add=60)["added"]
    grown = resync(stack, user, provider, "incremental")
    assert grown["mode"] == "incremental"
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    # the profile and the pages the change moved are counted, the rest are 304s
    assert grown["cost"]["counted_calls"] == 1 + 2, grown["cost"]
    assert grown["cost"]["not_modified"] == 4, grown["cost"]

    # removals: an incremental sync cannot see them (pages moved, nothing removed)
    gone = sorted(stack.truth(provider, account["id"]))[:2]
    change(stack, account, remove=gone)
    resync(stack, user, provider, "incremental")
    assert network(stack, user, provider) == stack.truth(provider, account["id"]) | set(gone)

    # full: no condition sent, the network verified against the truth
    full = resync(stack, user, provider, "full")
    assert full["mode"] == "full" and full["cost"]["not_modified"] == 0, full
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    entries = feed(session_database, user)
    assert added_once(entries) == set(new)
    assert removed_entries(entries) == set(gone)
    assert {e[3] for e in entries} == {"sync"}
    counts = synced_counts(entries, full["sync_id"])
    assert counts["mode"] == "full" and counts["removed"] == 2
    assert counts["cost"]["calls"] == full["cost"]["calls"]
    assert synced_counts(entries, same["sync_id"])["mode"] == "incremental"


def test_github_garbled_cache_entry_or_another_token_reads_that_page_in_full(stack):
    provider = "github"
    user, account, _ = first_sync(stack, provider, 250)  # 3 pages
    redis = client(stack)
    key = f"netsync:{{github:{user}}}:followers:etags"
    pages = sorted(f for f in redis.hkeys(key) if not f.startswith(b"~"))
    assert len(pages) == 3
    redis.hset(key, pages[1], b'W/"x"\0not what was kept')
    garbled = resync(stack, user, provider, "incremental")
    # that page read in full (counted), the others and the profile 304s
    assert garbled["cost"]["counted_calls"] == 1, garbled["cost"]
    assert garbled["cost"]["not_modified"] == 3, garbled["cost"]
    assert network(stack, user, provider) == stack.truth(provider, account["id"])

    # the cache is replaced by each sync: the next one is all 304s again
    again = resync(stack, user, provider, "incremental")
    assert again["cost"]["counted_calls"] == 0, again["cost"]

    # kept under another token (ETags are tied to the token): nothing kept is used
    redis.hset(key, "~token", "0123456789abcdef")
    other = resync(stack, user, provider, "incremental")
    assert other["cost"]["not_modified"] == 0, other["cost"]
    assert other["cost"]["counted_calls"] == 1 + 3, other["cost"]
    assert network(stack, user, provider) == stack.truth(provider, account["id"])


@pytest.mark.parametrize(("provider", "size"), [("github", 150), ("twitter", 1200)])
def test_another_account_linked_is_read_in_full_not_added_to_the_old_network(stack, provider, size):
    """A user links another account of the provider (a new login): the next sync reads
    the new account in full, even when asked for incremental, so the network is the new
    account's, never a mix of both."""
    user, old, _ = first_sync(stack, provider, size)
    new = stack.add_account(provider, size * 2)  # grown: the count check sees nothing
    login(stack, user, new)  # inside the freshness window: stores the credential only
    record = resync(stack, user, provider)  # auto
    assert (record["mode"], record["mode_reason"]) == ("full", "account_changed"), record
    assert network(stack, user, provider) == stack.truth(provider, new["id"])
    asked = resync(stack, user, provider, "incremental")  # the same account again
    assert asked["mode"] == "incremental", asked
    assert network(stack, user, provider) == stack.truth(provider, new["id"])
    assert not network(stack, user, provider) & stack.truth(provider, old["id"])


# -- heads: X, Bluesky, Mastodon -----------------------------------------------------------------
HEADS = {"twitter": 1000, "bluesky": 100, "mastodon": 80}


@pytest.mark.cluster
@pytest.mark.parametrize("provider", list(HEADS))
def test_head_modes(stack, session_database, provider):
    page = HEADS[provider]
    size = 3 * page + 7
    user, account, _ = first_sync(stack, provider, size)
    truth = stack.truth(provider, account["id"])
    assert network(stack, user, provider) == truth

    # unchanged: the profile and one page
    same = resync(stack, user, provider)
    assert same["mode"] == "incremental", same
    assert same["cost"]["calls"] == 2, same["cost"]
    assert network(stack, user, provider) == truth

    # a few added: the profile and one page (the head meets someone known)
    new = change(stack, account, add=3)["added"]
    grown = resync(stack, user, provider)
    assert grown["mode"] == "incremental", grown
    assert grown["cost"]["calls"] <= 3, grown["cost"]
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    if provider == "twitter":  # billed per user returned: the growth and a margin
        assert grown["cost"]["resources"] <= 1 + 3 + 5, grown["cost"]

    # removed and added as many: the count is unchanged, the head adds 2 but the
    # profile says +0: auto trusts nothing from the head and reads in full
    gone = sorted(stack.truth(provider, account["id"]))[:2]
    new += change(stack, account, add=2, remove=gone)["added"]
    checked = resync(stack, user, provider)
    assert checked["mode"] == "full" and checked["mode_reason"] == "count_mismatch", checked
    assert network(stack, user, provider) == stack.truth(provider, account["id"])

    # incremental asked explicitly: a removal is not seen, the additions are
    gone2 = sorted(stack.truth(provider, account["id"]))[:1]
    new += change(stack, account, add=1, remove=gone2)["added"]
    inc = resync(stack, user, provider, "incremental")
    assert inc["mode"] == "incremental", inc
    assert network(stack, user, provider) == stack.truth(provider, account["id"]) | set(gone2)

    # auto after a removal alone: the count went down, full
    gone3 = sorted(stack.truth(provider, account["id"]))[-1:]
    change(stack, account, remove=gone3)
    down = resync(stack, user, provider)
    assert down["mode"] == "full", down
    assert down["mode_reason"] in ("count_went_down", "count_mismatch"), down
    assert network(stack, user, provider) == stack.truth(provider, account["id"])

    entries = feed(session_database, user)
    assert added_once(entries) == set(new)
    assert removed_entries(entries) == set(gone) | set(gone2) | set(gone3)
    for record in (same, grown, inc):
        assert synced_counts(entries, record["sync_id"])["removed"] == 0


@pytest.mark.parametrize("provider", ["bluesky", "mastodon"])
def test_a_head_that_meets_nothing_known_within_its_bound_reads_on_in_full(stack, provider):
    page = HEADS[provider]
    user, account, _ = first_sync(stack, provider, 4 * page)
    change(stack, account, add=page + page // 2)  # more than a tenth, more than a page
    record = resync(stack, user, provider, "incremental")
    assert record["mode"] == "full" and record["mode_reason"] == "head_bound", record
    assert network(stack, user, provider) == stack.truth(provider, account["id"])


def test_mastodon_head_is_read_through_min_id_pages(stack, session_database):
    provider = "mastodon"
    user, account, _ = first_sync(stack, provider, 2000)  # a head may read 200
    new = change(stack, account, add=170)["added"]
    record = resync(stack, user, provider, "incremental")
    assert record["mode"] == "incremental", record
    assert network(stack, user, provider) == stack.truth(provider, account["id"])
    assert added_once(feed(session_database, user)) == set(new)
    # the profile and three min_id pages (80, 80, 10) above the stored head, no gap
    assert record["cost"]["calls"] == 1 + 3, record["cost"]


# -- LinkedIn: nothing cheaper ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "incremental"])
def test_linkedin_falls_back_to_full(stack, mode):
    provider = "linkedin"
    user, account, _ = first_sync(stack, provider, 120)
    gone = sorted(stack.truth(provider, account["id"]))[:3]
    change(stack, account, add=2, remove=gone)
    record = resync(stack, user, provider, mode)
    assert record["mode"] == "full", record
    assert record["mode_reason"] == "provider_offers_nothing_cheaper"
    assert network(stack, user, provider) == stack.truth(provider, account["id"])


# -- costs visible ---------------------------------------------------------------------------------
def test_the_savings_are_in_metrics_and_on_the_dashboard(stack):
    provider = "twitter"
    user, account, _ = first_sync(stack, provider, 2500)
    change(stack, account, add=10)
    record = resync(stack, user, provider)
    assert record["mode"] == "incremental", record
    text = requests.get(f"{stack.web}/metrics", timeout=10).text
    saved = [
        line
        for line in text.splitlines()
        if line.startswith('netsync_sync_mode_usd_saved_micro_total{provider="twitter"}')
    ]
    assert saved and float(saved[0].split()[-1]) > 0, saved
    state = stack.http.get(f"{stack.web}/dashboard/state.json", timeout=10).json()
    (row,) = [m for m in state["modes"] if m["provider"] == provider]
    # a full re-read of 2,510: the profile and 2,510 users at $0.01; this one, far less
    assert row["incremental_syncs"] >= 1 and row["calls_saved"] >= 2
    assert row["usd_saved"] >= 25.10 - record["cost"]["usd"] - 0.0001
