"""Walking every provider's pagination yields exactly the truth.

Each walker pages the way a client of the real API would (follow ``Link``,
``next_token``, ``paging.next``, ``start += count``), for networks of 0, 1,
page-1, page, page+1 and several pages, and the result must equal
``/_sim/truth`` in order, without duplicates.
"""

import pytest
import requests

from simulator.providers import PROVIDER_SIMS
from simulator.testing import run_simulator

#: the page a client gets when it asks for no size (the real default; Bluesky: its own tests)
PAGE = {
    provider: PROVIDER_SIMS[provider].PAGE_SIZE
    for provider in ("github", "twitter", "facebook", "linkedin", "mastodon")
}
TOKENS = {
    "github": "gh-tok",
    "twitter": "tw-tok",
    "facebook": "fb-tok",
    "linkedin": "li-tok",
    "mastodon": "ma-tok",
}


@pytest.fixture(scope="module")
def sim():
    with run_simulator({}) as running:
        yield running


def auth(provider):
    scheme = "token" if provider == "github" else "Bearer"
    return {"Authorization": f"{scheme} {TOKENS[provider]}"}


def walk_github(sim, account_id, http, relation="followers"):
    url, ids, pages = sim.url("github", f"/users/{account_id}/{relation}"), [], 0
    while url:
        response = http.get(url, headers=auth("github"))
        assert response.status_code == 200
        ids += [str(user["id"]) for user in response.json()]
        url = response.links.get("next", {}).get("url")
        pages += 1
    return ids, pages


def walk_twitter(sim, account_id, http, relation="followers"):
    params, ids, pages = {}, [], 0
    while True:
        response = http.get(
            sim.url("twitter", f"/2/users/{account_id}/{relation}"),
            params=params,
            headers=auth("twitter"),
        )
        body = response.json()
        ids += [user["id"] for user in body.get("data", [])]
        assert body["meta"]["result_count"] == len(body.get("data", []))
        pages += 1
        if "next_token" not in body["meta"]:
            return ids, pages
        params = {"pagination_token": body["meta"]["next_token"]}


def walk_facebook(sim, account_id, http, relation=None):
    url = sim.url("facebook", f"/v19.0/{account_id}/friends?limit=25&summary=total_count")
    ids, pages, headers = [], 0, auth("facebook")
    while url:
        body = http.get(url, headers=headers).json()
        ids += [friend["id"] for friend in body["data"]]
        url = body.get("paging", {}).get("next")
        headers = {}  # the next URL embeds the access token
        pages += 1
    return ids, pages


def walk_linkedin(sim, account_id, http, relation=None):
    start, ids, pages = 0, [], 0
    while True:
        body = http.get(
            sim.url("linkedin", "/v2/connections"),
            params={"q": "viewer", "start": start, "count": 50},
            headers=auth("linkedin"),
        ).json()
        ids += [element["to"] for element in body["elements"]]
        pages += 1
        if len(body["elements"]) < 50:
            return ids, pages
        start += 50


def walk_mastodon(sim, account_id, http, relation="followers"):
    url, ids, pages = sim.url("mastodon", f"/api/v1/accounts/{account_id}/{relation}"), [], 0
    while url:
        response = http.get(url, headers=auth("mastodon"))
        ids += [account["id"] for account in response.json()]
        url = response.links.get("next", {}).get("url")
        pages += 1
    return ids, pages


WALKERS = {
    "github": walk_github,
    "twitter": walk_twitter,
    "facebook": walk_facebook,
    "linkedin": walk_linkedin,
    "mastodon": walk_mastodon,
}


def sizes(provider):
    page = PAGE[provider]
    return [0, 1, page - 1, page, page + 1, 3 * page + 7]


