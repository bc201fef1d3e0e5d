"""Networks that change at run time (``POST /_sim/changes``), and list order.

New connections are the newest: first in a newest-first list (Mastodon, Bluesky,
X, and as assumed Facebook and LinkedIn), last in GitHub's (observed oldest
first). Truth, every page, every total follows; keyset cursors (Mastodon follow
ids, Bluesky sortAt, X tokens, Facebook cursors) stay good across changes,
positional ones (GitHub ``page``, LinkedIn ``start``) shift as they would.
"""

import re

import pytest
import requests

from simulator.identities import ConnectionSpace
from simulator.providers import PROVIDER_SIMS
from simulator.scenario import Account
from simulator.testing import run_simulator
from tests.simulator.test_simulator_pagination import TOKENS, WALKERS, auth

TOKENS = {**TOKENS, "bluesky": "bs-tok"}
ACCOUNT = {
    "github": "octocat",
    "twitter": "42",
    "facebook": "100000000000042",
    "linkedin": "li",
    "mastodon": "7",
    "bluesky": "alice.bsky.social",
}
SIZE = 130
HTTP = requests.Session()
#: the profile call and where its body holds the size of the default relation
PROFILE = {
    "github": ("/users/octocat", {}, lambda b: b["followers"]),
    "twitter": (
        "/2/users/42",
        {"user.fields": "public_metrics"},
        lambda b: b["data"]["public_metrics"]["followers_count"],
    ),
    "facebook": (
        "/v19.0/me",
        {"fields": "friends.limit(0).summary(true)"},
        lambda b: b["friends"]["summary"]["total_count"],
    ),
    "linkedin": (
        "/v2/connections",
        {"q": "viewer", "projection": "(paging)"},
        lambda b: b["paging"]["total"],
    ),
    "mastodon": ("/api/v1/accounts/7", {}, lambda b: b["followers_count"]),
    "bluesky": (
        "/xrpc/app.bsky.actor.getProfile",
        {"actor": "alice.bsky.social"},
        lambda b: b["followersCount"],
    ),
}


def scenario(size=SIZE):
    return {
        "accounts": [
            {"provider": p, "id": ACCOUNT[p], "size": size, "token": TOKENS[p]}
            for p in PROVIDER_SIMS
        ],
        # this file is about lists, not quotas
        "rate_limits": {p: [] for p in PROVIDER_SIMS},
    }


@pytest.fixture(scope="module")
def sim():
    with run_simulator(scenario()) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(scenario=scenario())


def truth(sim, provider, relation=None):
    return sim.truth(provider, ACCOUNT[provider], relation)["ids"]


def walk_bluesky(sim, actor, http, relation="followers"):
    method = "getFollowers" if relation == "followers" else "getFollows"
    key = "followers" if relation == "followers" else "follows"
    params, ids, pages = {"actor": actor, "limit": 50}, [], 0
    while True:
        body = http.get(
            sim.url("bluesky", f"/xrpc/app.bsky.graph.{method}"),
            params=params,
            headers={"Authorization": "Bearer bs-tok"},
        ).json()
        ids += [item["did"] for item in body[key]]
        pages += 1
        if "cursor" not in body:
            return ids, pages
        params["cursor"] = body["cursor"]


def walk(sim, provider, relation="followers"):
    walker = walk_bluesky if provider == "bluesky" else WALKERS[provider]
    kwargs = {"relation": relation} if provider not in ("facebook", "linkedin") else {}
    return walker(sim, ACCOUNT[provider], HTTP, **kwargs)[0]


def size_in_profile(sim, provider):
    path, params, read = PROFILE[provider]
    headers = auth(provider) if provider != "bluesky" else {"Authorization": "Bearer bs-tok"}
    return read(HTTP.get(sim.url(provider, path), params=params, headers=headers).json())


@pytest.mark.parametrize("provider", list(PROVIDER_SIMS))
def test_added_connections_are_the_newest_and_everything_follows(sim, provider):
    before = truth(sim, provider)
    change = sim.change(provider, ACCOUNT[provider], add=3)
    added = change["added"]
    assert change["removed"] == [] and change["count"] == SIZE + 3
    assert len(set(added)) == 3 and not set(added) & set(before)
    assert all(re.fullmatch(PROVIDER_SIMS[provider].ID_FORM, i) for i in added)
    after = truth(sim, provider)
    if PROVIDER_SIMS[provider].NEWEST_FIRST:
        assert after == added[::-1] + before  # the last added is the newest of all
    else:
        assert after == before + added
    assert walk(sim, provider) == after
    assert size_in_profile(sim, provider) == SIZE + 3


