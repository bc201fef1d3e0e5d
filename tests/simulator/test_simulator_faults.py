"""Faults: selectors, triggers, and every kind, through ``POST /_sim/faults``."""

import time

import pytest
import requests

from simulator.providers import PROVIDER_SIMS
from simulator.testing import run_simulator

SCENARIO = {
    "seed": 7,
    "accounts": [
        {"provider": "github", "id": "octocat", "size": 100, "token": "gh"},
        {"provider": "github", "id": "hubot", "size": 100, "token": "gh2"},
        {"provider": "twitter", "id": "42", "size": 300, "token": "tw", "refresh_token": "tw-r"},
        {"provider": "facebook", "id": "7", "size": 100, "token": "fb"},
        {"provider": "linkedin", "id": "li", "size": 120, "token": "li", "refresh_token": "li-r"},
        {"provider": "mastodon", "id": "1", "size": 100, "token": "ma"},
        {"provider": "bluesky", "id": "bs", "size": 100, "token": "bs", "refresh_token": "bs-r"},
    ],
}

# a provider the list above does not name (a new one) gets an account of its own
SCENARIO["accounts"] += [
    {"provider": name, "id": sim.sample_account_id("acct-1"), "size": 100, "token": f"{name}-tok"}
    for name, sim in PROVIDER_SIMS.items()
    if name not in {a["provider"] for a in SCENARIO["accounts"]}
]
#: each provider's first account, its token and what a client asks of it
ACCOUNT, TOKEN = {}, {}
for _account in SCENARIO["accounts"]:
    ACCOUNT.setdefault(_account["provider"], _account["id"])
    TOKEN.setdefault(_account["provider"], _account["token"])
PROFILE = {p: PROVIDER_SIMS[p].sample_path("profile", ACCOUNT[p]) for p in PROVIDER_SIMS}
PAGE = {p: PROVIDER_SIMS[p].sample_path("page", ACCOUNT[p]) for p in PROVIDER_SIMS}


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(accounts=True)


HTTP = requests.Session()


def call(sim, provider, path=None, token=None):
    token = token or TOKEN[provider]
    return HTTP.get(
        sim.url(provider, path or PAGE[provider]), headers={"Authorization": f"Bearer {token}"}
    )


def statuses(sim, n, provider="github", **kw):
    return [call(sim, provider, **kw).status_code for _ in range(n)]


# --- triggers and selectors ------------------------------------------------------


def test_at_call_fires_on_the_nth_matching_call_only(sim):
    sim.add_faults({"kind": "outage", "provider": "github", "at_call": 3})
    assert statuses(sim, 5) == [200, 200, 503, 200, 200]
    assert sim.faults()[0]["matched"] == 5 and sim.faults()[0]["fired"] == 1


def test_from_call_every_n_and_times(sim):
    sim.add_faults(
        {"kind": "outage", "provider": "github", "from_call": 2, "every_n": 2, "times": 2}
    )
    assert statuses(sim, 8) == [200, 503, 200, 503, 200, 200, 200, 200]


def test_rate_is_seeded_and_repeatable(sim):
    fault = {"id": "flaky", "kind": "outage", "provider": "github", "rate": 0.3}
    sim.set_faults(fault)
    first = statuses(sim, 40)
    sim.set_faults(fault)
    assert statuses(sim, 40) == first
    assert 3 <= first.count(503) <= 25


def test_selectors_account_token_and_path_kind(sim):
    sim.add_faults(
        {"kind": "outage", "provider": "github", "account": "HUBOT"},
        {"kind": "outage", "provider": "github", "token": "gh", "path_kind": "profile"},
    )
    assert call(sim, "github", "/users/hubot/followers").status_code == 503
    assert call(sim, "github", "/users/octocat/followers").status_code == 200
    assert call(sim, "github", "/users/octocat").status_code == 503
    assert call(sim, "github", "/users/octocat", token="gh2").status_code == 200


def test_clear_replace_and_remove(sim):
    sim.add_faults(
        {"id": "a", "kind": "outage", "provider": "github"},
        {"id": "b", "kind": "outage", "provider": "twitter"},
    )
    requests.post(f"{sim.base_url}/_sim/faults", json={"remove": ["a"]})
    assert [f["id"] for f in sim.faults()] == ["b"]
    sim.set_faults({"id": "c", "kind": "outage", "provider": "mastodon"})
    assert [f["id"] for f in sim.faults()] == ["c"]
    sim.clear_faults()
    assert sim.faults() == [] and call(sim, "mastodon").status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode", "provider": "github"},
        {"kind": "error", "provider": "github", "code": 999},
        {"kind": "off_by_one", "provider": "github"},
        {"kind": "outage", "provider": "myspace"},
        {"kind": "outage", "at_call": 0},
        {"kind": "outage", "rate": 2},
    ],
)
def test_bad_faults_are_rejected_whole(sim, fault):
    response = requests.post(
        f"{sim.base_url}/_sim/faults",
        json={"add": [{"kind": "outage", "provider": "github"}, fault]},
    )
    assert response.status_code == 400 and "error" in response.json()
    assert sim.faults() == []


