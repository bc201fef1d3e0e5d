"""Bluesky against its contract, with canned answers shaped per the docs.

The bodies live in ``tests/fixtures/bluesky/`` (see its README for where
each shape comes from); none is a recording.
"""

from __future__ import annotations

import base64

import pytest
from requests.structures import CaseInsensitiveDict

from providers.bluesky import Bluesky, jwt_expiry
from providers.errors import Action
from providers.provider import check_provider_class
from providers.ratelimits import QuotaLimit
from tests.unit.provider_contract import (
    ErrorCase,
    PageCase,
    ProfileCase,
    ProviderContract,
    RateCase,
    canned,
)

NOW = 1_767_218_400.0
W, B, RF, RA, S, F = (
    Action.WAIT,
    Action.BACKOFF,
    Action.REFRESH,
    Action.REAUTH,
    Action.SKIP,
    Action.FAIL,
)
_, PAGE, _ = canned("bluesky", "followers_200_page.json")
_, FOLLOWS, _ = canned("bluesky", "follows_200.json")


def error(name, action, kind, tell_user=False, **expected):
    """A canned XRPC error: netsync keeps its ``message``."""
    _, body, _ = canned("bluesky", name)
    return ErrorCase(name, name, action, kind, tell_user, message=body["message"], **expected)