@pytest.mark.parametrize("provider", list(PROVIDER_SIMS))
def test_removed_connections_are_gone_from_every_page(sim, provider):
    before = truth(sim, provider)
    gone = [before[2], before[77], before[-1]]
    change = sim.change(provider, ACCOUNT[provider], remove=gone)
    assert change["removed"] == gone and change["count"] == SIZE - 3
    expected = [i for i in before if i not in gone]
    assert truth(sim, provider) == expected
    assert walk(sim, provider) == expected
    assert size_in_profile(sim, provider) == SIZE - 3


@pytest.mark.parametrize("provider", ["github", "twitter", "mastodon", "bluesky"])
def test_the_other_relation_changes_on_its_own(sim, provider):
    followers = truth(sim, provider)
    added = sim.change(provider, ACCOUNT[provider], "following", add=2)["added"]
    assert set(added) <= set(truth(sim, provider, "following"))
    assert truth(sim, provider) == followers


def test_explicit_ids_readded_ids_and_numbers(sim):
    base = truth(sim, "mastodon")
    sim.change("mastodon", "7", remove=[base[5]])
    # follows again: now the newest follower, not at its old place
    assert sim.change("mastodon", "7", add=[base[5]])["added"] == [base[5]]
    assert truth(sim, "mastodon")[:1] == [base[5]] and len(truth(sim, "mastodon")) == SIZE
    # GitHub ids are numbers on the wire: a number is taken for one
    github = sim.change("github", "octocat", add=[12345])
    assert github["added"] == ["12345"] and truth(sim, "github")[-1] == "12345"


def test_made_up_ids_are_deterministic(sim):
    first = sim.change("twitter", "42", add=4)["added"]
    sim.reset(scenario=scenario())
    assert sim.change("twitter", "42", add=4)["added"] == first


@pytest.mark.parametrize("provider", ["twitter", "facebook", "mastodon", "bluesky"])
def test_keyset_cursors_survive_changes(sim, provider):
    """A client half-way through its pages sees no duplicate and no gap when people
    follow (at the head) or unfollow (on a page it already has) meanwhile."""
    before = truth(sim, provider)
    first, cursor = _first_page_and_cursor(sim, provider)
    assert first == before[: len(first)]
    sim.change(provider, ACCOUNT[provider], add=5, remove=[before[1]])
    rest = _rest(sim, provider, cursor)
    assert rest == before[len(first) :]


def _first_page_and_cursor(sim, provider):
    headers = {"Authorization": f"Bearer {TOKENS[provider]}"}
    if provider == "twitter":
        body = HTTP.get(sim.url("twitter", "/2/users/42/followers"), headers=headers).json()
        return [u["id"] for u in body["data"]], body["meta"]["next_token"]
    if provider == "facebook":
        body = HTTP.get(sim.url("facebook", "/v19.0/me/friends"), headers=headers).json()
        return [f["id"] for f in body["data"]], body["paging"]["next"]
    if provider == "mastodon":
        response = HTTP.get(sim.url("mastodon", "/api/v1/accounts/7/followers"), headers=headers)
        return [a["id"] for a in response.json()], response.links["next"]["url"]
    body = HTTP.get(
        sim.url("bluesky", "/xrpc/app.bsky.graph.getFollowers"),
        params={"actor": "alice.bsky.social"},
        headers=headers,
    ).json()
    return [f["did"] for f in body["followers"]], body["cursor"]


def _rest(sim, provider, cursor):
    headers = {"Authorization": f"Bearer {TOKENS[provider]}"}
    ids = []
    while cursor:
        if provider == "twitter":
            body = HTTP.get(
                sim.url("twitter", "/2/users/42/followers"),
                params={"pagination_token": cursor},
                headers=headers,
            ).json()
            ids += [u["id"] for u in body.get("data", [])]
            cursor = body["meta"].get("next_token")
        elif provider == "facebook":
            body = HTTP.get(cursor).json()
            ids += [f["id"] for f in body["data"]]
            cursor = body.get("paging", {}).get("next")
        elif provider == "mastodon":
            response = HTTP.get(cursor, headers=headers)
            ids += [a["id"] for a in response.json()]
            cursor = response.links.get("next", {}).get("url")
        else:
            body = HTTP.get(
                sim.url("bluesky", "/xrpc/app.bsky.graph.getFollowers"),
                params={"actor": "alice.bsky.social", "cursor": cursor},
                headers=headers,
            ).json()
            ids += [f["did"] for f in body["followers"]]
            cursor = body.get("cursor")
    return ids


def test_positional_pages_shift_as_they_do_for_real(sim):
    """LinkedIn's ``start`` counts from the head: five new connections there push the
    second page five places on (the client sees five of the first page again)."""
    before = truth(sim, "linkedin")
    sim.change("linkedin", "li", add=5)
    second = HTTP.get(
        sim.url("linkedin", "/v2/connections"),
        params={"q": "viewer", "start": 50, "count": 50},
        headers=auth("linkedin"),
    ).json()["elements"]
    assert [e["to"] for e in second] == before[45:95]


