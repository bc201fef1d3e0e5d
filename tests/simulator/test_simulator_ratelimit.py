"""Rate limits: windows per scope, each provider's 429 and headers, peak stats."""

import json

import pytest
import requests

from simulator.ratelimit import SlidingPeak
from simulator.scenario import DEFAULT_RATE_LIMITS
from simulator.testing import FakeClock, run_simulator

ACCOUNTS = [
    {"provider": "github", "id": "octocat", "size": 10, "token": "gh1"},
    {"provider": "github", "id": "hubot", "size": 10, "token": "gh2"},
    {"provider": "twitter", "id": "42", "size": 10, "token": "tw"},
    {"provider": "facebook", "id": "7", "size": 10, "token": "fb"},
    {"provider": "linkedin", "id": "li", "size": 10, "token": "li"},
    {"provider": "mastodon", "id": "1", "size": 10, "token": "ma"},
]
PAGE = {
    "github": "/users/octocat/followers",
    "twitter": "/2/users/42/followers",
    "facebook": "/v19.0/7/friends",
    "linkedin": "/v2/connections?q=viewer",
    "mastodon": "/api/v1/accounts/1/followers",
}
TOKEN = {"github": "gh1", "twitter": "tw", "facebook": "fb", "linkedin": "li", "mastodon": "ma"}
CLOCK = FakeClock(1_700_000_000.0)
HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator({"accounts": ACCOUNTS}, clock=CLOCK) as running:
        yield running


def limits(sim, **rules):
    sim.reset(scenario={"accounts": ACCOUNTS, "rate_limits": rules})


def call(sim, provider, token=None, headers=None, path=None):
    headers = {"Authorization": f"Bearer {token or TOKEN[provider]}", **(headers or {})}
    return HTTP.get(sim.url(provider, path or PAGE[provider]), headers=headers)


