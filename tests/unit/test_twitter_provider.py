"""Twitter against its contract: real recorded responses and PROVIDERS.md's error table."""

from __future__ import annotations

from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.twitter import Twitter
from tests.unit.provider_contract import (
    NOW,
    ErrorCase,
    PageCase,
    ProfileCase,
    ProviderContract,
    RateCase,
    canned,
)

W, B, RF, RA, S, F = (
    Action.WAIT,
    Action.BACKOFF,
    Action.REFRESH,
    Action.REAUTH,
    Action.SKIP,
    Action.FAIL,
)
RESET = str(int(NOW) + 120)
TWITTER_LIMIT = {
    "x-rate-limit-limit": "15",
    "x-rate-limit-remaining": "0",
    "x-rate-limit-reset": RESET,
}
#: a 429 waits until the stated reset, in both shapes
LIMIT_600 = {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(int(NOW) + 600)}
TOO_MANY = {
    "title": "Too Many Requests",
    "type": "about:blank",
    "status": 429,
    "detail": "Too Many Requests",
}
_, V1_LIST, _ = canned("real/twitter", "v1_1_followers_list_200.json")


def v1(code, message="x"):
    return {"errors": [{"code": code, "message": message}]}


def problem_only(problem):
    """A 200 whose only content is a problem about the asked-for resource."""
    return {
        "errors": [
            {
                "value": "9",
                "detail": "Could not find user with id: [9].",
                "title": "Not Found Error",
                "resource_type": "user",
                "parameter": "id",
                "type": f"https://api.twitter.com/2/problems/{problem}",
            }
        ]
    }


class TestTwitter(ProviderContract):
    PROVIDER = Twitter
    FIXTURES = "real/twitter"
    PROFILE = ProfileCase("v1_1_users_show_200.json", 59112688)  # a v1.1 user object
    RATE = RateCase("v2_users_followers_200_next_token.json", 15, 14, 1618286773.0)
    PAGES = (
        PageCase(
            "page with next_token",
            "v2_users_followers_200_next_token.json",
            Twitter(Twitter.API_URL).first_cursor("783214"),
            count=100,
            first=("1376998163739987969", "Zamari97491661"),
            followups=["token:5CS0O0C6II61EZZZ"],
        ),
        PageCase(
            "last page has no next_token",
            "v2_users_following_200_last_page_no_next_token.json",
            "token:abc",
            count=35,
            followups=[],
        ),
        PageCase(
            "empty network has no data key",
            (200, {"meta": {"result_count": 0}}, {}),
            "token:",
            connections=[],
            followups=[],
        ),
        PageCase(
            "v1.1 followers/list uses id_str",
            "v1_1_followers_list_200.json",
            "token:",
            count=len(V1_LIST["users"]),
            first=("15772978", "jessicagarson"),
        ),
    )
    ERRORS = (
        ErrorCase(
            "429 v1.1 shape waits until reset",
            (429, v1(88, "Rate limit exceeded"), LIMIT_600),
            W,
            "rate_limited",
            retry_at=NOW + 600,
        ),
        ErrorCase(
            "429 v2 problem waits until reset",
            (429, TOO_MANY, LIMIT_600),
            W,
            "rate_limited",
            retry_at=NOW + 600,
        ),
        ErrorCase(
            "recorded 400/215 bad authentication data fails",
            "v1_1_error_400_bad_authentication_data.json",
            F,
            "bad_authentication_data",
            message="Bad Authentication data.",
        ),
        ErrorCase(
            "v2 401 problem refreshes",
            (
                401,
                {
                    "title": "Unauthorized",
                    "type": "about:blank",
                    "status": 401,
                    "detail": "Unauthorized",
                },
                {},
            ),
            RF,
            "unauthorized",
        ),
        ErrorCase(
            "problem-only 200: resource-not-found",
            (200, problem_only("resource-not-found"), {}),
            S,
            "not_found",
        ),
        ErrorCase(
            "problem-only 200: not-authorized-for-resource",
            (200, problem_only("not-authorized-for-resource"), {}),
            S,
            "not_authorized",
        ),
        ErrorCase(
            "unknown invalid-request problem fails",
            (
                400,
                {
                    "errors": [{"parameters": {"max_results": ["5000"]}, "message": "bad"}],
                    "title": "Invalid Request",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                },
                {},
            ),
            F,
            "client_error",
        ),
        # PROVIDERS.md's table
        ErrorCase(
            "429/88",
            (429, v1(88, "Rate limit exceeded"), TWITTER_LIMIT),
            W,
            "rate_limited",
            retry_at=NOW + 120,
        ),
        ErrorCase(
            "429 problem", (429, TOO_MANY, TWITTER_LIMIT), W, "rate_limited", retry_at=NOW + 120
        ),
        ErrorCase(
            "401/32", (401, v1(32, "Could not authenticate you."), {}), RA, "could_not_authenticate"
        ),
        ErrorCase(
            "401/89", (401, v1(89, "Invalid or expired token."), {}), RF, "invalid_or_expired_token"
        ),
        ErrorCase(
            "403/326",
            (403, v1(326, "this account is temporarily locked"), {}),
            RA,
            "account_locked",
            True,
        ),
        ErrorCase("403/63", (403, v1(63, "User has been suspended."), {}), S, "user_suspended"),
        ErrorCase(
            "400/215", (400, v1(215, "Bad Authentication data."), {}), F, "bad_authentication_data"
        ),
        ErrorCase("503/130", (503, v1(130, "Over capacity"), {}), B, "over_capacity"),
        ErrorCase("500/131", (500, v1(131, "Internal error"), {}), B, "internal_error"),
    )

    def recorded_account(self, request_url):
        segments = self.path_segments(request_url)
        if len(segments) > 2 and segments[1] in ("users", "lists"):
            return segments[2]
        return "recorded"

    def recorded_cursor(self, provider, account_id, request_url):
        token = self.query(request_url).get("pagination_token")
        return f"token:{token}" if token else provider.first_cursor(account_id)

    def documented_ids(self, body):
        if "users" in body:  # v1.1 user objects: id_str, the id may exceed 2**53
            return [user["id_str"] for user in body["users"]]
        if "ids" in body:  # v1.1 bare ids
            return [str(i) for i in body["ids"]]
        return [user["id"] for user in body["data"]]  # v2