def test_mastodon_since_id_and_min_id_read_only_the_new_followers(sim):
    first = HTTP.get(sim.url("mastodon", "/api/v1/accounts/7/followers"), headers=auth("mastodon"))
    prev = first.links["prev"]["url"]  # since_id: the newest follow of that page
    assert "since_id=" in prev
    assert HTTP.get(prev, headers=auth("mastodon")).json() == []
    added = sim.change("mastodon", "7", add=7)["added"]
    newer = HTTP.get(prev, headers=auth("mastodon"))
    assert [a["id"] for a in newer.json()] == added[::-1]  # newest first, only the new ones
    since_id = prev.split("since_id=")[1]
    nearest = HTTP.get(
        sim.url("mastodon", "/api/v1/accounts/7/followers"),
        params={"min_id": since_id, "limit": 3},
        headers=auth("mastodon"),
    ).json()
    assert [a["id"] for a in nearest] == added[2::-1]  # the 3 just above the cursor


def test_only_the_change_is_stored():
    space = Account("github", "whale", size=1_000_000_000).space()
    assert isinstance(space, ConnectionSpace) and not hasattr(space, "__dict__")
    gone = space.slice(10, 12)[1]
    for native in gone:
        assert space.remove(native)
    for native in space.fresh_natives(3):
        space.add(native)
    assert (len(space.added), len(space.removed), space.size) == (3, 2, 1_000_000_001)
    assert space.overrides == {}  # nothing stored per unchanged connection
    # oldest first: the base from index 0, the added ones at the very end
    assert space.slice(9, 11)[1] == [space.native(9), space.native(12)]
    assert space.slice(space.size - 3, space.size)[1] == space.added


def test_a_new_scenario_or_account_starts_the_network_again(sim):
    before = truth(sim, "twitter")
    sim.change("twitter", "42", add=2)
    sim.reset(accounts=True)
    assert truth(sim, "twitter") == before
    sim.change("twitter", "42", add=2)
    sim.put_accounts({"provider": "twitter", "id": "42", "size": SIZE, "token": "tw-tok"})
    assert truth(sim, "twitter") == before


@pytest.mark.parametrize(
    "body, reason",
    [
        ([], "expected a JSON object"),
        ({"provider": "myspace", "account_id": "x", "add": 1}, "unknown provider 'myspace'"),
        ({"provider": "github", "add": 1}, "'account_id' is required"),
        ({"provider": "github", "account_id": "nobody", "add": 1}, "unknown account github/nobody"),
        ({"provider": "linkedin", "account_id": "li", "relation": "followers", "add": 1},
         "linkedin relations are ['connections']"),
        ({"provider": "github", "account_id": "octocat", "add": -1}, "'add' must be a count"),
        ({"provider": "github", "account_id": "octocat", "add": True}, "'add' must be a count"),
        ({"provider": "github", "account_id": "octocat", "add": "3"}, "'add' must be a count"),
        ({"provider": "github", "account_id": "octocat"}, "nothing to change"),
        ({"provider": "github", "account_id": "octocat", "add": ["abc"]},
         "'abc' is not a github connection id"),
        ({"provider": "github", "account_id": "octocat", "add": ["5", "5"]}, "given twice"),
        ({"provider": "github", "account_id": "octocat", "remove": "5"}, "'remove' must be a list"),
        ({"provider": "github", "account_id": "octocat", "remove": ["5"]},
         "5 is not in github/octocat followers"),
        ({"provider": "github", "account_id": "octocat", "colour": "red"}, "unknown field(s)"),
        ({"provider": "mastodon", "account_id": "7", "add": 1, "instance": "fosstodon.org"},
         "unknown account mastodon/7 on instance 'fosstodon.org'"),
        ({"provider": "github", "account_id": "octocat", "add": 1, "instance": "x"},
         "github has no instances"),
    ],
)  # fmt: skip
def test_bad_changes_are_a_400_with_the_reason(sim, body, reason):
    response = HTTP.post(f"{sim.base_url}/_sim/changes", json=body)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_a_bad_change_changes_nothing_even_in_part(sim):
    before = truth(sim, "github")
    present = before[0]
    for body in (
        {"remove": [before[3]], "add": [present]},  # the add is already there
        {"remove": [before[3], "999999999"]},  # the second is not there
        {"remove": [before[3]], "add": [before[3]]},  # both
    ):
        response = HTTP.post(
            f"{sim.base_url}/_sim/changes",
            json={"provider": "github", "account_id": "octocat", **body},
        )
        assert response.status_code == 400, body
    assert truth(sim, "github") == before
    not_json = HTTP.post(f"{sim.base_url}/_sim/changes", data="{nope")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
