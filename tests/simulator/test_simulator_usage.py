"""What each provider was asked and would charge: ``/_sim/stats`` ``usage``."""

import pytest
import requests

from simulator.providers import PROVIDER_SIMS
from simulator.testing import FakeClock, run_simulator

ACCOUNTS = [
    {"provider": "twitter", "id": "42", "size": 250, "token": "tw"},
    {"provider": "github", "id": "octocat", "size": 40, "token": "gh"},
]
CLOCK = FakeClock(1_700_000_000.0)
HTTP = requests.Session()
PRICE = PROVIDER_SIMS["twitter"].PRICE_USD


@pytest.fixture(scope="module")
def sim():
    with run_simulator({"accounts": ACCOUNTS}, clock=CLOCK) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(scenario={"accounts": ACCOUNTS})


def twitter(sim, path="/2/users/42/followers", **params):
    return HTTP.get(sim.url("twitter", path), headers={"Authorization": "Bearer tw"}, params=params)


def test_x_bills_every_user_returned(sim):
    """$0.010 per user read, a follower or a looked-up profile ("User: Read", X's
    pay-per-use price, a fact on its class); an unknown user returns none."""
    assert PRICE == 0.010
    token, returned = None, 0
    while True:
        body = twitter(sim, max_results=100, **({"pagination_token": token} if token else {}))
        returned += body.json()["meta"]["result_count"]
        token = body.json()["meta"].get("next_token")
        if not token:
            break
    twitter(sim, "/2/users/42", **{"user.fields": "public_metrics"})  # one user
    assert "errors" in twitter(sim, "/2/users/999").json()  # none
    usage = sim.stats()["usage"]["twitter"]
    assert returned == 250
    assert usage == {
        "calls": 5,
        "counted": 5,
        "not_modified": 0,
        "resources": 251,
        "usd": round(251 * PRICE, 6),
        "instances": {},
    }


def test_refused_and_injected_calls_use_no_quota_and_bill_nothing(sim):
    sim.reset(
        scenario={"accounts": ACCOUNTS, "rate_limits": {"twitter": {"limit": 1, "window_s": 900}}}
    )
    assert twitter(sim, max_results=10).status_code == 200
    assert twitter(sim, max_results=10).status_code == 429
    sim.add_faults({"kind": "outage", "provider": "twitter"})
    assert twitter(sim, max_results=10).status_code == 503
    usage = sim.stats()["usage"]["twitter"]
    assert (usage["calls"], usage["counted"], usage["resources"]) == (3, 1, 10)
    assert usage["usd"] == round(10 * PRICE, 6)


def test_free_providers_count_calls_and_bill_nothing(sim):
    HTTP.get(sim.url("github", "/users/octocat/followers"), headers={"Authorization": "token gh"})
    usage = sim.stats()["usage"]
    assert set(usage) == {"github"}
    assert usage["github"]["resources"] == 0 and usage["github"]["usd"] == 0.0
    assert usage["github"]["counted"] == 1
