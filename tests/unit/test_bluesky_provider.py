"""Bluesky parsing and classification against canned answers shaped per the docs.

The bodies live in ``tests/fixtures/bluesky/`` (see its README for where
each shape comes from); none is a recording.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from requests.structures import CaseInsensitiveDict

from providers.bluesky import Bluesky, jwt_expiry
from providers.errors import Action
from providers.provider import check_provider_class
from providers.ratelimits import QuotaLimit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bluesky"
NOW = 1_767_218_400.0


def canned(name):
    response = json.loads((FIXTURES / name).read_text())["response"]
    return response["status"], response["body"], CaseInsensitiveDict(response.get("headers") or {})


@pytest.fixture
def bluesky():
    return Bluesky("https://bsky.social")


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
    status, body, headers = canned("profile_200.json")
    assert bluesky.classify(status, body, headers, NOW) is None
    assert bluesky.parse_size(body) == 35471536
    assert bluesky.parse_size(body, "following") == 9


def test_counts_are_optional(bluesky):
    _, body, _ = canned("profile_200_no_counts.json")
    assert bluesky.parse_size(body) is None and bluesky.parse_size(body, "following") is None


def test_first_page_then_the_cursor(bluesky):
    first = bluesky.first_cursor("bsky.app")
    call = bluesky.page_call("bsky.app", first)
    assert (call.url, call.params) == (
        "https://bsky.social/xrpc/app.bsky.graph.getFollowers",
        {"actor": "bsky.app", "limit": 100},
    )
    _, body, headers = canned("followers_200_page.json")
    page = bluesky.parse_page(body, headers, first)
    assert page.connections == [
        ("did:plc:vwzwgnygau7ed7b7wt5ux7y2", "alice.bsky.social"),
        ("did:plc:44ybard66vv44zksje25o7dz", "handle.invalid"),
        ("did:plc:oky5czdrnfjpqslsw2a5iclo", "jay.bsky.team"),
    ]
    assert page.next_cursor == f"followers:{body['cursor']}"
    following = bluesky.page_call("bsky.app", page.next_cursor)
    assert following.params == {"actor": "bsky.app", "limit": 100, "cursor": body["cursor"]}


def test_the_last_page_has_no_cursor(bluesky):
    _, body, headers = canned("followers_200_last.json")
    page = bluesky.parse_page(body, headers, "followers:1733078400000::bafyreib")
    assert page.connections == [("did:plc:l3rouwludahu3ui3bt66mfvj", "divy.zone")]
    assert page.followups == []


def test_a_repeated_cursor_ends_the_chain(bluesky):
    _, body, headers = canned("followers_200_page.json")
    page = bluesky.parse_page(body, headers, f"followers:{body['cursor']}")
    assert page.followups == []


def test_follows_use_their_own_method_and_key(bluesky):
    first = bluesky.first_cursor("bsky.app", "following")
    assert bluesky.page_call("bsky.app", first).url.endswith("/xrpc/app.bsky.graph.getFollows")
    _, body, headers = canned("follows_200.json")
    page = bluesky.parse_page(body, headers, first)
    assert page.connections == [("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "atproto.com")]
    assert page.next_cursor == f"following:{body['cursor']}"
    with pytest.raises(ValueError):
        bluesky.first_cursor("bsky.app", "friends")


def test_rate_headers_reset_is_one_second_past_the_floored_value(bluesky):
    _, _, headers = canned("profile_200.json")
    info = bluesky.rate_info(headers)
    assert (info.limit, info.remaining, info.reset_at) == (3000, 2998, 1767218701.0)


@pytest.mark.parametrize(
    "name, action, kind",
    [
        ("error_400_expired_token.json", Action.REFRESH, "expired_token"),
        ("error_401_expired_token.json", Action.REFRESH, "expired_token"),
        ("error_400_invalid_token.json", Action.REFRESH, "invalid_token"),
        ("error_401_auth_missing.json", Action.FAIL, "auth_missing"),
        ("error_400_actor_not_found.json", Action.SKIP, "not_found"),
        ("error_400_profile_not_found.json", Action.SKIP, "not_found"),
        ("error_400_bad_limit.json", Action.FAIL, "invalid_request"),
        ("error_400_actor_suspended.json", Action.SKIP, "actor_suspended"),
        ("error_401_account_takedown.json", Action.REAUTH, "account_takedown"),
        ("error_429_rate_limited.json", Action.WAIT, "rate_limited"),
        ("error_500_internal.json", Action.BACKOFF, "internal_error"),
        ("error_502_upstream_failure.json", Action.BACKOFF, "upstream_failure"),
    ],
)
def test_error_table(bluesky, name, action, kind):
    status, body, headers = canned(name)
    error = bluesky.classify(status, body, headers, NOW)
    assert (error.action, error.rule.kind) == (action, kind)
    assert error.message == body["message"]


def test_takedown_of_the_users_own_account_tells_them(bluesky):
    status, body, headers = canned("error_401_account_takedown.json")
    assert bluesky.classify(status, body, headers, NOW).rule.tell_user


def test_429_waits_until_the_reset(bluesky):
    status, body, headers = canned("error_429_rate_limited.json")
    assert bluesky.classify(status, body, headers, NOW).retry_at == 1767218701.0


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
    _, body, _ = canned("refresh_200.json")
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
    status, body, headers = canned(name)
    assert bluesky.classify_refresh(status, body, headers, NOW).action is action
    assert bluesky.classify_refresh(200, {}, headers, NOW) is None
