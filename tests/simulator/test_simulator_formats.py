"""The simulator's bodies and headers have the shapes of the recorded real responses.

The recordings live in the repo, in ``tests/fixtures/real/`` (provenance in
its README.md); a missing one is a failure, never a skip. Every simulated key must
exist in the real response (nothing invented), and the keys a client reads
must be there.
"""

import base64
import json
import re
from pathlib import Path

import pytest
import requests

from simulator.testing import run_simulator

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "real"

SCENARIO = {
    "accounts": [
        {"provider": "github", "id": "octocat", "size": 250, "token": "gh"},
        {"provider": "twitter", "id": "783214", "size": 150, "token": "tw"},
        {"provider": "facebook", "id": "4", "size": 60, "token": "fb"},
        {"provider": "linkedin", "id": "me1", "size": 70, "token": "li"},
        {"provider": "mastodon", "id": "109", "size": 30, "token": "ma"},
        {"provider": "mastodon", "id": "110", "size": 0, "token": "ma0"},
    ],
    "rate_limits": {
        p: {"limit": 1000, "window_s": 60} for p in ("github", "twitter", "facebook", "mastodon")
    },
}


def real(name):
    return json.loads((FIXTURES / name).read_text())["response"]


def header_names(headers):
    return {name.lower() for name in headers}


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


def get(sim, provider, path, token, **params):
    scheme = "token" if provider == "github" else "Bearer"
    return requests.get(
        sim.url(provider, path), params=params, headers={"Authorization": f"{scheme} {token}"}
    )


def test_github_profile_keys_and_rate_limit_headers(sim):
    recorded = real("github/user_profile_200.json")
    response = get(sim, "github", "/users/octocat", "gh")
    body = response.json()
    assert set(body) <= set(recorded["body"])
    assert {"login", "id", "followers", "following"} <= set(body)
    assert isinstance(body["id"], int) and body["followers"] == 250
    rate_headers = {h for h in header_names(recorded["headers"]) if h.startswith("x-ratelimit-")}
    assert rate_headers == {
        h for h in header_names(response.headers) if h.startswith("x-ratelimit-")
    }
    assert response.headers["X-RateLimit-Reset"].isdigit()


def test_github_follower_items_and_link_format(sim):
    recorded = real("github/stargazers_page1_200_link_next_last.json")
    response = get(sim, "github", "/users/octocat/followers", "gh")
    assert set(recorded["body"][0]) <= set(response.json()[0])
    for user in response.json():
        assert base64.b64decode(user["node_id"]) == f"04:User{user['id']}".encode()
        assert user["url"].endswith("/users/" + user["login"])
    pattern = re.compile(r'<[^>]+[?&]page=\d+>; rel="(next|last|prev|first)"')
    for part in recorded["headers"]["link"].split(", ") + response.headers["Link"].split(", "):
        assert pattern.fullmatch(part)
    single = real("github/user_followers_200_single_page_no_link.json")
    sim.put_accounts({"provider": "github", "id": "tiny", "size": 3, "token": "gh"})
    small = get(sim, "github", "/users/tiny/followers", "gh")
    assert "link" not in header_names(single["headers"]) and "Link" not in small.headers


def test_github_error_bodies(sim):
    assert (
        get(sim, "github", "/users/octocat", "nope").json()["message"]
        == real("github/error_401_bad_credentials.json")["body"]["message"]
    )
    assert (
        get(sim, "github", "/users/ghost", "gh").json()["message"]
        == real("github/error_404_unknown_user.json")["body"]["message"]
    )


def test_twitter_followers_page_shape(sim):
    recorded = real("twitter/v2_users_followers_200_next_token.json")
    response = get(sim, "twitter", "/2/users/783214/followers", "tw")
    body = response.json()
    assert set(body) == set(recorded["body"])
    assert set(body["data"][0]) == set(recorded["body"]["data"][0])
    assert set(body["meta"]) == set(recorded["body"]["meta"])
    assert re.fullmatch(r"[A-Z0-9]{16}", body["meta"]["next_token"])
    rate = {h for h in header_names(recorded["headers"]) if h.startswith("x-rate-limit-")}
    assert rate == {h for h in header_names(response.headers) if h.startswith("x-rate-limit-")}
    last = get(
        sim,
        "twitter",
        "/2/users/783214/followers",
        "tw",
        pagination_token=body["meta"]["next_token"],
    ).json()
    last_recorded = real("twitter/v2_users_following_200_last_page_no_next_token.json")
    assert "next_token" not in last["meta"] and "next_token" not in last_recorded["body"]["meta"]


def test_twitter_missing_auth_data_error_matches_v1_shape(sim):
    recorded = real("twitter/v1_1_error_400_bad_authentication_data.json")
    response = requests.get(
        sim.url("twitter", "/2/users/783214"),
        headers={"Authorization": 'OAuth oauth_consumer_key="k"'},
    )
    assert response.status_code == recorded["status"]
    assert response.json() == recorded["body"]


def test_facebook_paging_shape(sim):
    recorded = real("facebook/page_posts_200_paging_and_likes_summary.json")
    likes = recorded["body"]["data"][0]["likes"]
    body = get(sim, "facebook", "/v19.0/4/friends", "fb", limit=2, summary="total_count").json()
    assert set(body) == set(likes)  # data, paging, summary
    assert set(body["paging"]) == set(likes["paging"])
    assert set(body["paging"]["cursors"]) == set(likes["paging"]["cursors"])
    assert body["summary"] == {"total_count": 60}
    assert set(body["data"][0]) == set(
        real("facebook/user_subscribers_200_body_only.json")["body"]["data"][0]
    )
    assert "access_token=fb" in body["paging"]["next"] and "after=" in body["paging"]["next"]
    assert body["paging"]["cursors"]["after"].startswith("QVFI")


