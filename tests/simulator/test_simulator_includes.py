"""``connections_include``: scenario accounts among each other's connections, per relation."""

import pytest
import requests

from simulator.scenario import ScenarioError, parse_scenario
from simulator.testing import run_simulator

SCENARIO = {
    "accounts": [
        {
            "provider": "github",
            "id": "alice",
            "size": 50,
            "token": "gh-a",
            "connections_include": {"followers": ["bob", "carol"], "following": ["carol"]},
        },
        {"provider": "github", "id": "bob", "size": 3, "token": "gh-b", "numeric_id": 4242},
        {"provider": "github", "id": "carol", "size": 3, "token": "gh-c"},
        {
            "provider": "mastodon",
            "id": "1001",
            "size": 2,
            "token": "ma",
            "connections_include": {"following": ["1002"]},
        },
        {"provider": "mastodon", "id": "1002", "size": 2, "token": "mb"},
    ]
}
HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


def profile_id(sim, login, token):
    return HTTP.get(
        sim.url("github", f"/users/{login}"), headers={"Authorization": f"token {token}"}
    ).json()["id"]


def test_included_accounts_are_listed_with_their_own_profile_ids(sim):
    bob, carol = profile_id(sim, "bob", "gh-b"), profile_id(sim, "carol", "gh-c")
    assert bob == 4242
    page = HTTP.get(
        sim.url("github", "/users/alice/followers?per_page=100"),
        headers={"Authorization": "token gh-a"},
    ).json()
    assert [u["id"] for u in page[:2]] == [bob, carol] and len(page) == 50
    truth = sim.truth("github", "alice")
    assert truth["ids"][:2] == [str(bob), str(carol)] and truth["count"] == 50
    following = sim.truth("github", "alice", relation="following")["ids"]
    assert following[0] == str(carol) and str(bob) not in following


def test_mastodon_following_includes_the_other_account(sim):
    following = HTTP.get(
        sim.url("mastodon", "/api/v1/accounts/1001/following"),
        headers={"Authorization": "Bearer ma"},
    ).json()
    assert following[0]["id"] == "1002"
    assert sim.truth("mastodon", "1001", relation="following")["ids"][0] == "1002"
    assert "1002" not in sim.truth("mastodon", "1001")["ids"]


@pytest.mark.parametrize(
    "include, message",
    [
        ({"friends": ["x"]}, "relations"),
        ({"followers": "bob"}, "list"),
        ([], "object"),
    ],
)
def test_malformed_includes_are_refused(include, message):
    scenario = {"accounts": [{"provider": "github", "id": "a", "connections_include": include}]}
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(scenario)


def test_providers_without_numeric_wire_ids_refuse_includes():
    with pytest.raises(ScenarioError, match="not supported"):
        parse_scenario(
            {
                "accounts": [
                    {
                        "provider": "linkedin",
                        "id": "a",
                        "connections_include": {"connections": ["b"]},
                    }
                ]
            }
        )
    with pytest.raises(ScenarioError, match="numeric"):
        parse_scenario(
            {
                "accounts": [
                    {
                        "provider": "twitter",
                        "id": "1",
                        "connections_include": {"followers": ["bob"]},
                    }
                ]
            }
        )
