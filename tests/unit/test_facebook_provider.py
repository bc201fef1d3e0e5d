"""Facebook parsing and classification against real recorded responses."""

from __future__ import annotations

import json

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.facebook import Facebook
from tests.conftest import recorded

NOW = 1_700_000_000.0
TOKEN = "EAAGm0PX4ZCpsBAsecret"


@pytest.fixture
def facebook():
    return Facebook("https://graph.facebook.com")


def friends_page(after="QVFIUmFfdmVy", token=TOKEN, data=None):
    nxt = (
        f"https://graph.facebook.com/v19.0/4/friends?access_token={token}&limit=5000"
        f"&summary=total_count&after={after}"
    )
    return {
        "data": data if data is not None else [{"name": "Bill Doe", "id": "233242342342"}],
        "paging": {"cursors": {"before": "QVFIUjBh", "after": after}, "next": nxt},
        "summary": {"total_count": 3},
    }


def test_size_is_summary_total_count(facebook):
    call = facebook.profile_call("4")
    assert call.url == "https://graph.facebook.com/v19.0/4/friends"
    assert call.params == {"limit": 0, "summary": "total_count"}
    assert facebook.parse_size({"data": [], "summary": {"total_count": 3}}) == 3
    assert (
        facebook.parse_size({"friends": {"data": [], "summary": {"total_count": 7}}, "id": "4"})
        == 7
    )


def test_next_keeps_only_the_after_cursor_never_the_token(facebook):
    page = facebook.parse_page(friends_page(), CaseInsensitiveDict(), "after:")
    assert page.connections == [("233242342342", "Bill Doe")] and page.total == 3
    assert page.followups == ["after:QVFIUmFfdmVy"]
    call = facebook.page_call("4", page.next_cursor)
    assert call.url == "https://graph.facebook.com/v19.0/4/friends"
    assert call.params == {"limit": 5000, "summary": "total_count", "after": "QVFIUmFfdmVy"}
    assert TOKEN not in json.dumps([page.followups, call.url, call.params])


def test_empty_page_with_next_goes_on(facebook):
    page = facebook.parse_page(friends_page(data=[]), CaseInsensitiveDict(), "after:x")
    assert page.connections == [] and page.followups == ["after:QVFIUmFfdmVy"]


def test_no_next_is_the_end(facebook):
    body = {
        "data": [{"name": "A", "id": "1"}],
        "paging": {"cursors": {"before": "a", "after": "b"}},
    }
    assert facebook.parse_page(body, CaseInsensitiveDict(), "after:").followups == []


def test_short_page_with_next_recorded(facebook):
    # Recorded: paging.next on a page of 2 (of a 5000 limit), next without an after cursor.
    status, body, headers = recorded("facebook", "user_subscribers_200_body_only.json")
    assert facebook.classify(status, body, headers, NOW) is None
    page = facebook.parse_page(body, headers, "after:")
    assert page.connections == [("1396637703", "Kunal Gandhre"), ("717005001", "Adnan S.")]
    (cursor,) = page.followups
    call = facebook.page_call("me", cursor)
    assert call.url == "https://graph.facebook.com/me/subscribers"
    assert call.params["offset"] == "5000" and call.params["__after_id"] == "708124104"


def test_recorded_next_url_loses_its_access_token(facebook):
    status, body, headers = recorded("facebook", "page_posts_200_paging_and_likes_summary.json")
    (cursor,) = facebook.parse_page(body, headers, "after:").followups
    assert "access_token" not in cursor and "until=1413385867" in cursor
    assert "access_token" not in facebook.page_call("GetG5", cursor).params


def test_next_on_another_host_is_not_followed(facebook):
    body = {"data": [], "paging": {"next": "https://evil.example/v19.0/4/friends?access_token=x"}}
    assert facebook.parse_page(body, CaseInsensitiveDict(), "after:").followups == []


def test_recorded_code_100_restarts_pagination(facebook):
    status, body, headers = recorded(
        "facebook", "error_400_oauthexception_100_app_permissions.json"
    )
    error = facebook.classify(status, body, headers, NOW)
    assert error.action is Action.RESTART and error.rule.kind == "cursor_expired"


@pytest.mark.parametrize(
    "name",
    [
        "error_400_oauthexception_1_invalid_client_secret.json",
        "error_500_oauthexception_1_unknown_error.json",
    ],
)
def test_recorded_code_1_backs_off_whatever_the_status(facebook, name):
    status, body, headers = recorded("facebook", name)
    error = facebook.classify(status, body, headers, NOW)
    assert error.action is Action.BACKOFF and error.rule.kind == "unknown_error"


def test_app_usage_header(facebook):
    headers = CaseInsensitiveDict(
        {"X-App-Usage": '{"call_count":28,"total_time":25,"total_cputime":25}'}
    )
    assert facebook.rate_info(headers).usage_percent == 28.0
    assert facebook.rate_info(CaseInsensitiveDict({"x-app-usage": "garbage"})).usage_percent is None


def test_business_use_case_usage_says_when_to_come_back(facebook):
    usage = {
        "1234": [
            {
                "type": "pages",
                "call_count": 100,
                "total_cputime": 23,
                "total_time": 23,
                "estimated_time_to_regain_access": 5,
            }
        ]
    }
    headers = CaseInsensitiveDict({"x-business-use-case-usage": json.dumps(usage)})
    body = {
        "error": {
            "message": "(#32) Page request limit reached",
            "type": "OAuthException",
            "code": 32,
            "is_transient": True,
            "fbtrace_id": "x",
        }
    }
    error = facebook.classify(403, body, headers, NOW)
    assert error.action is Action.WAIT and error.retry_at == NOW + 300


def test_policy_block_waits_long(facebook):
    body = {"error": {"message": "(#368) blocked", "type": "OAuthException", "code": 368}}
    error = facebook.classify(400, body, CaseInsensitiveDict(), NOW)
    assert error.action is Action.WAIT and error.retry_at == NOW + 3600


def test_unknown_codes(facebook):
    transient = {"error": {"message": "?", "code": 9999, "is_transient": True}}
    assert facebook.classify(400, transient, CaseInsensitiveDict(), NOW).action is Action.BACKOFF
    unknown = {"error": {"message": "?", "code": 9999}}
    assert facebook.classify(500, unknown, CaseInsensitiveDict(), NOW).action is Action.FAIL
    # Not a Graph error at all (a proxy's page): by status.
    assert facebook.classify(502, None, CaseInsensitiveDict(), NOW).action is Action.BACKOFF


def test_empty_page_pointing_back_at_itself_is_asked_again(facebook):
    page = facebook.parse_page(
        friends_page(after="HERE", data=[]), CaseInsensitiveDict(), "after:HERE"
    )
    assert page.followups == ["after:HERE#2"]
    again = facebook.parse_page(
        friends_page(after="HERE", data=[]), CaseInsensitiveDict(), "after:HERE#2"
    )
    assert again.followups == ["after:HERE#3"]
    assert facebook.page_call("4", "after:HERE#3").params["after"] == "HERE"
