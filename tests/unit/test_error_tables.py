"""Every error row of PROVIDERS.md, as the provider sends it, classifies to the row's action.

One table per provider below, in PROVIDERS.md's order; each entry is the
answer (status, body, headers) and what must come of it. Facebook also gets
the talk's "at least 10 unique error messages" for a bad token: every one
must be REAUTH by its code, whatever its message or HTTP status.
"""

from __future__ import annotations

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.facebook import Facebook
from providers.github import GitHub
from providers.linkedin import LinkedIn
from providers.mastodon import Mastodon
from providers.twitter import Twitter

NOW = 1_700_000_000.0
RESET = str(int(NOW) + 120)
W, B, RF, RA, S, F, RS = (
    Action.WAIT,
    Action.BACKOFF,
    Action.REFRESH,
    Action.REAUTH,
    Action.SKIP,
    Action.FAIL,
    Action.RESTART,
)


def v1(code, message="x"):
    return {"errors": [{"code": code, "message": message}]}


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


def li(status, code=None, message="x"):
    body = {"message": message, "status": status}
    if code is not None:
        body["serviceErrorCode"] = code
    return body


TWITTER_LIMIT = {
    "x-rate-limit-limit": "15",
    "x-rate-limit-remaining": "0",
    "x-rate-limit-reset": RESET,
}
#: (id, status, body, headers, action, kind, tell_user)
ROWS = {
    Twitter: [
        ("429/88", 429, v1(88, "Rate limit exceeded"), TWITTER_LIMIT, W, "rate_limited", False),
        (
            "429 problem",
            429,
            {
                "title": "Too Many Requests",
                "type": "about:blank",
                "status": 429,
                "detail": "Too Many Requests",
            },
            TWITTER_LIMIT,
            W,
            "rate_limited",
            False,
        ),
        (
            "401/32",
            401,
            v1(32, "Could not authenticate you."),
            {},
            RA,
            "could_not_authenticate",
            False,
        ),
        (
            "401/89",
            401,
            v1(89, "Invalid or expired token."),
            {},
            RF,
            "invalid_or_expired_token",
            False,
        ),
        (
            "403/326",
            403,
            v1(326, "this account is temporarily locked"),
            {},
            RA,
            "account_locked",
            True,
        ),
        ("403/63", 403, v1(63, "User has been suspended."), {}, S, "user_suspended", False),
        (
            "400/215",
            400,
            v1(215, "Bad Authentication data."),
            {},
            F,
            "bad_authentication_data",
            False,
        ),
        ("503/130", 503, v1(130, "Over capacity"), {}, B, "over_capacity", False),
        ("500/131", 500, v1(131, "Internal error"), {}, B, "internal_error", False),
    ],
    Facebook: [
        ("1", 500, fb(1, message="An unknown error has occurred."), {}, B, "unknown_error", False),
        ("2", 503, fb(2, transient=True), {}, B, "service_unavailable", False),
        (
            "4",
            403,
            fb(4, transient=True),
            {"x-app-usage": '{"call_count":100}'},
            W,
            "app_rate_limit",
            False,
        ),
        ("17", 403, fb(17, transient=True), {}, W, "user_rate_limit", False),
        ("32", 403, fb(32, transient=True), {}, W, "page_rate_limit", False),
        ("613", 403, fb(613, transient=True), {}, W, "custom_rate_limit", False),
        ("341", 400, fb(341, transient=True), {}, W, "application_limit", False),
        ("368", 400, fb(368), {}, W, "policy_block", False),
        ("10", 403, fb(10), {}, RA, "permission_denied", False),
        ("200", 403, fb(200), {}, RA, "permission_denied", False),
        ("250", 403, fb(250), {}, RA, "permission_denied", False),
        ("299", 403, fb(299), {}, RA, "permission_denied", False),
        ("102", 400, fb(102), {}, RA, "session_invalid", False),
        ("190", 400, fb(190), {}, RA, "invalid_token", False),
        ("190/458", 400, fb(190, 458), {}, RA, "app_not_installed", False),
        ("190/459", 400, fb(190, 459), {}, RA, "user_checkpointed", True),
        ("190/460", 400, fb(190, 460), {}, RA, "password_changed", False),
        ("190/463", 400, fb(190, 463), {}, RA, "token_expired", False),
        ("190/464", 400, fb(190, 464), {}, RA, "unconfirmed_user", True),
        ("190/467", 400, fb(190, 467), {}, RA, "invalid_access_token", False),
        ("190/493", 400, fb(190, 493), {}, RA, "inactive_user", False),
        (
            "100",
            400,
            fb(100, message="(#100) The cursor has expired"),
            {},
            RS,
            "cursor_expired",
            False,
        ),
    ],
    LinkedIn: [
        (
            "401/65600",
            401,
            li(401, 65600, "Invalid access token"),
            {},
            RF,
            "invalid_access_token",
            False,
        ),
        (
            "401/65601",
            401,
            li(401, 65601, "The token used in the request has been revoked by the user"),
            {},
            RA,
            "revoked_access_token",
            False,
        ),
        (
            "401 expired",
            401,
            li(401, message="Expired access token"),
            {},
            RF,
            "expired_access_token",
            False,
        ),
        (
            "403",
            403,
            li(403, 100, "Not enough permissions to access: GET-viewer /connections"),
            {},
            RA,
            "access_denied",
            False,
        ),
        ("404", 404, li(404, message="Not Found"), {}, S, "not_found", False),
        (
            "429/101",
            429,
            li(429, 101, "Resource level throttle limit for calls to this resource is reached."),
            {},
            W,
            "throttled",
            False,
        ),
        ("500", 500, li(500, message="Internal Server Error"), {}, B, "server_error", False),
        ("504", 504, li(504, message="Gateway Timeout"), {}, B, "gateway_timeout", False),
    ],
    GitHub: [
        (
            "403 primary",
            403,
            {"message": "API rate limit exceeded for user ID 1."},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": RESET},
            W,
            "rate_limited",
            False,
        ),
        (
            "429 primary",
            429,
            {"message": "API rate limit exceeded for user ID 1."},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": RESET},
            W,
            "rate_limited",
            False,
        ),
        (
            "403 secondary retry-after",
            403,
            {"message": "You have exceeded a secondary rate limit."},
            {"retry-after": "60"},
            W,
            "secondary_rate_limit",
            False,
        ),
        (
            "403 secondary",
            403,
            {"message": "You have exceeded a secondary rate limit."},
            {},
            W,
            "secondary_rate_limit",
            False,
        ),
        (
            "401",
            401,
            {"message": "Bad credentials", "status": "401"},
            {},
            RA,
            "bad_credentials",
            False,
        ),
        ("404", 404, {"message": "Not Found", "status": "404"}, {}, S, "not_found", False),
        ("500", 500, {"message": "Server Error"}, {}, B, "server_error", False),
        ("502", 502, None, {}, B, "bad_gateway", False),
    ],
    Mastodon: [
        ("401", 401, {"error": "The access token is invalid"}, {}, RA, "invalid_token", False),
        ("403", 403, {"error": "This action is not allowed"}, {}, RA, "forbidden", True),
        ("404", 404, {"error": "Record not found"}, {}, S, "not_found", False),
        ("410", 410, {"error": "Gone"}, {}, S, "gone", False),
        (
            "429",
            429,
            {"error": "Too many requests"},
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2023-11-14T22:15:20.000Z"},
            W,
            "rate_limited",
            False,
        ),
        ("503", 503, {"error": "Service Unavailable"}, {}, B, "unavailable", False),
    ],
}

CASES = [
    pytest.param(cls, *row[1:], id=f"{cls.NAME}:{row[0]}")
    for cls, rows in ROWS.items()
    for row in rows
]


@pytest.mark.parametrize("cls,status,body,headers,action,kind,tell_user", CASES)
def test_every_row_has_its_action(cls, status, body, headers, action, kind, tell_user):
    error = cls("https://example.invalid").classify(status, body, CaseInsensitiveDict(headers), NOW)
    assert error is not None
    assert (error.action, error.rule.kind, error.rule.tell_user) == (action, kind, tell_user)
    if action is Action.WAIT and any(k.lower().endswith("reset") for k in headers):
        assert error.retry_at == NOW + 120  # the provider's own reset, not a guess


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


def test_every_table_rule_is_a_taxonomy_action():
    for cls in ROWS:
        for rule in cls.ERRORS.values():
            assert isinstance(rule.action, Action) and rule.kind
