"""The ``/_sim/`` control API: truth, stats, call log, accounts, reset."""

import pytest
import requests

from simulator.calls import Call, CallLog
from simulator.testing import FakeClock, run_simulator

SCENARIO = {
    "accounts": [
        {"provider": "github", "id": "octocat", "size": 75, "token": "gh"},
        {"provider": "twitter", "id": "42", "size": 10, "token": "tw"},
        {"provider": "linkedin", "id": "li", "size": 5, "token": "li"},
    ]
}
CLOCK = FakeClock(1_700_000_000.0)
HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO, clock=CLOCK) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(accounts=True)


def github(sim, path="/users/octocat/followers", token="gh"):
    return HTTP.get(sim.url("github", path), headers={"Authorization": f"token {token}"})


def test_truth_is_strings_in_provider_form_with_handles(sim):
    truth = sim.truth("github", "octocat")
    assert truth["count"] == 75 and len(truth["ids"]) == len(truth["handles"]) == 75
    assert all(i.isdigit() for i in truth["ids"])
    first_page = github(sim).json()
    assert [u["login"] for u in first_page] == truth["handles"][:30]
    linkedin = sim.truth("linkedin", "li")
    assert all(i.startswith("urn:li:person:") for i in linkedin["ids"])
    assert linkedin["handles"] == [None] * 5


def test_truth_slices_and_errors(sim):
    sliced = HTTP.get(
        f"{sim.base_url}/_sim/truth/github/octocat", params={"offset": 70, "limit": 10}
    ).json()
    assert sliced["ids"] == sim.truth("github", "octocat")["ids"][70:]
    assert HTTP.get(f"{sim.base_url}/_sim/truth/github/nobody").status_code == 404
    assert HTTP.get(f"{sim.base_url}/_sim/truth/myspace/x").status_code == 400
    assert HTTP.get(f"{sim.base_url}/_sim/truth/linkedin/li?relation=following").status_code == 400


def test_accounts_upsert_and_remove_at_run_time(sim):
    before = sim.truth("github", "octocat")["ids"]
    sim.put_accounts(
        {"provider": "github", "id": "octocat", "start": 5, "size": 75, "token": "gh"},
        {"provider": "github", "id": "newbie", "size": 3, "token": "gh-new"},
    )
    after = sim.truth("github", "octocat")["ids"]
    assert after[:70] == before[5:] and not set(after[70:]) & set(before)
    assert github(sim, "/users/newbie/followers", "gh-new").status_code == 200
    response = HTTP.post(
        f"{sim.base_url}/_sim/accounts", json={"remove": [{"provider": "github", "id": "newbie"}]}
    )
    assert response.json()["removed"] == [{"provider": "github", "id": "newbie"}]
    assert github(sim, "/users/newbie/followers", "gh-new").status_code == 401  # token gone too
    listed = HTTP.get(f"{sim.base_url}/_sim/accounts", params={"provider": "github"}).json()
    assert [a["id"] for a in listed["accounts"]] == ["octocat"]


@pytest.mark.parametrize(
    "body",
    [
        {"accounts": [{"provider": "github", "id": "x", "size": -1}]},
        {"accounts": [{"provider": "myspace", "id": "x"}]},
        {"accounts": [{"provider": "github", "id": "x", "colour": "red"}]},
        {"accounts": [{"provider": "github"}]},
    ],
)
def test_bad_accounts_are_rejected(sim, body):
    response = HTTP.post(f"{sim.base_url}/_sim/accounts", json=body)
    assert response.status_code == 400 and "error" in response.json()


def test_a_bad_request_changes_nothing_even_in_part(sim):
    """Every control request is checked whole before any of it applies."""
    sim.add_faults({"id": "keep", "kind": "outage", "provider": "twitter"})
    bad_faults = [
        {"clear": True, "add": [{"kind": "outage", "provider": "myspace"}]},
        {"remove": ["keep"], "add": [{"kind": "no-such-kind"}]},
        {"faults": [{"kind": "outage"}, {"kind": "error", "provider": "github", "code": 999}]},
        {"remove": "keep"},
        {"clear": "yes"},
    ]
    for body in bad_faults:
        response = HTTP.post(f"{sim.base_url}/_sim/faults", json=body)
        assert response.status_code == 400 and response.json()["error"], body
    assert [f["id"] for f in sim.faults()] == ["keep"]
    bad_accounts = {
        "accounts": [{"provider": "github", "id": "newbie", "size": 1}],
        "remove": [{"provider": "github", "id": "octocat"}, {"provider": "myspace", "id": "x"}],
    }
    response = HTTP.post(f"{sim.base_url}/_sim/accounts", json=bad_accounts)
    assert response.status_code == 400 and "remove" in response.json()["error"]
    listed = HTTP.get(f"{sim.base_url}/_sim/accounts", params={"provider": "github"}).json()
    assert [a["id"] for a in listed["accounts"]] == ["octocat"]
    for body in ({"accounts": "yes"}, {"everything": True}):
        response = HTTP.post(f"{sim.base_url}/_sim/reset", json=body)
        assert response.status_code == 400 and response.json()["error"]
    assert [f["id"] for f in sim.faults()] == ["keep"]


