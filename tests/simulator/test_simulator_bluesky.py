"""The simulated Bluesky: paging equals the truth, XRPC errors, the session refresh, rate headers.

Walks page the way a real client does (send ``cursor`` back until an answer
has none), for networks of 0, 1, 99, 100, 101 and 250 in both relations, and
must yield ``/_sim/truth`` exactly, in order, without duplicates. One walk
goes through netsync's own provider description (``providers.bluesky``).
"""

from __future__ import annotations

import math
import re

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from providers.bluesky import Bluesky as BlueskyProvider
from simulator.testing import FakeClock, run_simulator

SIZES = (0, 1, 99, 100, 101, 250)
START = 1_800_000_000.25
CLOCK = FakeClock(START)
FOLLOWERS = "/xrpc/app.bsky.graph.getFollowers"
FOLLOWS = "/xrpc/app.bsky.graph.getFollows"
PROFILE = "/xrpc/app.bsky.actor.getProfile"
REFRESH = "/xrpc/com.atproto.server.refreshSession"
DID = re.compile(r"did:plc:[a-z2-7]{24}")

SCENARIO = {
    "accounts": [
        *(
            {
                "provider": "bluesky",
                "id": f"n{size}.bsky.social",
                "size": size,
                "following_size": size,
                "token": f"bs-{size}",
            }
            for size in SIZES
        ),
        {
            "provider": "bluesky",
            "id": "alice.bsky.social",
            "size": 120,
            "following_size": 7,
            "token": "bs-alice",
            "refresh_token": "bs-alice-r",
            "name": "Alice",
        },
        {
            "provider": "bluesky",
            "id": "did:plc:oldoldoldoldoldoldoldold",
            "handle": "old.bsky.social",
            "size": 3,
            "token": "bs-old",
            "refresh_token": "bs-old-r",
            "expires_at": START - 60,
        },
    ]
}

HTTP = requests.Session()


@pytest.fixture(scope="module")
def sim():
    with run_simulator(SCENARIO, clock=CLOCK) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim):
    CLOCK.now = START
    sim.reset(accounts=True)


