"""The providers' limits as they announce them: rules, scopes, paging, every answer's headers.

Without scenario rules each provider's real documented limits apply (the
facts on its class, ``ProviderSim.RATE_LIMITS``); several rules may meet one
call, and its answer speaks for the one with the fewest calls left.
"""

import json
import math

import pytest
import requests

from simulator.providers import PROVIDER_SIMS
from simulator.testing import FakeClock, run_simulator

ACCOUNTS = [
    {"provider": "github", "id": "octocat", "size": 10, "token": "gh1", "tokens": ["gh1-pat"]},
    {"provider": "github", "id": "hubot", "size": 10, "token": "gh2"},
    {"provider": "twitter", "id": "42", "size": 10, "token": "tw", "tokens": ["tw-app2"]},
    {"provider": "facebook", "id": "100000000000007", "size": 10, "token": "fb"},
    {"provider": "facebook", "id": "100000000000008", "size": 10, "token": "fb2"},
    {"provider": "linkedin", "id": "li", "size": 10, "token": "li"},
    {"provider": "mastodon", "id": "1", "size": 200, "token": "ma", "tokens": ["ma-app2"]},
    {"provider": "bluesky", "id": "alice.bsky.social", "size": 10, "token": "bs"},
]
PAGE = {provider: PROVIDER_SIMS[provider].SAMPLE_PATHS["page"] for provider in PROVIDER_SIMS}
ACCOUNT = {
    "github": "octocat",
    "twitter": "42",
    "facebook": "100000000000007",
    "linkedin": "li",
    "mastodon": "1",
    "bluesky": "alice.bsky.social",
}
TOKEN = {a["provider"]: a["token"] for a in reversed(ACCOUNTS)}
START = 1_700_000_000.0  # 22:13:20 UTC: aligned 5 and 15 min windows end at 22:15:00
CLOCK = FakeClock(START)
HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator({"accounts": ACCOUNTS}, clock=CLOCK) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    CLOCK.now = START
    sim.reset(scenario={"accounts": ACCOUNTS})


def rules(sim, **rate_limits):
    sim.reset(scenario={"accounts": ACCOUNTS, "rate_limits": rate_limits})


def call(sim, provider, path=None, token="default", **params):
    token = TOKEN[provider] if token == "default" else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = path or PROVIDER_SIMS[provider].sample_path("page", ACCOUNT[provider])
    return HTTP.get(sim.url(provider, path), headers=headers, params=params)


def figures(response, prefix="X-RateLimit-"):
    return {k: response.headers.get(f"{prefix}{k}") for k in ("Limit", "Remaining")}


# --- the real limits, announced -------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDER_SIMS))
def test_each_provider_announces_its_real_limit_or_nothing(sim, provider):
    """The first call's headers name the class's own rule for it (the tightest that
    applies: all of them have the whole limit left but one)."""
    response = call(sim, provider)
    assert response.status_code == 200
    applying = [
        r
        for r in sim.stats()["rate_limits"]
        if r["provider"] == provider and sum(k["used"] for k in r["by_key"].values()) == 1
    ]
    assert all(r["implicit"] for r in applying)
    assert len(applying) == len(
        [r for r in PROVIDER_SIMS[provider].RATE_LIMITS if _meets_a_first_page(provider, r)]
    )
    limits = {r["limit"] for r in applying}
    expected = {
        "github": ("X-RateLimit-Limit", "X-RateLimit-Remaining"),
        "twitter": ("x-rate-limit-limit", "x-rate-limit-remaining"),
        "mastodon": ("X-RateLimit-Limit", "X-RateLimit-Remaining"),
        "bluesky": ("RateLimit-Limit", "RateLimit-Remaining"),
    }
    if provider in expected:
        limit, left = (int(response.headers[h]) for h in expected[provider])
        assert limit == min(limits) and left == limit - 1
    elif provider == "facebook":
        assert set(json.loads(response.headers["x-app-usage"])) == {
            "call_count",
            "total_time",
            "total_cputime",
        }
    else:  # LinkedIn publishes none: nothing announced, nothing enforced
        assert not limits and not [h for h in response.headers if "rate" in h.lower()]


