"""Each provider reads its own announcement headers (providers.announced), and says how it counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

import providers
from providers import ProviderDefinitionError
from providers.announced import (
    AnnouncedRule,
    AnnouncedRuleError,
    Announcement,
    parse_policy,
    parse_retry_after,
)
from providers.bluesky import Bluesky
from providers.github import GitHub
from providers.mastodon import Mastodon
from providers.provider import HttpCall, check_provider_class
from providers.twitter import Twitter
from state.announced import Caller, scope_key

NOW = 1_780_000_000.0


def headers(**values) -> CaseInsensitiveDict:
    return CaseInsensitiveDict({k.replace("_", "-"): v for k, v in values.items()})


# -- every provider's real headers -----------------------------------------------------
def test_github_announces_limit_remaining_reset_and_its_resource():
    report = GitHub("https://api.github.com").announced(
        headers(
            x_ratelimit_limit="5000",
            x_ratelimit_remaining="4987",
            x_ratelimit_used="13",
            x_ratelimit_reset="1780003600",
            x_ratelimit_resource="core",
        ),
        NOW,
    )
    assert report.announcements == (Announcement(5000, 4987, 1780003600.0, None, "core"),)
    assert report.retry_after is None and report.malformed == ()


def test_github_remaining_from_used_when_remaining_is_absent():
    report = GitHub("https://x").announced(
        headers(x_ratelimit_limit="60", x_ratelimit_used="5", x_ratelimit_reset="1780000100"), NOW
    )
    assert report.announcements[0].remaining == 55


def test_github_secondary_limit_says_only_retry_after():
    report = GitHub("https://x").announced(headers(retry_after="60"), NOW)
    assert report.announcements == () and report.retry_after == 60.0


def test_x_announces_its_15_minute_window():
    report = Twitter("https://api.twitter.com").announced(
        headers(
            x_rate_limit_limit="300", x_rate_limit_remaining="0", x_rate_limit_reset="1780000900"
        ),
        NOW,
    )
    assert report.announcements == (Announcement(300, 0, 1780000900.0),)


def test_mastodon_reset_is_iso8601_with_microseconds():
    report = Mastodon("https://fosstodon.org").announced(
        {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": "299",
            "X-RateLimit-Reset": "2026-05-28T20:30:00.104512Z",
        },
        NOW,
    )
    (found,) = report.announcements
    assert (found.limit, found.remaining) == (300, 299)
    assert found.reset_at == pytest.approx(1780000200.104512)


def test_bluesky_policy_states_the_window_and_reset_is_floored():
    report = Bluesky("https://bsky.social").announced(
        headers(
            RateLimit_Limit="3000",
            RateLimit_Remaining="2999",
            RateLimit_Reset="1780000300",
            RateLimit_Policy="3000;w=300",
        ),
        NOW,
    )
    assert report.announcements == (Announcement(3000, 2999, 1780000301.0, 300.0),)


def test_policy_with_several_items_and_parameters():
    assert parse_policy("100;w=60, 3000;w=300;comment=x") == ((100, 60.0), (3000, 300.0))


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Thu, 28 May 2026 20:28:20 GMT", NOW) == pytest.approx(100.0)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:00 GMT", NOW) == 0.0  # in the past


def test_retry_after_is_honoured_on_any_status_and_any_provider():
    for cls in providers.provider_classes().values():
        report = cls(cls.API_URL).announced(headers(retry_after="7"), NOW)
        assert report.retry_after == 7.0, cls.NAME


# -- bad headers: ignored for that answer, reported, never raised ---------------------------
@pytest.mark.parametrize(
    "bad, named",
    [
        ({"x-ratelimit-limit": "lots"}, "x-ratelimit-limit"),
        ({"x-ratelimit-remaining": "-1"}, "x-ratelimit-remaining"),
        ({"x-ratelimit-reset": "soon"}, "x-ratelimit-reset"),
        ({"x-ratelimit-reset": "nan"}, "x-ratelimit-reset"),
        ({"x-ratelimit-remaining": "6000"}, "x-ratelimit-limit"),  # more left than the limit
        ({"x-ratelimit-limit": "0"}, "x-ratelimit-limit"),
        ({"retry-after": "whenever"}, "retry-after"),
    ],
)
def test_an_unreadable_header_is_named_and_its_announcement_ignored(bad, named):
    good = {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-reset": "1780003600",
    }
    report = GitHub("https://x").announced({**good, **bad}, NOW)
    assert named in report.malformed
    if named != "retry-after":
        assert report.announcements == ()


def test_an_unreadable_mastodon_reset_is_named():
    report = Mastodon("https://m").announced(
        {"x-ratelimit-limit": "300", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "Tuesday"},
        NOW,
    )
    assert report.announcements == () and report.malformed == ("x-ratelimit-reset",)


def test_an_unreadable_policy_leaves_the_counts():
    report = Bluesky("https://b").announced(
        {
            "ratelimit-limit": "3000",
            "ratelimit-remaining": "5",
            "ratelimit-reset": "1780000300",
            "ratelimit-policy": "3000 per 5 minutes",
        },
        NOW,
    )
    assert report.malformed == ("ratelimit-policy",)
    assert report.announcements[0].window_s is None and report.announcements[0].remaining == 5


@given(st.dictionaries(st.sampled_from(_names := [
    "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used",
    "x-ratelimit-resource", "retry-after", "X-RateLimit-Reset", "ratelimit-policy",
]), st.text(max_size=40)))  # fmt: skip
def test_no_header_value_makes_any_provider_raise(values):
    for cls in providers.provider_classes().values():
        report = cls(cls.API_URL).announced(values, NOW)
        for found in report.announcements:
            assert 0 <= found.remaining <= found.limit


def test_no_headers_at_all():
    assert GitHub("https://x").announced({}, NOW).is_empty()
    assert GitHub("https://x").announced(None, NOW).is_empty()


# -- which calls page, which endpoint, which key -----------------------------------------
def test_mastodon_paging_is_any_request_with_page_or_an_id_bound():
    masto = Mastodon("https://fosstodon.org")
    first = masto.page_call("1", masto.first_cursor("1"))
    assert not masto.is_paging(first)
    assert not masto.is_paging(masto.profile_call("1"))
    for param in ("max_id=9", "since_id=9", "min_id=9", "page=2"):
        call = HttpCall("GET", f"https://fosstodon.org/api/v1/accounts/1/followers?{param}")
        assert masto.is_paging(call), param
    assert masto.is_paging(HttpCall("GET", "https://fosstodon.org/x", {"max_id": "3"}))


def test_x_counts_per_endpoint():
    x = Twitter("https://api.twitter.com")
    assert x.endpoint(x.page_call("42", "token:")) == "users/:id/followers"
    assert x.endpoint(x.page_call("42", "following:abc")) == "users/:id/following"
    assert x.endpoint(x.profile_call("42")) == "users/:id"


def test_scope_keys_as_the_providers_count():
    one = Caller("octocat", "a" * 16, "api.github.com")
    refreshed = Caller("octocat", "b" * 16, "api.github.com")
    github = GitHub("https://api.github.com")
    call = github.profile_call("octocat")
    # GitHub pools per user: every token of the account shares one key
    assert scope_key("account", github, call, one) == scope_key("account", github, call, refreshed)
    x = Twitter("https://api.twitter.com")
    followers, following = x.page_call("1", "token:"), x.page_call("1", "following:")
    assert scope_key("endpoint", x, followers, one) != scope_key("endpoint", x, following, one)
    sky = Bluesky("https://pds.example")
    here = Caller("did:plc:abc", "c" * 16, "pds.example", egress="nat-1")
    elsewhere = Caller("did:plc:xyz", "d" * 16, "other.example", egress="nat-1")
    call = sky.profile_call("did:plc:abc")
    assert scope_key("ip", sky, call, here) == "nat-1@pds.example"
    assert scope_key("ip", sky, call, elsewhere) != scope_key("ip", sky, call, here)
    odd = Caller("we{ird} name", "e" * 16, "h")
    assert "{" not in scope_key("account", github, call, odd)


# -- the facts are checked at start-up ------------------------------------------------
def test_each_provider_documents_its_rules_price_and_cap():
    classes = providers.provider_classes()
    assert classes["github"].CONCURRENCY_CAP == 100
    assert classes["twitter"].PRICE_USD == 0.010
    paging = [r for r in classes["mastodon"].ANNOUNCED_RULES if r.applies_to == "paging"]
    assert [(r.limit, r.window_s) for r in paging] == [(300, 900)]
    assert classes["bluesky"].ANNOUNCED_RULES[0].scope == "ip"
    assert classes["facebook"].ANNOUNCED_RULES == () == classes["linkedin"].ANNOUNCED_RULES


def test_a_bad_rule_or_price_fails_naming_the_provider():
    with pytest.raises(AnnouncedRuleError):
        AnnouncedRule(0, 60, "token")
    with pytest.raises(AnnouncedRuleError):
        AnnouncedRule(10, 60, "galaxy")

    class TwoScopes(GitHub):
        ANNOUNCED_RULES = (AnnouncedRule(1, 1, "token"), AnnouncedRule(2, 1, "account"))

    class Priced(GitHub):
        PRICE_USD = -1

    class Capped(GitHub):
        CONCURRENCY_CAP = 0

    for cls, fact in (
        (TwoScopes, "ANNOUNCED_RULES"),
        (Priced, "PRICE_USD"),
        (Capped, "CONCURRENCY"),
    ):
        with pytest.raises(ProviderDefinitionError, match=fact):
            check_provider_class(cls, "tests:" + cls.__name__)