def get(sim, path, token="bs-alice", **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HTTP.get(sim.url("bluesky", path), params=params, headers=headers)


def walk(sim, actor, relation, token, limit=None):
    path, key = (FOLLOWERS, "followers") if relation == "followers" else (FOLLOWS, "follows")
    params = {"actor": actor, **({"limit": limit} if limit else {})}
    ids, pages = [], 0
    while True:
        response = get(sim, path, token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) <= {key, "subject", "cursor"} and DID.fullmatch(body["subject"]["did"])
        ids += [item["did"] for item in body[key]]
        pages += 1
        if "cursor" not in body:
            return ids, pages
        params["cursor"] = body["cursor"]


def truth_ids(sim, account_id, relation):
    return sim.truth("bluesky", account_id, relation)["ids"]


@pytest.mark.parametrize("relation", ["followers", "following"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("limit", [100, None])
def test_walk_equals_truth(sim, size, relation, limit):
    account = f"n{size}.bsky.social"
    ids, pages = walk(sim, account, relation, f"bs-{size}", limit)
    truth = truth_ids(sim, account, relation)
    assert len(truth) == size and ids == truth and len(set(ids)) == size
    assert all(DID.fullmatch(i) for i in ids)
    # a full page always carries a cursor; the end is the first short (maybe empty) page
    assert pages == size // (limit or 50) + 1


def test_the_relations_are_distinct_networks(sim):
    followers, following = (
        truth_ids(sim, "alice.bsky.social", "followers"),
        truth_ids(sim, "alice.bsky.social", "following"),
    )
    assert (len(followers), len(following)) == (120, 7) and not set(followers) & set(following)


@pytest.mark.parametrize("relation", ["followers", "following"])
def test_netsync_provider_walks_the_simulator_to_the_truth(sim, relation):
    provider = BlueskyProvider(sim.url("bluesky"))
    cursor, ids = provider.first_cursor("alice.bsky.social", relation), []
    while cursor:
        call = provider.page_call("alice.bsky.social", cursor)
        response = HTTP.get(
            call.url, params=call.params, headers={"Authorization": "Bearer bs-alice"}
        )
        headers = CaseInsensitiveDict(response.headers)
        assert provider.classify(response.status_code, response.json(), headers, CLOCK()) is None
        page = provider.parse_page(response.json(), headers, cursor)
        ids += [i for i, _ in page.connections]
        cursor = page.next_cursor
    assert ids == truth_ids(sim, "alice.bsky.social", relation)
    profile = provider.profile_call("alice.bsky.social")
    body = HTTP.get(
        profile.url, params=profile.params, headers={"Authorization": "Bearer bs-alice"}
    ).json()
    assert provider.parse_size(body, relation) == len(ids)


def test_profile_counts_and_identity(sim):
    body = get(sim, PROFILE, actor="alice.bsky.social").json()
    assert (body["followersCount"], body["followsCount"]) == (120, 7)
    assert body["handle"] == "alice.bsky.social" and body["displayName"] == "Alice"
    assert DID.fullmatch(body["did"])
    # the actor may be the DID or the handle in any case, as on the real AppView
    assert get(sim, PROFILE, actor=body["did"]).json()["did"] == body["did"]
    assert get(sim, PROFILE, actor="ALICE.bsky.social").json()["did"] == body["did"]
    truth = sim.truth("bluesky", "alice.bsky.social")
    assert len(truth["handles"]) == 120
    assert all(
        h == "handle.invalid" or re.fullmatch(r"[a-z]+-[0-9a-f]+\.[a-z.]+", h)
        for h in truth["handles"]
    )


def test_expired_access_token_is_a_400_expired_token(sim):
    response = get(sim, FOLLOWERS, "bs-old", actor="old.bsky.social")
    assert response.status_code == 400
    assert response.json() == {"error": "ExpiredToken", "message": "Token has expired"}


def test_refresh_session_issues_a_new_session_and_rotates_the_refresh_token(sim):
    response = HTTP.post(sim.url("bluesky", REFRESH), headers={"Authorization": "Bearer bs-old-r"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"accessJwt", "refreshJwt", "handle", "did"}
    assert (body["did"], body["handle"]) == ("did:plc:oldoldoldoldoldoldoldold", "old.bsky.social")
    # what netsync reads from it: both tokens, and the expiry from the JWT's exp
    session = BlueskyProvider(sim.url("bluesky")).parse_refresh(body)
    assert session["expires_at"] == math.floor(START + 7200)
    page = get(sim, FOLLOWERS, session["access_token"], actor="old.bsky.social")
    assert page.status_code == 200 and len(page.json()["followers"]) == 3
    # the old refresh token died on use; the new one works (once)
    again = HTTP.post(sim.url("bluesky", REFRESH), headers={"Authorization": "Bearer bs-old-r"})
    assert again.status_code == 400
    assert again.json() == {"error": "ExpiredToken", "message": "Token has been revoked"}
    newer = HTTP.post(
        sim.url("bluesky", REFRESH), headers={"Authorization": f"Bearer {session['refresh_token']}"}
    )
    assert newer.status_code == 200
    tokens = {t["token"] for t in sim.tokens(provider="bluesky")}
    assert {"bs-old.r1", "bs-old.r2"} <= tokens


def test_netsync_refresh_call_against_the_simulator(sim):
    provider = BlueskyProvider(sim.url("bluesky"))
    call = provider.refresh_call("bs-alice-r")
    response = HTTP.request(call.method, call.url, params=call.params, headers=call.headers)
    assert (
        provider.classify_refresh(
            response.status_code, response.json(), CaseInsensitiveDict(response.headers), CLOCK()
        )
        is None
    )
    assert provider.parse_refresh(response.json())["access_token"]


@pytest.mark.parametrize(
    "headers, status, error, message",
    [
        ({}, 401, "AuthMissing", "Authentication Required"),
        ({"Authorization": "Bearer nope"}, 400, "InvalidToken", "Token could not be verified"),
        ({"Authorization": "Bearer bs-alice"}, 400, "InvalidToken", "Invalid token type"),
    ],
)
def test_refresh_session_refusals(sim, headers, status, error, message):
    response = HTTP.post(sim.url("bluesky", REFRESH), headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": error, "message": message}


def test_expire_and_revoke_faults(sim):
    sim.add_faults(
        {"kind": "expire_token", "provider": "bluesky", "token": "bs-alice", "at_call": 1}
    )
    assert get(sim, PROFILE, actor="alice.bsky.social").json()["error"] == "ExpiredToken"
    sim.clear_faults()
    sim.add_faults(
        {"kind": "revoke_token", "provider": "bluesky", "token": "bs-alice", "at_call": 1}
    )
    assert get(sim, PROFILE, actor="alice.bsky.social").json() == {
        "error": "InvalidToken",
        "message": "Token could not be verified",
    }
    refresh = HTTP.post(sim.url("bluesky", REFRESH), headers={"Authorization": "Bearer bs-alice-r"})
    assert refresh.json() == {"error": "ExpiredToken", "message": "Token has been revoked"}


@pytest.mark.parametrize(
    "path, params, token, status, body",
    [
        (
            FOLLOWERS,
            {"actor": "alice.bsky.social"},
            None,
            401,
            {"error": "AuthMissing", "message": "Authentication Required"},
        ),
        (
            FOLLOWERS,
            {"actor": "alice.bsky.social"},
            "nope",
            400,
            {"error": "InvalidToken", "message": "Token could not be verified"},
        ),
        (
            FOLLOWERS,
            {"actor": "nobody.bsky.social"},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": "Actor not found: nobody.bsky.social"},
        ),
        (
            PROFILE,
            {"actor": "nobody.bsky.social"},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": "Profile not found"},
        ),
        (
            FOLLOWS,
            {},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": 'Params must have the property "actor"'},
        ),
        (
            FOLLOWERS,
            {"actor": "alice.bsky.social", "limit": 101},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": "Params/limit can not be greater than 100"},
        ),
        (
            FOLLOWERS,
            {"actor": "alice.bsky.social", "limit": 0},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": "Params/limit can not be less than 1"},
        ),
        (
            FOLLOWERS,
            {"actor": "alice.bsky.social", "cursor": "3kabc"},
            "bs-alice",
            400,
            {"error": "InvalidRequest", "message": "Malformed cursor"},
        ),
        (
            "/xrpc/app.bsky.graph.getNope",
            {},
            "bs-alice",
            501,
            {"error": "MethodNotImplemented", "message": "Method Not Implemented"},
        ),
    ],
)
def test_errors_are_xrpc_shaped(sim, path, params, token, status, body):
    response = get(sim, path, token, **params)
    assert response.status_code == status and response.json() == body
    assert response.headers["Content-Type"].startswith("application/json")


def test_a_well_formed_cursor_the_server_does_not_know_ends_the_list(sim):
    body = get(
        sim, FOLLOWERS, actor="alice.bsky.social", cursor="1700000000000::bafyreinotoursatall"
    ).json()
    assert body["followers"] == [] and "cursor" not in body


@pytest.mark.parametrize(
    "limit, fault",
    [
        (3000, None),  # the implicit default rule: the real PDS limit, 3000 / 5 min per IP
        (
            50,
            {
                "kind": "rate_limit",
                "provider": "bluesky",
                "limit": 50,
                "window_s": 300,
                "scope": "ip",
            },
        ),  # a scenario's own
    ],
)
def test_rate_headers_on_every_answer_and_truthful(sim, limit, fault):
    if fault:
        sim.add_faults(fault)
    answers = [
        get(sim, PROFILE, actor="alice.bsky.social"),
        get(sim, FOLLOWERS, actor="alice.bsky.social"),
        get(sim, FOLLOWS, actor="alice.bsky.social", limit=100),
    ]
    for used, answer in enumerate(answers, start=1):
        assert answer.status_code == 200
        headers = answer.headers
        assert headers["ratelimit-limit"] == str(limit)
        assert headers["ratelimit-policy"] == f"{limit};w=300"
        assert headers["ratelimit-remaining"] == str(limit - used)
        assert headers["ratelimit-reset"] == str(math.floor(START + 300))
    (rule,) = [r for r in sim.stats()["rate_limits"] if r["provider"] == "bluesky"]
    assert (rule["limit"], rule["window_s"], rule["scope"]) == (limit, 300, "ip")
    assert rule["by_key"]["ip:127.0.0.1"]["used"] == 3


def test_a_spent_window_is_a_429_rate_limit_exceeded(sim):
    sim.add_faults(
        {"kind": "rate_limit", "provider": "bluesky", "limit": 2, "window_s": 60, "scope": "ip"}
    )
    statuses = [get(sim, PROFILE, actor="alice.bsky.social") for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    rejected = statuses[2]
    assert rejected.json() == {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
    assert rejected.headers["ratelimit-remaining"] == "0"
    assert rejected.headers["ratelimit-reset"] == str(math.floor(START + 60))
    # the XRPC server's 429 also says Retry-After: ceil(ms before the next window / 1000)
    assert rejected.headers["Retry-After"] == "60"
    provider = BlueskyProvider(sim.url("bluesky"))
    error = provider.classify(429, rejected.json(), CaseInsensitiveDict(rejected.headers), START)
    assert error.rule.kind == "rate_limited" and error.retry_at >= START + 60
    CLOCK.advance(61)
    assert get(sim, PROFILE, actor="alice.bsky.social").status_code == 200


def test_short_pages_keep_the_cursor_going(sim):
    sim.add_faults({"kind": "short_page", "provider": "bluesky", "items": 7, "times": 3})
    ids, pages = walk(sim, "alice.bsky.social", "followers", "bs-alice", 50)
    assert ids == truth_ids(sim, "alice.bsky.social", "followers") and pages > 3


def test_injected_rows(sim):
    sim.add_faults(
        {"kind": "error", "provider": "bluesky", "name": "expired_token_401", "at_call": 1},
        {"kind": "error", "provider": "bluesky", "name": "gateway_html", "at_call": 2},
        {"kind": "outage", "provider": "bluesky", "at_call": 3},
    )
    first, second, third = (get(sim, FOLLOWERS, actor="alice.bsky.social") for _ in range(3))
    assert first.status_code == 401 and first.json()["error"] == "ExpiredToken"
    assert second.status_code == 502 and second.headers["Content-Type"].startswith("text/html")
    assert third.status_code == 503 and third.json()["error"] == "NotEnoughResources"
