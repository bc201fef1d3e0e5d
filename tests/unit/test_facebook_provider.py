"""Facebook against its contract: real recorded responses and PROVIDERS.md's error table.

Also the talk's "at least 10 unique error messages" for a bad token: every one
must be REAUTH by its code, whatever its message or HTTP status.
"""

from __future__ import annotations

import json

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.facebook import Facebook
from tests.unit.provider_contract import (
    NOW,
    ErrorCase,
    PageCase,
    ProfileCase,
    ProviderContract,
    RateCase,
    canned,
)

W, B, RA, F, RS = Action.WAIT, Action.BACKOFF, Action.REAUTH, Action.FAIL, Action.RESTART
TOKEN = "EAAGm0PX4ZCpsBAsecret"


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


def fb(code, subcode=None, message="An error", transient=False):
    error = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "EJplcsCHuLu",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return {"error": error}


def row(id, code, subcode=None, status=400, action=RA, kind=None, tell_user=False, **fb_args):
    """A row of PROVIDERS.md's table: Facebook's error ``code``/``subcode`` as it sends it."""
    return ErrorCase(id, (status, fb(code, subcode, **fb_args), {}), action, kind, tell_user)


BUSINESS_USAGE = {
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


class TestFacebook(ProviderContract):
    PROVIDER = Facebook
    FIXTURES = "real/facebook"
    PROFILE = ProfileCase((200, {"data": [], "summary": {"total_count": 3}}, {}), 3)
    # no limit, remaining or reset: the usage percent (test_app_usage_header)
    RATE = RateCase(
        (200, {}, {"X-App-Usage": '{"call_count":28,"total_time":25,"total_cputime":25}'}),
        None,
        None,
        None,
    )
    PAGES = (
        PageCase(
            "an empty page with next goes on",
            (200, friends_page(data=[]), {}),
            "after:x",
            connections=[],
            followups=["after:QVFIUmFfdmVy"],
        ),
        PageCase(
            "no next is the end",
            (
                200,
                {
                    "data": [{"name": "A", "id": "1"}],
                    "paging": {"cursors": {"before": "a", "after": "b"}},
                },
                {},
            ),
            "after:",
            followups=[],
        ),
        PageCase(
            "a next on another host is not followed",
            (
                200,
                {
                    "data": [],
                    "paging": {"next": "https://evil.example/v19.0/4/friends?access_token=x"},
                },
                {},
            ),
            "after:",
            followups=[],
        ),
    )
    ERRORS = (
        ErrorCase(
            "recorded code 100 restarts pagination",
            "error_400_oauthexception_100_app_permissions.json",
            RS,
            "cursor_expired",
        ),
        # code 1 backs off whatever the status
        ErrorCase(
            "recorded code 1 as a 400",
            "error_400_oauthexception_1_invalid_client_secret.json",
            B,
            "unknown_error",
        ),
        ErrorCase(
            "recorded code 1 as a 500",
            "error_500_oauthexception_1_unknown_error.json",
            B,
            "unknown_error",
        ),
        ErrorCase(
            "business use case usage says when to come back",
            (
                403,
                {
                    "error": {
                        "message": "(#32) Page request limit reached",
                        "type": "OAuthException",
                        "code": 32,
                        "is_transient": True,
                        "fbtrace_id": "x",
                    }
                },
                {"x-business-use-case-usage": json.dumps(BUSINESS_USAGE)},
            ),
            W,
            "page_rate_limit",
            retry_at=NOW + 300,
        ),
        ErrorCase(
            "a policy block waits long",
            (
                400,
                {"error": {"message": "(#368) blocked", "type": "OAuthException", "code": 368}},
                {},
            ),
            W,
            "policy_block",
            retry_at=NOW + 3600,
        ),
        ErrorCase(
            "an unknown transient code backs off",
            (400, {"error": {"message": "?", "code": 9999, "is_transient": True}}, {}),
            B,
            "transient_error",
        ),
        ErrorCase(
            "an unknown code fails",
            (500, {"error": {"message": "?", "code": 9999}}, {}),
            F,
            "unknown_error_code",
        ),
        # PROVIDERS.md's table
        row(
            "1",
            1,
            status=500,
            action=B,
            kind="unknown_error",
            message="An unknown error has occurred.",
        ),
        row("2", 2, status=503, action=B, kind="service_unavailable", transient=True),
        ErrorCase(
            "4",
            (403, fb(4, transient=True), {"x-app-usage": '{"call_count":100}'}),
            W,
            "app_rate_limit",
        ),
        row("17", 17, status=403, action=W, kind="user_rate_limit", transient=True),
        row("32", 32, status=403, action=W, kind="page_rate_limit", transient=True),
        row("613", 613, status=403, action=W, kind="custom_rate_limit", transient=True),
        row("341", 341, action=W, kind="application_limit", transient=True),
        row("368", 368, action=W, kind="policy_block"),
        row("10", 10, status=403, kind="permission_denied"),
        row("200", 200, status=403, kind="permission_denied"),
        row("250", 250, status=403, kind="permission_denied"),
        row("299", 299, status=403, kind="permission_denied"),
        row("102", 102, kind="session_invalid"),
        row("190", 190, kind="invalid_token"),
        row("190/458", 190, 458, kind="app_not_installed"),
        row("190/459", 190, 459, kind="user_checkpointed", tell_user=True),
        row("190/460", 190, 460, kind="password_changed"),
        row("190/463", 190, 463, kind="token_expired"),
        row("190/464", 190, 464, kind="unconfirmed_user", tell_user=True),
        row("190/467", 190, 467, kind="invalid_access_token"),
        row("190/493", 190, 493, kind="inactive_user"),
        row("100", 100, action=RS, kind="cursor_expired", message="(#100) The cursor has expired"),
    )

    def recorded_account(self, request_url):
        return self.path_segments(request_url)[0]

    def recorded_cursor(self, provider, account_id, request_url):
        after = self.query(request_url).get("after")
        return f"after:{after}" if after else provider.first_cursor(account_id)

    def documented_ids(self, body):
        return [item["id"] for item in body["data"]]


@pytest.fixture
def facebook():
    return Facebook(Facebook.API_URL)


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


def test_short_page_with_next_recorded(facebook):
    # Recorded: paging.next on a page of 2 (of a 5000 limit), next without an after cursor.
    status, body, headers = canned("real/facebook", "user_subscribers_200_body_only.json")
    assert facebook.classify(status, body, headers, NOW) is None
    page = facebook.parse_page(body, headers, "after:")
    assert page.connections == [("1396637703", "Kunal Gandhre"), ("717005001", "Adnan S.")]
    (cursor,) = page.followups
    call = facebook.page_call("me", cursor)
    assert call.url == "https://graph.facebook.com/me/subscribers"
    assert call.params["offset"] == "5000" and call.params["__after_id"] == "708124104"


def test_recorded_next_url_loses_its_access_token(facebook):
    status, body, headers = canned("real/facebook", "page_posts_200_paging_and_likes_summary.json")
    (cursor,) = facebook.parse_page(body, headers, "after:").followups
    assert "access_token" not in cursor and "until=1413385867" in cursor
    assert "access_token" not in facebook.page_call("GetG5", cursor).params


def test_app_usage_header(facebook):
    headers = CaseInsensitiveDict(
        {"X-App-Usage": '{"call_count":28,"total_time":25,"total_cputime":25}'}
    )
    assert facebook.rate_info(headers).usage_percent == 28.0
    assert facebook.rate_info(CaseInsensitiveDict({"x-app-usage": "garbage"})).usage_percent is None


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


#: The talk: "Facebook has at least 10 unique error messages to indicate a bad or
#: expired access token". Messages as Facebook words them (several per subcode).
BAD_TOKEN_MESSAGES = [
    (190, None, "Invalid OAuth access token."),
    (190, None, "Invalid OAuth access token - Cannot parse access token"),
    (190, None, "The access token could not be decrypted"),
    (190, None, "Error validating application. Application has been deleted."),
    (190, 458, "Error validating access token: User 42 has not authorized application 1234."),
    (
        190,
        459,
        "Error validating access token: You cannot access the app till you log in to "
        "www.facebook.com and follow the instructions given.",
    ),
    (
        190,
        460,
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons.",
    ),
    (190, 460, "Error validating access token: Session does not match current stored session."),
    (
        190,
        463,
        "Error validating access token: Session has expired on Tuesday, 14-Nov-23 "
        "12:00:00 PST. The current time is Tuesday, 14-Nov-23 13:00:00 PST.",
    ),
    (
        190,
        464,
        "Error validating access token: Sessions for the user 42 are not allowed because "
        "the user is not a confirmed user.",
    ),
    (
        190,
        467,
        "Error validating access token: The session is invalid because the user logged out.",
    ),
    (
        190,
        467,
        "Error validating access token: This may be because the user logged out or may be "
        "due to a system error.",
    ),
    (
        190,
        493,
        "Error validating access token: The session was invalidated because the user has "
        "been inactive for 90 days.",
    ),
    (102, None, "Session key invalid or no longer valid"),
]


@pytest.mark.parametrize("status", [400, 401, 403, 500])
def test_facebook_bad_token_messages_are_all_reauth_by_code(status):
    assert len({message for _, _, message in BAD_TOKEN_MESSAGES}) >= 10
    facebook = Facebook("https://graph.facebook.com")
    for code, subcode, message in BAD_TOKEN_MESSAGES:
        error = facebook.classify(status, fb(code, subcode, message), CaseInsensitiveDict(), NOW)
        assert error.action is Action.REAUTH, (code, subcode, message)


def test_facebook_never_decides_by_message():
    facebook = Facebook("https://graph.facebook.com")
    for _, _, message in BAD_TOKEN_MESSAGES:
        error = facebook.classify(400, fb(1, message=message), CaseInsensitiveDict(), NOW)
        assert error.action is Action.BACKOFF  # code 1, whatever the words
