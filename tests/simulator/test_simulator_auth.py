"""Credentials: header schemes, unknown/expired tokens, OAuth refresh endpoints."""

import time

import pytest
import requests

from simulator.testing import run_simulator

PAST = time.time() - 60
SCENARIO = {
    "accounts": [
        {"provider": "github", "id": "octocat", "size": 5, "token": "gh"},
        {"provider": "github", "id": "old", "size": 5, "token": "gh-old", "expires_at": PAST},
        {"provider": "twitter", "id": "42", "size": 5, "token": "tw", "refresh_token": "tw-r"},
        {
            "provider": "twitter",
            "id": "43",
            "size": 5,
            "token": "tw-old",
            "refresh_token": "tw-old-r",
            "expires_at": PAST,
        },
        {"provider": "facebook", "id": "7", "size": 5, "token": "fb"},
        {"provider": "facebook", "id": "8", "size": 5, "token": "fb-old", "expires_at": PAST},
        {"provider": "linkedin", "id": "li", "size": 5, "token": "li", "refresh_token": "li-r"},
        {
            "provider": "linkedin",
            "id": "li2",
            "size": 5,
            "token": "li-old",
            "refresh_token": "li-old-r",
            "expires_at": PAST,
        },
        {"provider": "mastodon", "id": "1", "size": 5, "token": "ma"},
    ]
}

OAUTH1 = (
    'OAuth oauth_consumer_key="ck", oauth_nonce="n", oauth_signature="sig%3D", '
    'oauth_signature_method="HMAC-SHA1", oauth_timestamp="1700000000", '
    'oauth_token="{token}", oauth_version="1.0"'
)


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    sim.reset(accounts=True)


def test_github_accepts_token_and_bearer_schemes_and_anonymous(sim):
    url = sim.url("github", "/users/octocat/followers")
    for header in ("token gh", "Bearer gh", None):
        response = requests.get(url, headers={"Authorization": header} if header else {})
        assert response.status_code == 200
    assert requests.get(sim.url("github", "/user")).status_code == 401  # /user needs a token
    me = requests.get(sim.url("github", "/user"), headers={"Authorization": "token gh"})
    assert me.json()["login"] == "octocat"


def test_github_expired_token_is_bad_credentials(sim):
    response = requests.get(
        sim.url("github", "/users/octocat"), headers={"Authorization": "token gh-old"}
    )
    assert response.status_code == 401
    assert response.json()["message"] == "Bad credentials"


def test_github_logins_are_case_insensitive(sim):
    response = requests.get(
        sim.url("github", "/users/OctoCat"), headers={"Authorization": "token gh"}
    )
    assert response.json()["login"] == "octocat"


def test_twitter_oauth1_header_identifies_by_oauth_token(sim):
    ok = requests.get(
        sim.url("twitter", "/2/users/42/followers"),
        headers={"Authorization": OAUTH1.format(token="tw")},
    )
    assert ok.status_code == 200
    unknown = requests.get(
        sim.url("twitter", "/2/users/42/followers"),
        headers={"Authorization": OAUTH1.format(token="zzz")},
    )
    assert unknown.status_code == 401
    assert unknown.json() == {"errors": [{"code": 32, "message": "Could not authenticate you."}]}
    assert sim.calls(provider="twitter")[0]["token"] == "tw"


def test_twitter_missing_and_unknown_bearer_are_v2_problems(sim):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = requests.get(sim.url("twitter", "/2/users/42"), headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "title": "Unauthorized",
            "type": "about:blank",
            "status": 401,
            "detail": "Unauthorized",
        }