@pytest.mark.parametrize(
    "provider,size", [(p, s) for p in PAGE for s in sizes(p)], ids=lambda v: str(v)
)
def test_walk_yields_exactly_the_truth(sim, provider, size):
    account_id = f"{provider}{size}" if provider != "facebook" else str(10_000 + size)
    sim.put_accounts(
        {"provider": provider, "id": account_id, "size": size, "token": TOKENS[provider]}
    )
    with requests.Session() as http:
        ids, pages = WALKERS[provider](sim, account_id, http)
    truth = sim.truth(provider, account_id)
    assert ids == truth["ids"]
    assert len(set(ids)) == size == truth["count"]
    expected_pages = max(1, -(-size // PAGE[provider]))
    if provider in ("linkedin", "mastodon") and size and size % PAGE[provider] == 0:
        expected_pages += 1  # a full last page: one more (empty) call to see the end
    assert pages == expected_pages


@pytest.mark.parametrize("provider", ["github", "twitter", "mastodon"])
def test_following_is_a_second_network(sim, provider):
    sim.put_accounts(
        {
            "provider": provider,
            "id": "both",
            "size": 45,
            "following_size": 12,
            "token": TOKENS[provider],
        }
    )
    with requests.Session() as http:
        following, _ = WALKERS[provider](sim, "both", http, "following")
        followers, _ = WALKERS[provider](sim, "both", http, "followers")
    assert following == sim.truth(provider, "both", "following")["ids"]
    assert len(following) == 12 and len(followers) == 45
    assert not set(following) & set(followers)


@pytest.mark.parametrize("provider", list(PAGE))
def test_moving_start_changes_the_truth_by_the_difference(sim, provider):
    account = {"provider": provider, "id": "2000", "size": 60, "token": TOKENS[provider]}
    sim.put_accounts(account)
    with requests.Session() as http:
        before, _ = WALKERS[provider](sim, "2000", http)
        sim.put_accounts({**account, "start": 10, "size": 55})
        after, _ = WALKERS[provider](sim, "2000", http)
    assert set(before) - set(after) == set(before[:10])  # indices 0..9 removed
    assert len(set(after) - set(before)) == 5  # indices 60..64 added
    assert after == sim.truth(provider, "2000")["ids"]


def test_github_link_header_rels_per_page(sim):
    sim.put_accounts({"provider": "github", "id": "links", "size": 250, "token": "gh-tok"})
    url = sim.url("github", "/users/links/followers")
    first = requests.get(url, params={"per_page": 100}, headers=auth("github"))
    middle = requests.get(url, params={"per_page": 100, "page": 2}, headers=auth("github"))
    last = requests.get(url, params={"per_page": 100, "page": 3}, headers=auth("github"))
    assert set(first.links) == {"next", "last"}
    assert set(middle.links) == {"prev", "next", "last", "first"}
    assert set(last.links) == {"prev", "first"}
    assert first.links["last"]["url"].endswith("per_page=100&page=3")
    assert "/github/user/" in first.links["next"]["url"]  # Link points at /user/<id>/...
    assert len(last.json()) == 50


def test_github_per_page_is_capped_at_100(sim):
    sim.put_accounts({"provider": "github", "id": "cap", "size": 150, "token": "gh-tok"})
    body = requests.get(
        sim.url("github", "/users/cap/followers"), params={"per_page": 500}, headers=auth("github")
    ).json()
    assert len(body) == 100


def test_twitter_max_results_range_is_enforced(sim):
    sim.put_accounts({"provider": "twitter", "id": "mr", "size": 1500, "token": "tw-tok"})
    url = sim.url("twitter", "/2/users/mr/followers")
    assert (
        len(requests.get(url, params={"max_results": 1000}, headers=auth("twitter")).json()["data"])
        == 1000
    )
    bad = requests.get(url, params={"max_results": 1001}, headers=auth("twitter"))
    assert bad.status_code == 400
    assert bad.json()["type"] == "https://api.twitter.com/2/problems/invalid-request"
    forged = requests.get(
        url, params={"pagination_token": "AAAAAAAAAAAAAAAA"}, headers=auth("twitter")
    )
    assert forged.status_code == 400


def test_mastodon_cursors_are_follow_ids_not_account_ids(sim):
    sim.put_accounts({"provider": "mastodon", "id": "cur", "size": 100, "token": "ma-tok"})
    response = requests.get(
        sim.url("mastodon", "/api/v1/accounts/cur/followers"), headers=auth("mastodon")
    )
    account_ids = {a["id"] for a in response.json()}
    max_id = response.links["next"]["url"].split("max_id=")[1]
    since_id = response.links["prev"]["url"].split("since_id=")[1]
    assert max_id not in account_ids and since_id not in account_ids
    newer = requests.get(response.links["prev"]["url"], headers=auth("mastodon"))
    assert newer.json() == []  # nothing is newer than the newest follow


def test_facebook_previous_link_and_before_cursor(sim):
    sim.put_accounts({"provider": "facebook", "id": "3000", "size": 60, "token": "fb-tok"})
    first = requests.get(
        sim.url("facebook", "/v19.0/me/friends"), params={"limit": 25}, headers=auth("facebook")
    ).json()
    second = requests.get(first["paging"]["next"]).json()
    back = requests.get(second["paging"]["previous"]).json()
    assert back["data"] == first["data"]
    assert "previous" not in first["paging"]


def test_linkedin_projection_paging_gives_the_size_only(sim):
    sim.put_accounts({"provider": "linkedin", "id": "proj", "size": 321, "token": "li-tok"})
    body = requests.get(
        sim.url("linkedin", "/v2/connections"),
        params={"q": "viewer", "projection": "(paging)"},
        headers=auth("linkedin"),
    ).json()
    assert body == {"paging": {"count": 50, "start": 0, "total": 321, "links": []}}