# --- outage, errors, drop, latency ----------------------------------------------------

OUTAGE_SHAPE = {
    "github": lambda b: b["message"] == "Service Unavailable",
    "twitter": lambda b: b["errors"][0]["code"] == 130,
    "facebook": lambda b: b["error"]["code"] == 2 and b["error"]["is_transient"] is True,
    "linkedin": lambda b: b["status"] == 503,
    "mastodon": lambda b: b["error"] == "Service Unavailable",
    "bluesky": lambda b: b == {"error": "NotEnoughResources", "message": "Not Enough Resources"},
}


@pytest.mark.parametrize("provider", list(OUTAGE_SHAPE))
def test_outage_is_a_503_in_provider_shape(sim, provider):
    sim.add_faults({"kind": "outage", "provider": provider})
    response = call(sim, provider)
    assert response.status_code == 503 and OUTAGE_SHAPE[provider](response.json())
    assert sim.stats()["errors_injected"]["by_kind"] == {"outage": 1}


@pytest.mark.parametrize(
    "provider,row",
    [(p, r) for p, sim_ in PROVIDER_SIMS.items() for r in sim_.ERROR_ROWS],
    ids=lambda v: getattr(v, "name", v),
)
def test_every_error_row_is_injectable_by_name(sim, provider, row):
    sim.add_faults({"kind": "error", "provider": provider, "name": row.name})
    response = call(sim, provider)
    assert response.status_code == row.status
    if row.extra.get("html"):  # a load balancer's page, not JSON
        assert response.headers["Content-Type"].startswith("text/html")
        return
    body = response.json()
    if provider == "bluesky":
        assert body == {"error": row.extra["error"], "message": body["message"]} and body["message"]
    elif provider == "facebook":
        assert body["error"]["code"] == row.code
        assert body["error"].get("error_subcode") == row.subcode
        assert body["error"]["fbtrace_id"]
    elif provider == "linkedin":
        assert body["status"] == row.status and body.get("serviceErrorCode") == row.code
    elif provider == "twitter" and row.code is not None:
        assert body["errors"][0]["code"] == row.code


@pytest.mark.parametrize(
    "code,subcode",
    [
        (1, None),
        (2, None),
        (4, None),
        (17, None),
        (32, None),
        (613, None),
        (341, None),
        (368, None),
        (10, None),
        (250, None),
        (102, None),
        (190, None),
        (190, 458),
        (190, 459),
        (190, 460),
        (190, 463),
        (190, 464),
        (190, 467),
        (190, 493),
        (100, None),
    ],
)
def test_facebook_table_rows_by_code_and_subcode(sim, code, subcode):
    fault = {"kind": "error", "provider": "facebook", "code": code}
    if subcode:
        fault["subcode"] = subcode
    sim.add_faults(fault)
    error = call(sim, "facebook").json()["error"]
    assert error["code"] == code
    if subcode:
        assert error["error_subcode"] == subcode
    assert error.get("is_transient", False) == (code in (2, 4, 17, 32, 613, 341))


def test_facebook_bad_token_family_has_many_messages(sim):
    sim.add_faults({"kind": "error", "provider": "facebook", "name": "bad_token"})
    errors = [call(sim, "facebook").json()["error"] for _ in range(60)]
    assert {e["code"] for e in errors} == {190, 102}
    assert len({e["message"] for e in errors}) >= 10
    assert {e["message"] for e in errors if e["code"] == 190} != set()


def test_twitter_rate_limit_row_in_both_shapes(sim):
    sim.add_faults(
        {"kind": "error", "provider": "twitter", "code": 88, "at_call": 1},
        {"kind": "error", "provider": "twitter", "code": 88, "shape": "v2", "at_call": 2},
    )
    v1, v2 = call(sim, "twitter"), call(sim, "twitter")
    assert v1.status_code == v2.status_code == 429
    assert v1.json() == {"errors": [{"code": 88, "message": "Rate limit exceeded"}]}
    assert v2.json()["title"] == "Too Many Requests" and v2.json()["status"] == 429
    assert (
        v1.headers["x-rate-limit-remaining"] == "0" and v1.headers["x-rate-limit-reset"].isdigit()
    )