@pytest.mark.parametrize(
    "name",
    [
        "error_400_oauthexception_100_app_permissions.json",
        "error_500_oauthexception_1_unknown_error.json",
    ],
)
def test_facebook_error_shape(sim, name):
    recorded = real(f"facebook/{name}")
    code = recorded["body"]["error"]["code"]
    sim.set_faults({"kind": "error", "provider": "facebook", "code": code})
    try:
        response = get(sim, "facebook", "/v19.0/4/friends", "fb")
    finally:
        sim.clear_faults()
    error = response.json()["error"]
    assert (
        set(recorded["body"]["error"])
        <= set(error)
        <= {"message", "type", "code", "error_subcode", "is_transient", "fbtrace_id"}
    )
    assert error["type"] == "OAuthException"
    assert response.status_code == recorded["status"]
    assert "www-authenticate" in header_names(response.headers)


def test_linkedin_error_has_v1_message_and_status_plus_service_code(sim):
    recorded = real("linkedin/v1_error_401_unauthorized.json")
    response = requests.get(
        sim.url("linkedin", "/v2/connections"),
        params={"q": "viewer"},
        headers={"Authorization": "Bearer nope"},
    )
    body = response.json()
    assert response.status_code == recorded["status"] == body["status"]
    assert {"message", "status"} <= set(recorded["body"]) & set(body)
    assert body["serviceErrorCode"] == 65600


def test_mastodon_account_and_follower_keys(sim):
    account = real("mastodon/account_200.json")
    follower = real("mastodon/account_followers_200_link_prev_only.json")
    profile = get(sim, "mastodon", "/api/v1/accounts/109", "ma")
    assert set(profile.json()) <= set(account["body"])
    assert profile.json()["followers_count"] == 30
    page = get(sim, "mastodon", "/api/v1/accounts/109/followers", "ma")
    assert set(page.json()[0]) <= set(follower["body"][0]) | set(account["body"])
    assert {"id", "username", "acct"} <= set(page.json()[0])
    # a single short page: only rel="prev", like the recording
    assert set(page.links) == {"prev"} and "since_id=" in page.links["prev"]["url"]
    assert 'rel="prev"' in follower["headers"]["Link"] and "next" not in follower["headers"]["Link"]


def test_mastodon_empty_page_and_headers(sim):
    recorded = real("mastodon/account_followers_200_empty_no_link.json")
    response = get(sim, "mastodon", "/api/v1/accounts/110/followers", "ma0")
    assert response.json() == recorded["body"] == []
    assert "link" not in header_names(response.headers)
    rate = {h for h in header_names(recorded["headers"]) if h.startswith("x-ratelimit-")}
    assert rate == {h for h in header_names(response.headers) if h.startswith("x-ratelimit-")}
    iso = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert iso.fullmatch(recorded["headers"]["x-ratelimit-reset"])
    assert iso.fullmatch(response.headers["X-RateLimit-Reset"])


def test_mastodon_401_matches_recording(sim):
    recorded = real("mastodon/error_401_invalid_token.json")
    response = get(sim, "mastodon", "/api/v1/accounts/verify_credentials", "nope")
    assert response.status_code == 401
    assert response.json() == recorded["body"]
    assert response.headers["WWW-Authenticate"] == recorded["headers"]["www-authenticate"]
    missing = get(sim, "mastodon", "/api/v1/accounts/999", "ma")
    assert missing.json() == real("mastodon/error_404_account_lookup.json")["body"]


def test_facebook_missing_token_is_code_104_like_the_recording(sim):
    recorded = json.loads(
        (
            ROOT
            / "tests"
            / "fixtures"
            / "real-more"
            / "facebook"
            / "error_400_code_104_access_token_required.json"
        ).read_text()
    )["response"]
    response = requests.get(sim.url("facebook", "/v19.0/4/friends"), params={"limit": 5})
    assert response.status_code == recorded["status"] == 400
    error = response.json()["error"]
    assert error.pop("fbtrace_id")  # newer than the 2014 recording; every real error has one
    assert {"error": error} == recorded["body"]
    assert response.headers["WWW-Authenticate"] == recorded["headers"]["Www-Authenticate"]


def test_github_urls_name_the_host_and_prefix_that_answered(sim):
    """Like GitHub Enterprise, whose bodies name its own host: clients (PyGithub)
    follow ``url`` and friends back to the server that answered, never to api.github.com."""
    base = sim.url("github")
    profile = get(sim, "github", "/users/octocat", "gh").json()
    for name in ("url", "html_url", "followers_url", "following_url", "repos_url", "avatar_url"):
        assert profile[name].startswith(base + "/"), (name, profile[name])
    assert profile["url"] == f"{base}/users/octocat"
    assert profile["followers_url"] == f"{base}/users/octocat/followers"
    assert requests.get(profile["followers_url"], headers={"Authorization": "token gh"}).json()[0][
        "login"
    ]
    for user in get(sim, "github", "/users/octocat/followers", "gh").json():
        assert user["url"] == f"{base}/users/{user['login']}"
        assert user["html_url"] == f"{base}/{user['login']}"
        assert user["avatar_url"].startswith(f"{base}/avatars/u/{user['id']}")
    # what a client sends in Host is what comes back (a proxy's name, another port)
    other = requests.get(
        sim.url("github", "/users/octocat"),
        headers={"Authorization": "token gh", "Host": "ghe.example:8443"},
    ).json()
    assert other["url"] == "http://ghe.example:8443/github/users/octocat"