class TestBluesky(ProviderContract):
    PROVIDER = Bluesky
    FIXTURES = "bluesky"
    PROFILE = ProfileCase("profile_200.json", 35471536)
    #: the reset is one second past the floored value
    RATE = RateCase("profile_200.json", 3000, 2998, 1767218701.0)
    PAGES = (
        PageCase(
            "the first page, then the cursor",
            "followers_200_page.json",
            Bluesky(Bluesky.API_URL).first_cursor("bsky.app"),
            connections=[
                ("did:plc:vwzwgnygau7ed7b7wt5ux7y2", "alice.bsky.social"),
                ("did:plc:44ybard66vv44zksje25o7dz", "handle.invalid"),
                ("did:plc:oky5czdrnfjpqslsw2a5iclo", "jay.bsky.team"),
            ],
            next_cursor=f"followers:{PAGE['cursor']}",
        ),
        PageCase(
            "the last page has no cursor",
            "followers_200_last.json",
            "followers:1733078400000::bafyreib",
            connections=[("did:plc:l3rouwludahu3ui3bt66mfvj", "divy.zone")],
            followups=[],
        ),
        PageCase(
            "a repeated cursor ends the chain",
            "followers_200_page.json",
            f"followers:{PAGE['cursor']}",
            followups=[],
        ),
        PageCase(
            "follows have their own key",
            "follows_200.json",
            Bluesky(Bluesky.API_URL).first_cursor("bsky.app", "following"),
            connections=[("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "atproto.com")],
            next_cursor=f"following:{FOLLOWS['cursor']}",
        ),
    )
    ERRORS = (
        error("error_400_expired_token.json", RF, "expired_token"),
        error("error_401_expired_token.json", RF, "expired_token"),
        error("error_400_invalid_token.json", RF, "invalid_token"),
        error("error_401_auth_missing.json", F, "auth_missing"),
        error("error_400_actor_not_found.json", S, "not_found"),
        error("error_400_profile_not_found.json", S, "not_found"),
        error("error_400_bad_limit.json", F, "invalid_request"),
        error("error_400_actor_suspended.json", S, "actor_suspended"),
        # the takedown of the user's own account: tell them
        error("error_401_account_takedown.json", RA, "account_takedown", tell_user=True),
        error("error_429_rate_limited.json", W, "rate_limited", retry_at=1767218701.0),
        error("error_500_internal.json", B, "internal_error"),
        error("error_502_upstream_failure.json", B, "upstream_failure"),
    )


@pytest.fixture
def bluesky():
    return Bluesky(Bluesky.API_URL)


def test_the_class_states_every_fact_the_registry_checks():
    check_provider_class(Bluesky, "providers.bluesky:Bluesky")
    assert Bluesky.API_URL == "https://bsky.social"
    assert Bluesky.RELATIONS == ("followers", "following")
    assert [(q.scope, q.limit, q.window_s) for q in Bluesky.QUOTAS] == [("ip", 3000, 300)]
    assert (QuotaLimit("ip", 3000, 300),) == Bluesky.QUOTAS and Bluesky.PAGE_SIZE == 100


def test_profile_call_and_sizes(bluesky):
    call = bluesky.profile_call("did:plc:z72i7hdynmk6r22z27h6tvur")
    assert (call.method, call.url, call.params) == (
        "GET",
        "https://bsky.social/xrpc/app.bsky.actor.getProfile",
        {"actor": "did:plc:z72i7hdynmk6r22z27h6tvur"},
    )
    _, body, _ = canned("bluesky", "profile_200.json")  # the followers' size: PROFILE
    assert bluesky.parse_size(body, "following") == 9


def test_counts_are_optional(bluesky):
    _, body, _ = canned("bluesky", "profile_200_no_counts.json")
    assert bluesky.parse_size(body) is None and bluesky.parse_size(body, "following") is None


def test_first_page_then_the_cursor(bluesky):
    first = bluesky.first_cursor("bsky.app")
    call = bluesky.page_call("bsky.app", first)
    assert (call.url, call.params) == (
        "https://bsky.social/xrpc/app.bsky.graph.getFollowers",
        {"actor": "bsky.app", "limit": Bluesky.PAGE_SIZE},
    )
    # the page itself: TestBluesky.PAGES
    following = bluesky.page_call("bsky.app", f"followers:{PAGE['cursor']}")
    assert following.params == {
        "actor": "bsky.app",
        "limit": Bluesky.PAGE_SIZE,
        "cursor": PAGE["cursor"],
    }


def test_follows_use_their_own_method_and_key(bluesky):
    first = bluesky.first_cursor("bsky.app", "following")
    assert bluesky.page_call("bsky.app", first).url.endswith("/xrpc/app.bsky.graph.getFollows")
    with pytest.raises(ValueError):
        bluesky.first_cursor("bsky.app", "friends")


def test_non_json_error_pages_fall_back_on_the_status(bluesky):
    error = bluesky.classify(
        502, "<html><h1>502 Bad Gateway</h1></html>", CaseInsensitiveDict(), NOW
    )
    assert error.action is Action.BACKOFF
    assert bluesky.classify(400, None, CaseInsensitiveDict(), NOW).action is Action.FAIL


def test_refresh_call_carries_the_refresh_token_in_its_own_header(bluesky):
    call = bluesky.refresh_call("eyJ.refresh.jwt")
    assert (call.method, call.url) == (
        "POST",
        "https://bsky.social/xrpc/com.atproto.server.refreshSession",
    )
    assert call.headers == {"Authorization": "Bearer eyJ.refresh.jwt"} and call.params == {}


def test_parse_refresh_reads_both_tokens_and_the_expiry(bluesky):
    _, body, _ = canned("bluesky", "refresh_200.json")
    assert bluesky.parse_refresh(body) == {
        "access_token": body["accessJwt"],
        "refresh_token": body["refreshJwt"],
        "expires_at": 1767225600.0,
    }
    with pytest.raises(ValueError):
        bluesky.parse_refresh({"did": "did:plc:x"})


def test_an_opaque_token_has_no_expiry(bluesky):
    assert bluesky.parse_refresh({"accessJwt": "opaque", "refreshJwt": "r"})["expires_at"] is None
    garbage = "a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c"
    assert (
        jwt_expiry(garbage) is None and jwt_expiry("a.!!!.c") is None and jwt_expiry(None) is None
    )


@pytest.mark.parametrize(
    "name, action",
    [
        ("error_400_refresh_revoked.json", Action.REAUTH),  # ExpiredToken here is the refresh token
        ("error_400_invalid_token.json", Action.REAUTH),
        ("error_401_account_takedown.json", Action.REAUTH),
        ("error_429_rate_limited.json", Action.WAIT),
        ("error_502_upstream_failure.json", Action.BACKOFF),
    ],
)
def test_refresh_errors_have_their_own_table(bluesky, name, action):
    status, body, headers = canned("bluesky", name)
    assert bluesky.classify_refresh(status, body, headers, NOW).action is action
    assert bluesky.classify_refresh(200, {}, headers, NOW) is None