def test_github_secondary_limit_with_and_without_retry_after(sim):
    sim.add_faults(
        {"kind": "error", "provider": "github", "name": "secondary_rate_limit", "at_call": 1},
        {
            "kind": "error",
            "provider": "github",
            "name": "secondary_rate_limit_no_retry_after",
            "at_call": 2,
        },
    )
    with_retry, without = call(sim, "github"), call(sim, "github")
    for response in (with_retry, without):
        assert response.status_code == 403
        assert "secondary rate limit" in response.json()["message"]
        assert not [h for h in response.headers if h.lower().startswith("x-ratelimit")]
    assert with_retry.headers["Retry-After"] == "60" and "Retry-After" not in without.headers


def test_github_primary_limit_row(sim):
    sim.add_faults({"kind": "error", "provider": "github", "name": "primary_rate_limit"})
    response = call(sim, "github")
    assert response.status_code == 403
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()


def test_drop_closes_the_connection(sim):
    sim.add_faults({"kind": "drop", "provider": "github", "at_call": 1})
    with pytest.raises(requests.ConnectionError):
        call(sim, "github")
    assert call(sim, "github").status_code == 200
    assert sim.calls(provider="github")[0]["status"] == 0


def test_latency_fault_delays_matching_calls(sim):
    sim.add_faults({"kind": "latency", "provider": "github", "mean": 150, "jitter": 0})
    started = time.perf_counter()
    assert call(sim, "github").status_code == 200
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    call(sim, "mastodon")
    assert time.perf_counter() - started < 0.15


def test_scenario_latency_per_provider(sim):
    sim.reset(
        scenario={
            **SCENARIO,
            "latency_ms": {
                "mean": 0,
                "jitter": 0,
                "per_provider": {"github": {"mean": 120, "jitter": 20}},
            },
        }
    )
    try:
        started = time.perf_counter()
        call(sim, "github")
        assert time.perf_counter() - started >= 0.1
        started = time.perf_counter()
        call(sim, "mastodon")
        assert time.perf_counter() - started < 0.1
    finally:
        sim.reset(scenario=SCENARIO)


# --- tokens ----------------------------------------------------------------------------

REVOKED = {
    "github": lambda r: r.status_code == 401 and r.json()["message"] == "Bad credentials",
    "twitter": lambda r: r.status_code == 401 and r.json()["errors"][0]["code"] == 89,
    "facebook": lambda r: r.status_code == 400 and r.json()["error"]["code"] in (190, 102),
    "linkedin": lambda r: r.status_code == 401 and r.json()["serviceErrorCode"] == 65601,
    "mastodon": lambda r: r.status_code == 401 and "revoked" in r.json()["error"],
}


@pytest.mark.parametrize("provider", list(REVOKED))
def test_revoked_token_fails_from_then_on(sim, provider):
    sim.add_faults({"kind": "revoke_token", "provider": provider, "at_call": 2})
    assert call(sim, provider).status_code == 200
    for _ in range(3):
        assert REVOKED[provider](call(sim, provider))
    sim.reset()  # reset undoes revocations
    assert call(sim, provider).status_code == 200


def test_revoke_names_the_token_and_the_row(sim):
    sim.add_faults(
        {
            "kind": "revoke_token",
            "provider": "facebook",
            "token": "fb",
            "code": 190,
            "subcode": 460,
            "path_kind": "profile",
        }
    )
    assert call(sim, "facebook").status_code == 200  # a page call: does not match
    call(sim, "facebook", PROFILE["facebook"])
    error = call(sim, "facebook").json()["error"]
    assert (error["code"], error["error_subcode"]) == (190, 460)


def test_revoked_token_cannot_refresh(sim):
    sim.add_faults({"kind": "revoke_token", "provider": "linkedin", "token": "li"})
    call(sim, "linkedin")
    grant = requests.post(
        sim.url("linkedin", "/oauth/v2/accessToken"),
        data={"grant_type": "refresh_token", "refresh_token": "li-r"},
    )
    assert grant.status_code == 400


def test_expire_token_then_refresh_recovers(sim):
    sim.add_faults({"kind": "expire_token", "provider": "twitter", "at_call": 1})
    expired = call(sim, "twitter")
    assert expired.status_code == 401 and expired.json()["errors"][0]["code"] == 89
    grant = requests.post(
        sim.url("twitter", "/2/oauth2/token"),
        data={"grant_type": "refresh_token", "refresh_token": "tw-r"},
    ).json()
    assert call(sim, "twitter", token=grant["access_token"]).status_code == 200


def test_token_endpoint_faults(sim):
    sim.add_faults({"kind": "outage", "provider": "twitter", "path_kind": "token"})
    grant = requests.post(
        sim.url("twitter", "/2/oauth2/token"),
        data={"grant_type": "refresh_token", "refresh_token": "tw-r"},
    )
    assert grant.status_code == 503
    assert call(sim, "twitter").status_code == 200


