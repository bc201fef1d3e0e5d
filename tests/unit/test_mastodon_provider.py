"""Mastodon against its contract: real recorded responses and PROVIDERS.md's error table."""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.mastodon import Mastodon, parse_iso8601
from tests.unit.provider_contract import (
    NOW,
    ErrorCase,
    PageCase,
    ProfileCase,
    ProviderContract,
    RateCase,
    canned,
)

W, B, RA, S = Action.WAIT, Action.BACKOFF, Action.REAUTH, Action.SKIP
#: the recordings' instance
INSTANCE = "http://localhost:3000"


class TestMastodon(ProviderContract):
    PROVIDER = Mastodon
    BASE_URL = INSTANCE
    FIXTURES = "real/mastodon"
    PROFILE = ProfileCase("account_200.json", 0)
    RATE = RateCase(
        "account_200.json",  # the reset is ISO 8601
        300,
        299,
        datetime.datetime(2026, 8, 1, 13, 50, 0, 104512, tzinfo=datetime.UTC).timestamp(),
    )
    PAGES = (
        PageCase(
            "a single page has only prev",
            "account_followers_200_link_prev_only.json",
            Mastodon(INSTANCE).first_cursor("1"),
            connections=[("1234567890123456", "mastodonpy_test")],
            followups=[],
        ),
    )
    ERRORS = (
        ErrorCase(
            "recorded 401 invalid token",
            "error_401_invalid_token.json",
            RA,
            "invalid_token",
            message="The access token is invalid",
        ),
        ErrorCase("recorded 404 unknown account", "error_404_account_lookup.json", S, "not_found"),
        ErrorCase(
            "429 waits until the ISO reset",
            (
                429,
                {"error": "Too many requests"},
                {
                    "X-RateLimit-Limit": "300",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": "2023-11-14T22:18:20.000000Z",
                },
            ),
            W,
            "rate_limited",
            retry_at=NOW + 300,
        ),
        # PROVIDERS.md's table
        ErrorCase("401", (401, {"error": "The access token is invalid"}, {}), RA, "invalid_token"),
        ErrorCase("403", (403, {"error": "This action is not allowed"}, {}), RA, "forbidden", True),
        ErrorCase("404", (404, {"error": "Record not found"}, {}), S, "not_found"),
        ErrorCase("410", (410, {"error": "Gone"}, {}), S, "gone"),
        ErrorCase(
            "429",
            (
                429,
                {"error": "Too many requests"},
                {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2023-11-14T22:15:20.000Z"},
            ),
            W,
            "rate_limited",
            retry_at=NOW + 120,
        ),
        ErrorCase("503", (503, {"error": "Service Unavailable"}, {}), B, "unavailable"),
    )

    # the base URL is the user's instance: the recording's
    def recording_provider(self, request_url):
        parts = urlsplit(request_url)
        return Mastodon(f"{parts.scheme}://{parts.netloc}")

    def recorded_cursor(self, provider, account_id, request_url):
        return self.link_cursor(provider, request_url)

    def documented_ids(self, body):
        return [str(item["id"]) for item in body]


def test_profile_call():
    assert (
        Mastodon(INSTANCE).profile_call("117020457910412882").url
        == f"{INSTANCE}/api/v1/accounts/117020457910412882"
    )


def test_iso8601_variants():
    assert parse_iso8601("2026-08-01T13:50:00Z") == parse_iso8601("2026-08-01T13:50:00+00:00")
    assert parse_iso8601("1700000000") is None and parse_iso8601(None) is None


def test_empty_page_without_link_is_the_end():
    mastodon = Mastodon(INSTANCE)
    status, body, headers = canned("real/mastodon", "account_followers_200_empty_no_link.json")
    first = mastodon.first_cursor("117020457910412882")
    page = mastodon.parse_page(body, headers, first)
    assert page.connections == [] and page.followups == []
    assert mastodon.page_anomaly(page, first, 0) == ""  # truly empty


def test_hidden_network_is_flagged():
    mastodon = Mastodon(INSTANCE)
    first = mastodon.first_cursor("1")
    page = mastodon.parse_page([], CaseInsensitiveDict(), first)
    assert mastodon.page_anomaly(page, first, 12) == "hidden_network"


def test_next_link_is_followed_as_given():
    mastodon = Mastodon(INSTANCE)
    headers = CaseInsensitiveDict(
        {
            "link": f"<{INSTANCE}/api/v1/accounts/1/followers?limit=80"
            f'&max_id=999>; rel="next", <{INSTANCE}/api/v1/'
            'accounts/1/followers?since_id=1200>; rel="prev"'
        }
    )
    body = [{"id": str(i), "acct": f"u{i}@example.org"} for i in range(80)]
    page = mastodon.parse_page(body, headers, mastodon.first_cursor("1"))
    assert page.followups == ["/api/v1/accounts/1/followers?limit=80&max_id=999"]
    assert (
        mastodon.page_call("1", page.next_cursor).url
        == f"{INSTANCE}/api/v1/accounts/1/followers?limit=80&max_id=999"
    )


def test_first_cursor_keeps_the_base_path():
    provider = Mastodon("http://127.0.0.1:8900/mastodon")
    cursor = provider.first_cursor("42")
    assert cursor == f"/mastodon/api/v1/accounts/42/followers?limit={Mastodon.PAGE_SIZE}"
    assert provider.page_call("42", cursor).url == f"http://127.0.0.1:8900{cursor}"
