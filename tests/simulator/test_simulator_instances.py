"""Federated providers served per instance: ``/mastodon/<name>/…``, ``/bluesky/<name>/…``.

Each instance holds its own accounts (an account answers only where it lives,
and a token only where it was issued), its own rate limits (the provider's
defaults, counted per instance, unless rules name the instance), its own
faults, truth, changes and usage; a PLC directory names each Bluesky
account's PDS.
"""

import pytest
import requests

from simulator.testing import run_simulator

ACCOUNTS = [
    {"provider": "mastodon", "id": "1", "size": 200, "token": "ma-default"},
    {"provider": "mastodon", "id": "2", "size": 120, "token": "ma-a", "instance": "a.example"},
    {"provider": "mastodon", "id": "3", "size": 90, "token": "ma-b", "instance": "b.example"},
    {"provider": "bluesky", "id": "alice.bsky.social", "size": 10, "token": "bs"},
    {"provider": "bluesky", "id": "carol.pds.example", "size": 30, "token": "bs-c",
     "instance": "pds.example"},
]  # fmt: skip
HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator({"accounts": ACCOUNTS}) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(scenario={"accounts": ACCOUNTS})


def mastodon(sim, instance, path, token, **params):
    prefix = f"/mastodon/{instance}" if instance else "/mastodon"
    return HTTP.get(
        f"{sim.base_url}{prefix}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_an_account_is_served_on_its_own_instance_only(sim):
    assert mastodon(sim, "a.example", "/api/v1/accounts/2", "ma-a").status_code == 200
    assert mastodon(sim, None, "/api/v1/accounts/1", "ma-default").status_code == 200
    # elsewhere it does not exist, and its token means nothing there
    assert mastodon(sim, "b.example", "/api/v1/accounts/2", "ma-b").status_code == 404
    assert mastodon(sim, None, "/api/v1/accounts/2", "ma-default").status_code == 404
    assert mastodon(sim, "b.example", "/api/v1/accounts/3", "ma-a").status_code == 401
    me = mastodon(sim, "a.example", "/api/v1/accounts/verify_credentials", "ma-a")
    assert me.status_code == 200 and me.json()["id"] == "2"


def test_links_stay_on_the_instance_and_pages_sum_to_the_truth(sim):
    ids, path, params = [], "/api/v1/accounts/2/followers", {"limit": 80}
    while path:
        page = mastodon(sim, "a.example", path, "ma-a", **params)
        assert page.status_code == 200
        ids += [account["id"] for account in page.json()]
        nxt = page.links.get("next", {}).get("url")
        assert nxt is None or "/mastodon/a.example/api/v1/accounts/2/followers" in nxt
        path, params = (
            (nxt.removeprefix(f"{sim.base_url}/mastodon/a.example"), {}) if nxt else (None, {})
        )
    assert ids == sim.truth("mastodon", "2", instance="a.example")["ids"]


def test_truth_and_changes_name_the_instance(sim):
    assert sim.truth("mastodon", "2", instance="a.example")["count"] == 120
    missing = HTTP.get(f"{sim.base_url}/_sim/truth/mastodon/2", params={"instance": "b.example"})
    assert missing.status_code == 404
    added = sim.change("mastodon", "2", add=2, instance="a.example")["added"]
    assert set(sim.truth("mastodon", "2", instance="a.example")["ids"][:2]) == set(added)
    wrong = HTTP.post(
        f"{sim.base_url}/_sim/changes",
        json={"provider": "mastodon", "account_id": "2", "add": 1, "instance": "b.example"},
    )
    assert wrong.status_code == 400


def test_each_instance_has_its_own_rate_limits(sim):
    rule = {"limit": 2, "window_s": 300, "scope": "app", "instance": "a.example"}
    sim.reset(scenario={"accounts": ACCOUNTS, "rate_limits": {"mastodon": [
        rule, {"limit": 5, "window_s": 300, "scope": "app"}]}})  # fmt: skip
    a = [mastodon(sim, "a.example", "/api/v1/accounts/2", "ma-a") for _ in range(3)]
    assert [r.status_code for r in a] == [200, 200, 429]
    assert a[0].headers["X-RateLimit-Limit"] == "2"
    # the provider's rule holds on every other instance, each counting its own calls
    b = [mastodon(sim, "b.example", "/api/v1/accounts/3", "ma-b") for _ in range(5)]
    d = [mastodon(sim, None, "/api/v1/accounts/1", "ma-default") for _ in range(5)]
    assert all(r.status_code == 200 for r in b + d)
    assert (
        b[0].headers["X-RateLimit-Limit"] == "5" and b[-1].headers["X-RateLimit-Remaining"] == "0"
    )
    usage = sim.stats()["usage"]["mastodon"]["instances"]
    assert usage["a.example"]["calls"] == 3 and usage["b.example"]["calls"] == 5


def test_a_fault_may_name_an_instance(sim):
    sim.add_faults({"kind": "outage", "provider": "mastodon", "instance": "a.example"})
    assert mastodon(sim, "a.example", "/api/v1/accounts/2", "ma-a").status_code >= 500
    assert mastodon(sim, "b.example", "/api/v1/accounts/3", "ma-b").status_code == 200
    assert mastodon(sim, None, "/api/v1/accounts/1", "ma-default").status_code == 200


def test_a_rate_limit_fault_may_name_an_instance(sim):
    sim.add_faults(
        {"kind": "rate_limit", "provider": "mastodon", "instance": "b.example",
         "limit": 1, "window_s": 300, "scope": "app"}
    )  # fmt: skip
    b = [mastodon(sim, "b.example", "/api/v1/accounts/3", "ma-b").status_code for _ in range(2)]
    assert b == [200, 429]
    assert mastodon(sim, "a.example", "/api/v1/accounts/2", "ma-a").status_code == 200


def test_the_plc_directory_names_each_accounts_pds(sim):
    did = HTTP.get(
        f"{sim.base_url}/bluesky/xrpc/com.atproto.identity.resolveHandle",
        params={"handle": "carol.pds.example"},
    ).json()["did"]
    document = HTTP.get(f"{sim.base_url}/bluesky/plc/{did}").json()
    assert document["id"] == did and document["alsoKnownAs"] == ["at://carol.pds.example"]
    (service,) = document["service"]
    assert service["id"] == "#atproto_pds" and service["type"] == "AtprotoPersonalDataServer"
    assert service["serviceEndpoint"] == f"{sim.base_url}/bluesky/pds.example"
    profile = HTTP.get(
        f"{service['serviceEndpoint']}/xrpc/app.bsky.actor.getProfile",
        params={"actor": did},
        headers={"Authorization": "Bearer bs-c"},
    )
    assert profile.status_code == 200 and profile.json()["followersCount"] == 30
    # the default PDS's account
    other = HTTP.get(
        f"{sim.base_url}/bluesky/xrpc/com.atproto.identity.resolveHandle",
        params={"handle": "alice.bsky.social"},
    ).json()["did"]
    endpoint = HTTP.get(f"{sim.base_url}/bluesky/plc/{other}").json()["service"][0]
    assert endpoint["serviceEndpoint"] == f"{sim.base_url}/bluesky"
    assert HTTP.get(f"{sim.base_url}/bluesky/plc/did:plc:unknown").status_code == 404


def test_an_instance_name_cannot_shadow_the_default_paths(sim):
    bad = {"provider": "mastodon", "id": "9", "token": "t9", "instance": "api"}
    response = HTTP.post(f"{sim.base_url}/_sim/reset", json={"scenario": {"accounts": [bad]}})
    assert response.status_code == 400