def test_truth_of_an_instance_is_not_served_yet(sim):
    response = HTTP.get(f"{sim.base_url}/_sim/truth/github/octocat", params={"instance": "x"})
    assert response.status_code == 400 and "instances" in response.json()["error"]


def test_bad_json_is_a_400(sim):
    response = HTTP.post(
        f"{sim.base_url}/_sim/faults", data="{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_stats_by_provider_token_and_kind(sim):
    github(sim)
    github(sim, "/users/octocat")
    github(sim, token="bad")
    HTTP.get(sim.url("twitter", "/2/users/42/followers"), headers={"Authorization": "Bearer tw"})
    calls = sim.stats()["calls"]
    assert calls["total"] == 4
    assert calls["by_provider"] == {"github": 3, "twitter": 1}
    assert calls["by_token"] == {"gh": 2, "bad": 1, "tw": 1}
    assert calls["by_provider_token"]["github"] == {"gh": 2, "bad": 1}
    assert calls["by_kind"]["github"] == {"page": 2, "profile": 1}
    assert calls["by_status"] == {"200": 3, "401": 1}


def test_call_log_filters_and_hides_query_strings(sim):
    CLOCK.advance(1)
    github(sim)
    mark = CLOCK.now
    CLOCK.advance(1)
    HTTP.get(
        sim.url("twitter", "/2/users/42/followers?pagination_token=X"),
        headers={"Authorization": "Bearer tw"},
    )
    github(sim, "/users/octocat")
    everything = sim.calls()
    assert [c["provider"] for c in everything] == ["github", "twitter", "github"]
    assert [c["kind"] for c in sim.calls(provider="github")] == ["page", "profile"]
    later = sim.calls(since=mark)
    assert [c["provider"] for c in later] == ["twitter", "github"]
    assert all("?" not in c["path"] for c in everything)
    entry = everything[0]
    assert {"seq", "t", "provider", "account", "token", "kind", "status", "path"} <= set(entry)
    assert entry["account"] == "octocat" and entry["token"] == "gh" and entry["status"] == 200
    assert [c["seq"] for c in sim.calls(since_seq=entry["seq"])] == [
        c["seq"] for c in everything[1:]
    ]
    assert len(sim.calls(token="tw")) == 1 and len(sim.calls(limit=1)) == 1


def test_call_log_is_bounded():
    log = CallLog(limit=3)
    for n in range(5):
        log.append(Call(float(n), "github", "page", "/p", "127.0.0.1"))
    assert [c["t"] for c in log.query()] == [2.0, 3.0, 4.0] and log.dropped == 2


def test_reset_keeps_accounts_unless_asked(sim):
    sim.put_accounts({"provider": "github", "id": "extra", "size": 1, "token": "gh-x"})
    sim.add_faults({"kind": "outage", "provider": "github"})
    github(sim)
    sim.reset()
    assert sim.stats()["calls"]["total"] == 0 and sim.faults() == []
    assert sim.calls() == []
    assert github(sim, "/users/extra/followers", "gh-x").status_code == 200
    sim.reset(accounts=True)
    assert github(sim, "/users/extra/followers", "gh-x").status_code == 401


def test_reset_with_a_new_scenario(sim):
    sim.reset(scenario={"accounts": [{"provider": "mastodon", "id": "9", "size": 2}]})
    assert HTTP.get(sim.url("mastodon", "/api/v1/accounts/9/followers")).status_code == 200
    assert HTTP.get(sim.url("github", "/users/octocat")).status_code == 404
    assert github(sim).status_code == 401  # its token went with it
    bad = HTTP.post(f"{sim.base_url}/_sim/reset", json={"scenario": {"accounts": "nope"}})
    assert bad.status_code == 400
    sim.reset(scenario=SCENARIO)


def test_health(sim):
    assert HTTP.get(f"{sim.base_url}/_sim/health").json() == {"ok": True, "accounts": 3}