def test_profile_asks_for_public_metrics():
    twitter = Twitter(Twitter.API_URL)
    call = twitter.profile_call("783214")
    assert call.url == "https://api.twitter.com/2/users/783214"
    assert call.params == {"user.fields": "public_metrics"}
    body = {"data": {"id": "783214", "username": "X", "public_metrics": {"followers_count": 42}}}
    assert twitter.parse_size(body) == 42


def test_page_calls_ask_for_a_full_page_and_carry_the_next_token():
    twitter = Twitter(Twitter.API_URL)
    status, body, headers = canned("real/twitter", "v2_users_followers_200_next_token.json")
    page = twitter.parse_page(body, headers, twitter.first_cursor("783214"))
    assert len(page.connections) == body["meta"]["result_count"]
    call = twitter.page_call("783214", page.next_cursor)
    assert call.params == {"max_results": Twitter.PAGE_SIZE, "pagination_token": "5CS0O0C6II61EZZZ"}


def test_first_page_has_no_pagination_token():
    twitter = Twitter(Twitter.API_URL)
    call = twitter.page_call("783214", twitter.first_cursor("783214"))
    assert call.url.endswith("/2/users/783214/followers")
    assert call.params == {"max_results": Twitter.PAGE_SIZE}


def test_v1_64_bit_ids_stay_exact():
    twitter = Twitter(Twitter.API_URL)
    status, body, headers = canned("real/twitter", "v1_1_friends_ids_200_cursor_64bit_ids.json")
    page = twitter.parse_page(body, headers, "token:")
    ids = [conn_id for conn_id, _ in page.connections]
    assert ids[0] == "857699969263964161" and "750362064426721281" in ids  # beyond 2**53
    assert page.followups == []  # next_cursor 0: the end


def test_per_item_problems_beside_data_keep_the_page():
    twitter = Twitter(Twitter.API_URL)
    body = {
        "data": [{"id": "1", "username": "a"}],
        "errors": [
            {
                "value": "2",
                "detail": "Sorry, you are not authorized to see the user",
                "title": "Authorization Error",
                "resource_type": "user",
                "type": "https://api.twitter.com/2/problems/not-authorized-for-resource",
            }
        ],
        "meta": {"result_count": 1},
    }
    assert twitter.classify(200, body, CaseInsensitiveDict(), NOW) is None
    page = twitter.parse_page(body, CaseInsensitiveDict(), "token:")
    assert page.connections == [("1", "a")]
    assert page.problems == ("not-authorized-for-resource",)


def test_a_page_can_ask_for_fewer_followers_and_is_billed_per_user_returned():
    x = Twitter("https://api.twitter.com")
    call = x.page_call("2244994945", "token:abc")
    assert x.sized(call, 499).params == {"max_results": 499, "pagination_token": "abc"}
    assert x.sized(call, 5000).params["max_results"] == 1000
    assert x.sized(x.profile_call("2244994945"), 1) is None  # a lookup has no page size
    page = {"data": [{"id": "1"}, {"id": "2"}], "meta": {"result_count": 2}}
    assert x.billed_resources(page, "page") == 2
    assert x.billed_resources({"data": {"id": "1"}}, "profile") == 1
    assert x.billed_resources({"errors": [{"title": "Not Found Error"}]}, "profile") == 0
    assert x.billed_resources(None, "page") == 0  # a 304, an empty answer
