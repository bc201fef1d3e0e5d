"""Twitter parsing and classification against real recorded responses."""

from __future__ import annotations

import pytest
from requests.structures import CaseInsensitiveDict

from providers.errors import Action
from providers.twitter import Twitter
from tests.conftest import recorded

NOW = 1_700_000_000.0


@pytest.fixture
def twitter():
    return Twitter("https://api.twitter.com")


def test_profile_asks_for_public_metrics(twitter):
    call = twitter.profile_call("783214")
    assert call.url == "https://api.twitter.com/2/users/783214"
    assert call.params == {"user.fields": "public_metrics"}
    body = {"data": {"id": "783214", "username": "X", "public_metrics": {"followers_count": 42}}}
    assert twitter.parse_size(body) == 42


def test_v1_user_object_size(twitter):
    status, body, headers = recorded("twitter", "v1_1_users_show_200.json")
    assert twitter.classify(status, body, headers, NOW) is None
    assert twitter.parse_size(body) == 59112688


def test_page_with_next_token(twitter):
    status, body, headers = recorded("twitter", "v2_users_followers_200_next_token.json")
    assert twitter.classify(status, body, headers, NOW) is None
    page = twitter.parse_page(body, headers, twitter.first_cursor("783214"))
    assert len(page.connections) == body["meta"]["result_count"] == 100
    assert page.connections[0] == ("1376998163739987969", "Zamari97491661")
    assert page.followups == ["token:5CS0O0C6II61EZZZ"]
    call = twitter.page_call("783214", page.next_cursor)
    assert call.params == {"max_results": 1000, "pagination_token": "5CS0O0C6II61EZZZ"}


def test_first_page_has_no_pagination_token(twitter):
    call = twitter.page_call("783214", twitter.first_cursor("783214"))
    assert call.url.endswith("/2/users/783214/followers") and call.params == {"max_results": 1000}


def test_last_page_has_no_next_token(twitter):
    status, body, headers = recorded(
        "twitter", "v2_users_following_200_last_page_no_next_token.json"
    )
    page = twitter.parse_page(body, headers, "token:abc")
    assert page.followups == [] and len(page.connections) == 35


def test_empty_network_has_no_data_key(twitter):
    page = twitter.parse_page({"meta": {"result_count": 0}}, CaseInsensitiveDict(), "token:")
    assert page.connections == [] and page.followups == []
    assert twitter.classify(200, {"meta": {"result_count": 0}}, CaseInsensitiveDict(), NOW) is None


def test_v1_followers_list_uses_id_str(twitter):
    status, body, headers = recorded("twitter", "v1_1_followers_list_200.json")
    page = twitter.parse_page(body, headers, "token:")
    assert page.connections[0] == ("15772978", "jessicagarson")
    assert len(page.connections) == len(body["users"])


def test_v1_64_bit_ids_stay_exact(twitter):
    status, body, headers = recorded("twitter", "v1_1_friends_ids_200_cursor_64bit_ids.json")
    page = twitter.parse_page(body, headers, "token:")
    ids = [conn_id for conn_id, _ in page.connections]
    assert ids[0] == "857699969263964161" and "750362064426721281" in ids  # beyond 2**53
    assert page.followups == []  # next_cursor 0: the end


def test_rate_headers(twitter):
    status, body, headers = recorded("twitter", "v2_users_followers_200_next_token.json")
    info = twitter.rate_info(headers)
    assert (info.limit, info.remaining, info.reset_at) == (15, 14, 1618286773.0)


@pytest.mark.parametrize(
    "body",
    [
        {"errors": [{"code": 88, "message": "Rate limit exceeded"}]},  # v1.1 shape
        {
            "title": "Too Many Requests",
            "type": "about:blank",
            "status": 429,
            "detail": "Too Many Requests",
        },  # v2 problem
    ],
)
def test_429_in_both_shapes_waits_until_reset(twitter, body):
    headers = CaseInsensitiveDict(
        {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(int(NOW) + 600)}
    )
    error = twitter.classify(429, body, headers, NOW)
    assert error.action is Action.WAIT and error.rule.kind == "rate_limited"
    assert error.retry_at == NOW + 600


def test_bad_authentication_data_fails(twitter):
    status, body, headers = recorded("twitter", "v1_1_error_400_bad_authentication_data.json")
    error = twitter.classify(status, body, headers, NOW)
    assert error.action is Action.FAIL and error.rule.kind == "bad_authentication_data"
    assert error.message == "Bad Authentication data."


def test_v2_unauthorized_problem_refreshes(twitter):
    body = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
    error = twitter.classify(401, body, CaseInsensitiveDict(), NOW)
    assert error.action is Action.REFRESH


def test_per_item_problems_beside_data_keep_the_page(twitter):
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


@pytest.mark.parametrize(
    "problem,kind",
    [("resource-not-found", "not_found"), ("not-authorized-for-resource", "not_authorized")],
)
def test_problem_only_200_is_skip(twitter, problem, kind):
    body = {
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
    error = twitter.classify(200, body, CaseInsensitiveDict(), NOW)
    assert error.action is Action.SKIP and error.rule.kind == kind


def test_unknown_invalid_request_problem_fails(twitter):
    body = {
        "errors": [{"parameters": {"max_results": ["5000"]}, "message": "bad"}],
        "title": "Invalid Request",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }
    assert twitter.classify(400, body, CaseInsensitiveDict(), NOW).action is Action.FAIL