def test_github_token_window_counts_down_rejects_then_resets(sim):
    limits(sim, github={"limit": 3, "window_s": 60, "scope": "token"})
    remaining = [call(sim, "github").headers["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    rejected = call(sim, "github")
    assert rejected.status_code == 429
    assert rejected.json()["message"].startswith("API rate limit exceeded")
    assert rejected.headers["X-RateLimit-Remaining"] == "0"
    assert rejected.headers["X-RateLimit-Used"] == "3"
    assert int(rejected.headers["X-RateLimit-Reset"]) == int(CLOCK.now) + 60
    assert call(sim, "github", token="gh2").status_code == 200  # other token, own budget
    CLOCK.advance(61)
    assert call(sim, "github").headers["X-RateLimit-Remaining"] == "2"


def test_github_can_answer_403_instead(sim):
    limits(sim, github={"limit": 0, "window_s": 60, "status": 403})
    response = call(sim, "github")
    assert response.status_code == 403 and response.headers["X-RateLimit-Remaining"] == "0"


def test_app_scope_is_shared_by_all_tokens(sim):
    limits(sim, github={"limit": 2, "window_s": 60, "scope": "app"})
    assert [call(sim, "github", t).status_code for t in ("gh1", "gh2", "gh1", "gh2")] == [
        200,
        200,
        429,
        429,
    ]


def test_ip_scope_keys_by_client_address(sim):
    limits(sim, github={"limit": 1, "window_s": 60, "scope": "ip"})
    one = {"X-Forwarded-For": "10.0.0.1"}
    two = {"X-Forwarded-For": "10.0.0.2, 192.168.0.1"}
    assert call(sim, "github", headers=one).status_code == 200
    assert call(sim, "github", "gh2", headers=one).status_code == 429
    assert call(sim, "github", headers=two).status_code == 200
    keys = sim.stats()["rate_limits"][0]["by_key"]
    assert set(keys) == {"ip:10.0.0.1", "ip:10.0.0.2"}


def test_path_kind_restricts_a_rule(sim):
    limits(
        sim,
        github=[{"limit": 1, "window_s": 60, "path_kind": "page"}, {"limit": 100, "window_s": 60}],
    )
    assert call(sim, "github").status_code == 200
    assert call(sim, "github").status_code == 429
    assert call(sim, "github", path="/users/octocat").status_code == 200


def test_twitter_429_problem_json_by_default_and_v1_by_choice(sim):
    limits(sim, twitter={"limit": 1, "window_s": 900})
    ok = call(sim, "twitter")
    assert ok.headers["x-rate-limit-limit"] == "1" and ok.headers["x-rate-limit-remaining"] == "0"
    rejected = call(sim, "twitter")
    assert rejected.status_code == 429
    assert rejected.json() == {
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    }
    assert int(rejected.headers["x-rate-limit-reset"]) == int(CLOCK.now) + 900
    limits(sim, twitter={"limit": 0, "window_s": 900, "shape": "v1"})
    assert call(sim, "twitter").json() == {
        "errors": [{"code": 88, "message": "Rate limit exceeded"}]
    }


def test_mastodon_429_with_aligned_iso_reset(sim):
    limits(sim, mastodon={"limit": 1, "window_s": 300})
    call(sim, "mastodon")
    rejected = call(sim, "mastodon")
    assert rejected.status_code == 429 and rejected.json() == {"error": "Too many requests"}
    reset = rejected.headers["X-RateLimit-Reset"]
    assert reset.endswith(":00.000000Z") and int(reset[14:16]) % 5 == 0


def test_facebook_token_scope_is_code_17_app_scope_code_4(sim):
    """x-app-usage is the app's share; a user's own count is never revealed."""
    limits(sim, facebook={"limit": 2, "window_s": 3600, "scope": "token"})
    assert "x-app-usage" not in call(sim, "facebook").headers
    call(sim, "facebook")
    error = call(sim, "facebook")
    assert error.status_code == 403 and error.json()["error"]["code"] == 17
    assert error.json()["error"]["is_transient"] is True
    assert "x-app-usage" not in error.headers and "Retry-After" not in error.headers
    limits(sim, facebook={"limit": 2, "window_s": 3600, "scope": "app"})
    assert json.loads(call(sim, "facebook").headers["x-app-usage"])["call_count"] == 50
    call(sim, "facebook")
    error = call(sim, "facebook")
    assert error.json()["error"]["code"] == 4
    assert json.loads(error.headers["x-app-usage"])["call_count"] == 100


def test_linkedin_429_has_no_headers(sim):
    limits(sim, linkedin={"limit": 0, "window_s": 86400})
    response = call(sim, "linkedin")
    assert response.status_code == 429
    assert response.json() == {
        "serviceErrorCode": 101,
        "message": "Resource level throttle limit for calls to this resource is reached.",
        "status": 429,
    }
    assert not [h for h in response.headers if "ratelimit" in h.lower().replace("-", "")]


def test_no_configured_limit_applies_the_providers_real_rules_and_announces_them(sim):
    """The real GitHub, X, Mastodon, Facebook and Bluesky always send their headers: so
    does the simulator, for the real documented limits it then enforces
    (``ProviderSim.RATE_LIMITS``)."""
    limits(sim)
    now = int(CLOCK.now)
    github = [call(sim, "github") for _ in range(2)][-1]
    assert github.status_code == 200
    assert {
        k: github.headers[f"X-RateLimit-{k}"] for k in ("Limit", "Remaining", "Used", "Resource")
    } == {"Limit": "5000", "Remaining": "4998", "Used": "2", "Resource": "core"}
    assert int(github.headers["X-RateLimit-Reset"]) == now + 3600
    twitter = call(sim, "twitter")
    assert (twitter.headers["x-rate-limit-limit"], twitter.headers["x-rate-limit-remaining"]) == (
        "300",
        "299",
    )
    assert int(twitter.headers["x-rate-limit-reset"]) == now + 900
    mastodon = call(sim, "mastodon")
    assert (mastodon.headers["X-RateLimit-Limit"], mastodon.headers["X-RateLimit-Remaining"]) == (
        "300",
        "299",
    )
    assert mastodon.headers["X-RateLimit-Reset"].endswith(":00.000000Z")  # aligned
    # Facebook: 200 calls an hour per user of the app (here 1 account), as a percentage
    assert json.loads(call(sim, "facebook").headers["x-app-usage"])["call_count"] == 0
    # LinkedIn publishes no limits: nothing announced, nothing enforced
    assert not [h for h in call(sim, "linkedin").headers if "rate" in h.lower()]
    # what the headers said is what the simulator counts
    rules = sim.stats()["rate_limits"]
    assert {r["provider"] for r in rules} == set(DEFAULT_RATE_LIMITS)
    assert all(r["implicit"] for r in rules)
    (core,) = [r for r in rules if r["provider"] == "github" and r["scope"] == "user"]
    assert core["by_key"] == {
        "user:octocat": {"peak": 2, "used": 2, "rejected": 0, "reset": now + 3600}
    }


def test_default_rule_gives_way_to_a_configured_rule_or_an_explicit_none(sim):
    limits(sim, github={"limit": 7, "window_s": 60})
    assert call(sim, "github").headers["X-RateLimit-Limit"] == "7"
    assert call(sim, "twitter").headers["x-rate-limit-limit"] == "300"  # others keep theirs
    limits(sim, github=None, twitter=[])
    for provider in ("github", "twitter"):
        response = call(sim, provider)
        assert response.status_code == 200
        assert not [h for h in response.headers if "rate" in h.lower()]
    # a rate_limit fault with "limit": null removes it; clearing faults restores the default
    limits(sim)
    sim.add_faults({"kind": "rate_limit", "provider": "github", "limit": None})
    assert "X-RateLimit-Limit" not in call(sim, "github").headers
    sim.clear_faults()
    assert call(sim, "github").headers["X-RateLimit-Limit"] == "5000"


def test_injected_rate_limit_errors_keep_their_own_reset_beside_the_default_rule(sim):
    """A fault's ``reset_in_s`` (or the old 60/900/300 s) is what it announces, not the
    default rule's hour-long window: a test injecting one must not wait an hour."""
    limits(sim)
    now = CLOCK.now
    sim.add_faults(
        {
            "kind": "error",
            "provider": "github",
            "name": "primary_rate_limit",
            "reset_in_s": 2,
            "at_call": 1,
        },
        {"kind": "error", "provider": "github", "name": "primary_rate_limit", "at_call": 2},
        {"kind": "error", "provider": "twitter", "code": 88, "reset_in_s": 3},
    )
    first, second = call(sim, "github"), call(sim, "github")
    assert int(first.headers["X-RateLimit-Reset"]) == int(now) + 2
    assert int(second.headers["X-RateLimit-Reset"]) == int(now) + 60
    assert (
        first.headers["X-RateLimit-Limit"] == "5000"
        and first.headers["X-RateLimit-Remaining"] == "0"
    )
    assert int(call(sim, "twitter").headers["x-rate-limit-reset"]) == int(now) + 3


def test_stats_count_rejections_and_peak(sim):
    limits(sim, github={"limit": 5, "window_s": 10, "scope": "token"})
    for _ in range(8):
        call(sim, "github")
    CLOCK.advance(11)
    for _ in range(3):
        call(sim, "github")
    stats = sim.stats()
    assert stats["rate_limited"] == {
        "total": 3,
        "by_provider": {"github": 3},
        "by_token": {"gh1": 3},
    }
    assert stats["calls"]["by_status"] == {"200": 8, "429": 3}
    rule = stats["rate_limits"][0]
    assert rule["peak"] == 8 and rule["peak_key"] == "gh1" and rule["rejected"] == 3
    assert rule["by_key"]["gh1"]["used"] == 3


def test_sliding_peak_counts_the_busiest_window():
    meter = SlidingPeak(10.0)
    for t in (0, 1, 2, 9.5, 9.9, 15, 25, 26):
        meter.hit(t)
    assert meter.peak == 5  # 0 .. 9.9 holds five events; no other 10 s holds more than 3
    lone = SlidingPeak(3600)
    lone.hit(0)
    lone.hit(3601)
    assert lone.peak == 1