# --- pagination bugs -----------------------------------------------------------------


def test_linkedin_off_by_one_returns_endless_one_person_pages(sim):
    sim.add_faults({"kind": "off_by_one", "provider": "linkedin", "after_start": 50})
    url = sim.url("linkedin", "/v2/connections")
    headers = {"Authorization": "Bearer li"}
    first = requests.get(
        url, params={"q": "viewer", "start": 0, "count": 50}, headers=headers
    ).json()
    assert len(first["elements"]) == 50
    start, seen = 50, []
    for _ in range(80):  # far past total=120 (start reaches 130): it never ends
        page = HTTP.get(
            url, params={"q": "viewer", "start": start, "count": 50}, headers=headers
        ).json()
        assert len(page["elements"]) == 1 and page["paging"]["total"] == 120
        seen.append(page["elements"][0]["to"])
        start += len(page["elements"])
    truth = sim.truth("linkedin", "li")["ids"]
    assert seen[0] == truth[51]  # shifted by one
    assert set(seen) <= set(truth)


def test_facebook_empty_page_with_next_loses_nothing(sim):
    sim.add_faults({"kind": "empty_page_with_next", "provider": "facebook", "at_call": 2})
    url, ids, empty_pages = sim.url("facebook", "/v19.0/7/friends?limit=25&access_token=fb"), [], 0
    while url:
        body = requests.get(url).json()
        empty_pages += not body["data"]
        ids += [f["id"] for f in body["data"]]
        url = body.get("paging", {}).get("next")
    assert empty_pages == 1 and ids == sim.truth("facebook", "7")["ids"]


def test_facebook_cursor_expiry_is_code_100_only_on_cursor_pages(sim):
    sim.add_faults({"kind": "cursor_expired", "provider": "facebook", "times": 1})
    first = requests.get(sim.url("facebook", "/v19.0/7/friends"), params={"access_token": "fb"})
    assert first.status_code == 200
    expired = requests.get(first.json()["paging"]["next"])
    assert expired.status_code == 400 and expired.json()["error"]["code"] == 100
    assert requests.get(first.json()["paging"]["next"]).status_code == 200  # times: 1
    fresh_cursor = {"kind": "cursor_expired", "provider": "facebook", "max_age_s": 3600}
    sim.set_faults(fresh_cursor)
    assert requests.get(first.json()["paging"]["next"]).status_code == 200


@pytest.mark.parametrize("provider", ["twitter", "facebook", "mastodon"])
def test_short_pages_keep_the_cursor_going(sim, provider):
    sim.add_faults({"kind": "short_page", "provider": provider, "items": 3})
    ids = []
    if provider == "twitter":
        params = {}
        while True:
            body = call(
                sim,
                "twitter",
                PAGE["twitter"] + "?" + "&".join(f"{k}={v}" for k, v in params.items()),
            ).json()
            ids += [u["id"] for u in body.get("data", [])]
            if "next_token" not in body["meta"]:
                break
            params = {"pagination_token": body["meta"]["next_token"]}
    elif provider == "facebook":
        url = sim.url("facebook", "/v19.0/7/friends?access_token=fb")
        while url:
            body = requests.get(url).json()
            ids += [f["id"] for f in body["data"]]
            url = body.get("paging", {}).get("next")
    else:
        url = sim.url("mastodon", PAGE["mastodon"])
        while url:
            response = requests.get(url)
            ids += [a["id"] for a in response.json()]
            url = response.links.get("next", {}).get("url")
    account = {"twitter": "42", "facebook": "7", "mastodon": "1"}[provider]
    assert ids == sim.truth(provider, account)["ids"]
    assert sim.stats()["errors_injected"]["by_kind"]["short_page"] > 1


def test_rate_limit_fault_replaces_limits_until_cleared(sim):
    sim.add_faults({"kind": "rate_limit", "provider": "github", "limit": 2, "window_s": 60})
    assert statuses(sim, 3) == [200, 200, 429]
    sim.clear_faults()
    assert statuses(sim, 3) == [200, 200, 200]


def test_revoking_with_a_code_only_the_range_describes_keeps_answering(sim):
    # Facebook's table gives 200-299 as a range: the row for 299 is made up on
    # demand and must stay known for every later call with the revoked token.
    sim.add_faults({"kind": "revoke_token", "provider": "facebook", "token": "fb", "code": 299})
    for _ in range(2):
        response = HTTP.get(
            sim.url("facebook") + PAGE["facebook"],
            params={"access_token": "fb", "limit": 5},
            timeout=5,
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == 299