def _meets_a_first_page(provider, rule):
    return (
        rule.get("applies_to", "all") == "all"
        and rule.get("auth", "any") != "none"
        and rule.get("path_kind") in (None, "page")
        and rule.get("endpoint") is None
    )


def test_github_pools_every_token_of_a_user_and_counts_the_tokenless_by_address(sim):
    first = call(sim, "github", token="gh1")
    pat = call(sim, "github", token="gh1-pat")  # the same user's personal token
    other = call(sim, "github", token="gh2")  # another user
    assert figures(first) == {"Limit": "5000", "Remaining": "4999"}
    assert figures(pat) == {"Limit": "5000", "Remaining": "4998"}
    assert figures(other) == {"Limit": "5000", "Remaining": "4999"}
    anonymous = call(sim, "github", token=None)
    assert figures(anonymous) == {"Limit": "60", "Remaining": "59"}
    # a token GitHub does not accept is no user's: its 401 counts by address too
    refused = call(sim, "github", token="nope")
    assert refused.status_code == 401 and figures(refused) == {"Limit": "60", "Remaining": "58"}


def test_github_anonymous_limit_is_enforced_with_its_own_message(sim):
    rules(sim, github=[{"limit": 2, "window_s": 3600, "scope": "ip", "auth": "none"}])
    assert [call(sim, "github", token=None).status_code for _ in range(2)] == [200, 200]
    refused = call(sim, "github", token=None)
    assert refused.status_code == 429
    assert refused.json()["message"].startswith("API rate limit exceeded for 127.0.0.1.")
    assert call(sim, "github").status_code == 200  # a token's calls are not this rule's


def test_every_answer_the_quota_sees_carries_the_headers(sim):
    """Errors included, as the real throttles count them (a Mastodon 404 and 401 carry
    ``X-RateLimit-*``: tests/fixtures/real-more/mastodon)."""
    missing = call(sim, "mastodon", "/api/v1/accounts/999")
    assert missing.status_code == 404 and figures(missing)["Remaining"] == "299"
    refused = call(sim, "mastodon", token="nope")
    assert refused.status_code == 401 and figures(refused) == {"Limit": "300", "Remaining": "299"}
    bad = call(sim, "twitter", max_results="5000")
    assert bad.status_code == 400 and bad.headers["x-rate-limit-remaining"] == "299"


def test_x_counts_every_endpoint_on_its_own(sim):
    followers = call(sim, "twitter", "/2/users/42/followers")
    following = call(sim, "twitter", "/2/users/42/following")
    profile = call(sim, "twitter", "/2/users/42")
    me = call(sim, "twitter", "/2/users/me")
    pairs = [
        (r.headers["x-rate-limit-limit"], r.headers["x-rate-limit-remaining"])
        for r in (followers, following, profile, me)
    ]
    assert pairs == [("300", "299"), ("300", "299"), ("900", "899"), ("75", "74")]
    # per user: another token of the same user shares the endpoint's window
    again = call(sim, "twitter", "/2/users/42/followers", token="tw-app2")
    assert again.headers["x-rate-limit-remaining"] == "298"


def test_x_follows_lookup_refuses_the_301st_call_of_the_window(sim):
    for _ in range(300):
        assert call(sim, "twitter").status_code == 200
    refused = call(sim, "twitter")
    assert refused.status_code == 429 and refused.headers["x-rate-limit-remaining"] == "0"
    assert int(refused.headers["x-rate-limit-reset"]) == START + 900
    assert "Retry-After" not in refused.headers
    assert call(sim, "twitter", "/2/users/42/following").status_code == 200  # its own window
    CLOCK.advance(900)
    assert call(sim, "twitter").status_code == 200


