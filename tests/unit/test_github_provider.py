"""GitHub parsing and classification against real recorded responses."""

from __future__ import annotations

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.github import GitHub, parse_link_header
from tests.conftest import recorded

NOW = 1_700_000_000.0


@pytest.fixture
def github():
    return GitHub("https://api.github.com")


def test_profile_size(github):
    status, body, headers = recorded("github", "user_profile_200.json")
    assert github.classify(status, body, headers, NOW) is None
    assert github.parse_size(body) == body["followers"]


def test_single_page_has_no_followups(github):
    status, body, headers = recorded("github", "user_followers_200_single_page_no_link.json")
    page = github.parse_page(body, headers, "/users/jacquev6/followers?per_page=100&page=1")
    assert page.followups == []
    assert page.connections[0] == (str(body[0]["id"]), body[0]["login"])
    assert len(page.connections) == len(body)
    assert all(isinstance(i, str) for i, _ in page.connections)


def test_first_page_with_last_fans_out_every_page(github):
    status, body, headers = recorded("github", "stargazers_page1_200_link_next_last.json")
    page = github.parse_page(body, headers, "/repos/PyGithub/PyGithub/stargazers")
    assert page.next_cursor is None
    assert page.followups == [
        "/repos/PyGithub/PyGithub/stargazers?page=2",
        "/repos/PyGithub/PyGithub/stargazers?page=3",
    ]


def test_later_page_with_last_launches_nothing(github):
    # Page one already launched every page; a later page's rel="next" is not followed.
    status, body, headers = recorded("github", "stargazers_page1_200_link_next_last.json")
    page = github.parse_page(body, headers, "/repos/PyGithub/PyGithub/stargazers?page=2")
    assert page.followups == []


def test_last_page_link_has_only_first_prev(github):
    status, body, headers = recorded(
        "github", "stargazers_page3_200_last_page_link_first_prev.json"
    )
    page = github.parse_page(body, headers, "/repos/PyGithub/PyGithub/stargazers?page=3")
    assert page.followups == []


def test_next_without_last_chains(github):
    headers = CaseInsensitiveDict(
        {"Link": '<https://api.github.com/user/9/followers?page=4>; rel="next"'}
    )
    page = github.parse_page([], headers, "/users/x/followers?page=3")
    assert page.followups == ["/user/9/followers?page=4"]


def test_links_to_another_host_are_not_followed(github):
    # Following it would send the user's token to that host.
    headers = CaseInsensitiveDict({"Link": '<https://evil.example/followers?page=2>; rel="next"'})
    assert github.parse_page([], headers, "/users/x/followers?page=1").followups == []


def test_bad_credentials_is_reauth(github):
    status, body, headers = recorded("github", "error_401_bad_credentials.json")
    error = github.classify(status, body, headers, NOW)
    assert error.action is Action.REAUTH and error.rule.kind == "bad_credentials"


def test_primary_rate_limit_without_reset_waits_from_floor(github):
    status, body, headers = recorded("github", "error_403_rate_limit_exceeded.json")
    error = github.classify(status, body, headers, NOW)
    assert error.action is Action.WAIT and error.rule.kind == "rate_limited"
    assert error.retry_at is None  # that old answer carried no reset header


def test_primary_rate_limit_waits_until_reset(github):
    headers = CaseInsensitiveDict(
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 900)}
    )
    error = github.classify(429, {"message": "API rate limit exceeded"}, headers, NOW)
    assert error.action is Action.WAIT and error.retry_at == NOW + 900


def test_secondary_limit_with_retry_after(github):
    status, body, headers = recorded("github", "error_403_secondary_rate_limit_retry_after.json")
    error = github.classify(status, body, headers, NOW)
    assert error.action is Action.WAIT and error.rule.kind == "secondary_rate_limit"
    assert error.retry_at == NOW + 60


def test_secondary_limit_without_retry_after(github):
    body = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes"}
    error = github.classify(403, body, CaseInsensitiveDict(), NOW)
    assert error.rule.kind == "secondary_rate_limit" and error.retry_at is None


def test_unknown_user_is_skip(github):
    status, body, headers = recorded("github", "error_404_unknown_user.json")
    assert github.classify(status, body, headers, NOW).action is Action.SKIP


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_back_off(github, status):
    assert github.classify(status, None, CaseInsensitiveDict(), NOW).action is Action.BACKOFF


def test_rate_headers_any_casing(github):
    status, body, headers = recorded("github", "user_profile_200.json")
    info = github.rate_info(headers)
    assert info.remaining == 4996 and info.reset_at == 1735944560


def test_link_header_parsing():
    value = '<https://a/x?page=2>; rel="next", <https://a/x?page=5>; rel="last"'
    assert parse_link_header(value) == {"next": "https://a/x?page=2", "last": "https://a/x?page=5"}
    assert parse_link_header("") == {}
    assert parse_link_header("garbage, <no-close; rel=next") == {}
