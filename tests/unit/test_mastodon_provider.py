"""Mastodon parsing and classification against real recorded responses."""

from __future__ import annotations

import datetime

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.mastodon import Mastodon, parse_iso8601
from tests.conftest import recorded

NOW = 1_700_000_000.0


@pytest.fixture
def mastodon():
    return Mastodon("http://localhost:3000")


def test_profile_size(mastodon):
    status, body, headers = recorded("mastodon", "account_200.json")
    assert (
        mastodon.profile_call("117020457910412882").url
        == "http://localhost:3000/api/v1/accounts/117020457910412882"
    )
    assert mastodon.classify(status, body, headers, NOW) is None
    assert mastodon.parse_size(body) == 0


def test_iso8601_reset(mastodon):
    status, body, headers = recorded("mastodon", "account_200.json")
    info = mastodon.rate_info(headers)
    expected = datetime.datetime(2026, 8, 1, 13, 50, 0, 104512, tzinfo=datetime.UTC)
    assert (info.limit, info.remaining, info.reset_at) == (300, 299, expected.timestamp())


def test_iso8601_variants():
    assert parse_iso8601("2026-08-01T13:50:00Z") == parse_iso8601("2026-08-01T13:50:00+00:00")
    assert parse_iso8601("1700000000") is None and parse_iso8601(None) is None


def test_empty_page_without_link_is_the_end(mastodon):
    status, body, headers = recorded("mastodon", "account_followers_200_empty_no_link.json")
    first = mastodon.first_cursor("117020457910412882")
    page = mastodon.parse_page(body, headers, first)
    assert page.connections == [] and page.followups == []
    assert mastodon.page_anomaly(page, first, 0) == ""  # truly empty


def test_hidden_network_is_flagged(mastodon):
    first = mastodon.first_cursor("1")
    page = mastodon.parse_page([], CaseInsensitiveDict(), first)
    assert mastodon.page_anomaly(page, first, 12) == "hidden_network"


def test_single_page_has_only_prev(mastodon):
    status, body, headers = recorded("mastodon", "account_followers_200_link_prev_only.json")
    page = mastodon.parse_page(body, headers, mastodon.first_cursor("1"))
    assert page.connections == [("1234567890123456", "mastodonpy_test")]
    assert page.followups == []


def test_next_link_is_followed_as_given(mastodon):
    headers = CaseInsensitiveDict(
        {
            "link": "<http://localhost:3000/api/v1/accounts/1/followers?limit=80"
            '&max_id=999>; rel="next", <http://localhost:3000/api/v1/'
            'accounts/1/followers?since_id=1200>; rel="prev"'
        }
    )
    body = [{"id": str(i), "acct": f"u{i}@example.org"} for i in range(80)]
    page = mastodon.parse_page(body, headers, mastodon.first_cursor("1"))
    assert page.followups == ["/api/v1/accounts/1/followers?limit=80&max_id=999"]
    assert (
        mastodon.page_call("1", page.next_cursor).url
        == "http://localhost:3000/api/v1/accounts/1/followers?limit=80&max_id=999"
    )


def test_first_cursor_keeps_the_base_path():
    provider = Mastodon("http://127.0.0.1:8900/mastodon")
    cursor = provider.first_cursor("42")
    assert cursor == "/mastodon/api/v1/accounts/42/followers?limit=80"
    assert (
        provider.page_call("42", cursor).url
        == "http://127.0.0.1:8900/mastodon/api/v1/accounts/42/followers?limit=80"
    )


def test_invalid_token_is_reauth(mastodon):
    status, body, headers = recorded("mastodon", "error_401_invalid_token.json")
    error = mastodon.classify(status, body, headers, NOW)
    assert error.action is Action.REAUTH and error.message == "The access token is invalid"


def test_unknown_account_is_skip(mastodon):
    status, body, headers = recorded("mastodon", "error_404_account_lookup.json")
    assert mastodon.classify(status, body, headers, NOW).action is Action.SKIP


def test_429_waits_until_the_iso_reset(mastodon):
    headers = CaseInsensitiveDict(
        {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "2023-11-14T22:18:20.000000Z",
        }
    )
    error = mastodon.classify(429, {"error": "Too many requests"}, headers, NOW)
    assert error.action is Action.WAIT and error.retry_at == NOW + 300