def test_mastodon_paging_throttle_and_the_closest_to_exceeding(sim):
    """Only calls with max_id/since_id/min_id count against the paging rule; the headers
    speak for whichever rule has the fewest calls left (rate_limit_headers.rb)."""
    rules(
        sim,
        mastodon=[
            {"limit": 10, "window_s": 300, "scope": "token"},
            {"limit": 3, "window_s": 900, "scope": "user", "applies_to": "paging"},
        ],
    )
    plain = call(sim, "mastodon")
    assert figures(plain) == {"Limit": "10", "Remaining": "9"}
    next_url = plain.links["next"]["url"]
    paging = [HTTP.get(next_url, headers={"Authorization": "Bearer ma"}) for _ in range(3)]
    assert [figures(r) for r in paging] == [
        {"Limit": "3", "Remaining": "2"},
        {"Limit": "3", "Remaining": "1"},
        {"Limit": "3", "Remaining": "0"},
    ]
    # the paging rule counts per user: the same user's other token is refused too
    refused = HTTP.get(next_url, headers={"Authorization": "Bearer ma-app2"})
    assert refused.status_code == 429 and refused.json() == {"error": "Too many requests"}
    assert figures(refused) == {"Limit": "3", "Remaining": "0"}
    assert refused.headers["X-RateLimit-Reset"] == "2023-11-14T22:15:00.000000Z"  # 900 s aligned
    assert "Retry-After" not in refused.headers  # Mastodon's 429 has none
    # a call that does not page still goes through, on the token's count
    assert figures(call(sim, "mastodon")) == {"Limit": "10", "Remaining": "5"}


def test_mastodon_real_limits_enforced_per_token(sim):
    for _ in range(300):
        assert call(sim, "mastodon", "/api/v1/accounts/1").status_code == 200
    assert call(sim, "mastodon", "/api/v1/accounts/1").status_code == 429
    # the user's other token has its own 300 (the user's 1,500 is far off)
    other = call(sim, "mastodon", "/api/v1/accounts/1", token="ma-app2")
    assert figures(other) == {"Limit": "300", "Remaining": "299"}


def test_mastodon_reset_keeps_the_request_times_fraction(sim):
    """Rack::Attack: now + (period - now.to_i % period), ISO-8601 with microseconds."""
    CLOCK.now = START + 61.582400
    assert call(sim, "mastodon").headers["X-RateLimit-Reset"] == "2023-11-14T22:15:00.582400Z"


def test_facebook_app_limit_rolls_and_grows_with_the_apps_users(sim):
    """200 calls an hour per user of the app, over a rolling hour (here 2 per user, 2
    users: 4 calls in any hour)."""
    rules(
        sim,
        facebook={"limit": 2, "window_s": 3600, "scope": "app", "scale": "app_users"},
    )
    usage = []
    for _ in range(2):
        usage.append(json.loads(call(sim, "facebook").headers["x-app-usage"])["call_count"])
    CLOCK.advance(1800)
    for _ in range(2):
        usage.append(json.loads(call(sim, "facebook").headers["x-app-usage"])["call_count"])
    assert usage == [25, 50, 75, 100]
    assert call(sim, "facebook").json()["error"]["code"] == 4  # the app's limit
    CLOCK.advance(1799)
    assert call(sim, "facebook").status_code == 403  # the first two still within the hour
    CLOCK.advance(2)
    assert call(sim, "facebook").status_code == 200  # they rolled out of it
    (rule,) = [r for r in sim.stats()["rate_limits"] if r["provider"] == "facebook"]
    assert rule["effective_limit"] == 4 and rule["rolling"]


def test_facebook_user_limit_is_enforced_never_announced(sim):
    rules(
        sim,
        facebook=[
            {"limit": 200, "window_s": 3600, "scope": "app"},
            {"limit": 1, "window_s": 3600, "scope": "user"},
        ],
    )
    call(sim, "facebook")
    refused = call(sim, "facebook")
    assert refused.json()["error"]["code"] == 17  # "User request limit reached"
    # the headers speak only for the app's share (1 of 200 calls: 0 percent)
    assert json.loads(refused.headers["x-app-usage"])["call_count"] == 0
    assert "Retry-After" not in refused.headers