def test_twitter_expired_token_gets_code_89_then_refresh_rotates(sim):
    expired = requests.get(
        sim.url("twitter", "/2/users/43"), headers={"Authorization": "Bearer tw-old"}
    )
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["code"] == 89
    token_url = sim.url("twitter", "/2/oauth2/token")
    grant = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": "tw-old-r", "client_id": "cid"},
    )
    assert grant.status_code == 200
    body = grant.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 7200
    assert body["access_token"] == "tw-old.r1" and body["refresh_token"] == "tw-old-r.r1"
    fresh_call = requests.get(
        sim.url("twitter", "/2/users/43"),
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert fresh_call.status_code == 200
    reused = requests.post(
        token_url, data={"grant_type": "refresh_token", "refresh_token": "tw-old-r"}
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_request"
    again = requests.post(
        token_url, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert again.json()["access_token"] == "tw-old.r2"
    assert {t["token"] for t in sim.tokens(provider="twitter", account="43")} >= {
        "tw-old.r1",
        "tw-old.r2",
    }


def test_twitter_token_endpoint_rejects_other_grants(sim):
    response = requests.post(
        sim.url("twitter", "/2/oauth2/token"), data={"grant_type": "client_credentials"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_facebook_token_in_query_or_header_and_owner_only(sim):
    url = sim.url("facebook", "/v19.0/7/friends")
    assert requests.get(url, params={"access_token": "fb"}).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer fb"}).status_code == 200
    other = requests.get(sim.url("facebook", "/v19.0/8/friends"), params={"access_token": "fb"})
    assert other.status_code == 400 and other.json()["error"]["error_subcode"] == 33
    missing = requests.get(url)
    assert missing.json()["error"]["code"] == 104


def test_facebook_expired_token_is_190_463(sim):
    response = requests.get(
        sim.url("facebook", "/v19.0/me/friends"), params={"access_token": "fb-old"}
    )
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert "Session has expired on" in error["message"]


def test_linkedin_conditions_and_refresh(sim):
    url = sim.url("linkedin", "/v2/connections")
    missing = requests.get(url, params={"q": "viewer"})
    assert missing.status_code == 401 and missing.json()["serviceErrorCode"] == 65604
    expired = requests.get(url, params={"q": "viewer"}, headers={"Authorization": "Bearer li-old"})
    assert expired.status_code == 401 and expired.json()["message"] == "Expired access token"
    grant = requests.post(
        sim.url("linkedin", "/oauth/v2/accessToken"),
        data={
            "grant_type": "refresh_token",
            "refresh_token": "li-old-r",
            "client_id": "c",
            "client_secret": "s",
        },
    )
    body = grant.json()
    assert grant.status_code == 200 and body["expires_in"] == 5_184_000
    assert body["refresh_token"] == "li-old-r"  # LinkedIn keeps the refresh token
    ok = requests.get(
        url, params={"q": "viewer"}, headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert ok.status_code == 200 and ok.json()["paging"]["total"] == 5
    bad = requests.post(
        sim.url("linkedin", "/oauth/v2/accessToken"),
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
    )
    assert bad.status_code == 400


def test_linkedin_q_must_be_viewer(sim):
    response = requests.get(
        sim.url("linkedin", "/v2/connections"),
        params={"q": "other"},
        headers={"Authorization": "Bearer li"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "provider,path,status,body",
    [
        (
            "github",
            "/nope",
            404,
            {
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest",
                "status": "404",
            },
        ),
        # a real 404, not the 200 + errors[] of an unknown user
        (
            "twitter",
            "/2/nope",
            404,
            {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]},
        ),
        (
            "twitter",
            "/2/users/42/followers/extra",
            404,
            {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]},
        ),
        ("mastodon", "/api/v2/nope", 404, {"error": "Not Found"}),
        ("linkedin", "/v2/nope", 404, {"code": "NOT_FOUND", "message": "Not Found", "status": 404}),
    ],
)
def test_unknown_paths_answer_404_in_provider_shape(sim, provider, path, status, body):
    for method in ("GET", "POST"):
        response = requests.request(method, sim.url(provider, path))
        assert (response.status_code, response.json()) == (status, body)
        assert "X-RateLimit-Limit" not in response.headers  # never counted
    assert sim.calls(provider=provider)[-1]["kind"] == "other"


def test_unknown_graph_path_is_graphs_own_400_code_2500(sim):
    """Graph has no 404 for a path: "Unknown path components", code 2500, HTTP 400."""
    response = requests.get(
        sim.url("facebook", "/v19.0/7/friends/extra"), params={"access_token": "fb"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (2500, "OAuthException")
    assert error["message"] == "Unknown path components: /friends/extra"