def test_linkedin_daily_windows_reset_at_midnight_utc(sim):
    rules(sim, linkedin={"limit": 1, "window_s": 86400, "scope": "user"})
    assert call(sim, "linkedin").status_code == 200
    assert call(sim, "linkedin").status_code == 429
    (rule,) = [r for r in sim.stats()["rate_limits"] if r["provider"] == "linkedin"]
    midnight = (math.floor(START / 86400) + 1) * 86400
    assert rule["by_key"]["user:li"]["reset"] == midnight
    CLOCK.now = midnight
    assert call(sim, "linkedin").status_code == 200


def test_bluesky_pds_limit_is_per_address(sim):
    one = call(sim, "bluesky")
    assert one.headers["RateLimit-Policy"] == "3000;w=300"
    other = HTTP.get(
        sim.url("bluesky", PAGE["bluesky"].format(account="alice.bsky.social")),
        headers={"Authorization": "Bearer bs", "X-Forwarded-For": "10.0.0.9"},
    )
    assert (one.headers["RateLimit-Remaining"], other.headers["RateLimit-Remaining"]) == (
        "2999",
        "2999",
    )


def test_an_empty_list_means_no_limits(sim):
    rules(sim, mastodon=[], github=[])
    for provider in ("mastodon", "github"):
        response = call(sim, provider)
        assert response.status_code == 200
        assert not [h for h in response.headers if "ratelimit" in h.lower()]
    assert {r["provider"] for r in sim.stats()["rate_limits"]} == {"twitter", "facebook", "bluesky"}


def test_one_rule_the_old_way_still_works(sim):
    rules(sim, github={"limit": 1, "window_s": 60, "scope": "token"})
    assert [call(sim, "github").status_code for _ in range(2)] == [200, 429]
    # a "token" rule counts a call without one by its address
    assert call(sim, "github", token=None).status_code == 200


@pytest.mark.parametrize(
    "rule, reason",
    [
        ({"limit": 1, "window_s": 60, "scope": "planet"}, "'scope' must be one of"),
        ({"limit": 1, "window_s": 60, "applies_to": "pages"}, "'applies_to' must be one of"),
        ({"limit": 1, "window_s": 60, "auth": "maybe"}, "'auth' must be one of"),
        ({"limit": 1, "window_s": 60, "endpoint": "/2/nope"}, "'endpoint' must be one of"),
        ({"limit": 1, "window_s": 60, "rolling": "yes"}, "'rolling' must be true or false"),
        ({"limit": 1, "window_s": 60, "colour": "red"}, "unknown field(s) ['colour']"),
        ({"limit": 1, "window_s": 60, "instance": "mastodon.social"}, "'instance' only for"),
        ({"limit": -1, "window_s": 60}, "'limit' must be a non-negative integer"),
    ],
)
def test_a_bad_rule_is_a_400_with_the_reason_and_changes_nothing(sim, rule, reason):
    response = HTTP.post(
        f"{sim.base_url}/_sim/reset",
        json={"scenario": {"accounts": ACCOUNTS, "rate_limits": {"twitter": rule}}},
    )
    assert response.status_code == 400 and reason in response.json()["error"]
    assert call(sim, "twitter").headers["x-rate-limit-limit"] == "300"  # the rules in force


def test_a_rule_may_name_a_federated_providers_instance(sim):
    """Such a rule is kept, and meets no call of the default instance (the instance's
    own calls: ``test_simulator_instances.py``)."""
    rules(sim, mastodon=[{"limit": 0, "window_s": 300, "instance": "fosstodon.org"}])
    assert call(sim, "mastodon").status_code == 200
    (rule,) = [r for r in sim.stats()["rate_limits"] if r["provider"] == "mastodon"]
    assert rule["instance"] == "fosstodon.org" and rule["by_key"] == {}
