"""LinkedIn parsing, planning and classification (v1 recorded responses, v2 documented shapes)."""

from __future__ import annotations

import datetime

import pytest
from requests.structures import CaseInsensitiveDict

from providers import pagination
from providers.errors import Action
from providers.linkedin import LinkedIn, next_utc_midnight
from providers.provider import Page
from tests.conftest import recorded

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def linkedin():
    return LinkedIn("https://api.linkedin.com")


def v2_page(start, count, total):
    elements = [{"to": f"urn:li:person:{i:010d}"} for i in range(start, min(total, start + count))]
    return {
        "elements": elements,
        "paging": {"count": count, "start": start, "total": total, "links": []},
    }


def test_size_from_paging_projection(linkedin):
    call = linkedin.profile_call("me")
    assert call.url == "https://api.linkedin.com/v2/connections?q=viewer&projection=(paging)"
    assert (
        linkedin.parse_size({"paging": {"count": 10, "start": 0, "total": 120, "links": []}}) == 120
    )


def test_known_size_launches_every_page_at_once(linkedin):
    cursors = linkedin.initial_cursors("me", 120)
    assert cursors == ["offset:0", "offset:50", "offset:100"]
    call = linkedin.page_call("me", "offset:50")
    assert call.url == "https://api.linkedin.com/v2/connections?q=viewer&start=50&count=50"
    assert linkedin.request_headers() == {"X-Restli-Protocol-Version": "2.0.0"}


def test_unknown_size_opens_lanes(linkedin):
    assert linkedin.initial_cursors("me", None) == ["lane:0", "lane:50", "lane:100", "lane:150"]
    full = linkedin.parse_page(v2_page(50, 50, 1000), CaseInsensitiveDict(), "lane:50")
    assert pagination.followups(linkedin, "lane:50", full, None) == ["lane:250"]
    short = linkedin.parse_page(v2_page(150, 50, 170), CaseInsensitiveDict(), "lane:150")
    assert pagination.followups(linkedin, "lane:150", short, None) == []


def test_v2_page_ids_are_urns(linkedin):
    page = linkedin.parse_page(v2_page(0, 50, 120), CaseInsensitiveDict(), "offset:0")
    assert page.connections[0] == ("urn:li:person:0000000000", "") and page.total == 120
    # a planned page that is not the last launches nothing (round one did)
    assert pagination.followups(linkedin, "offset:0", page, 120) == []


def test_full_last_page_chains_one_step_further(linkedin):
    page = linkedin.parse_page(v2_page(100, 50, 150), CaseInsensitiveDict(), "offset:100")
    assert pagination.followups(linkedin, "offset:100", page, 150) == ["offset:150"]


def test_off_by_one_one_person_pages_end_at_once(linkedin):
    """The talk's bug: past the end, one person per page, forever. A short page is the end."""
    body = {
        "elements": [{"to": "urn:li:person:0000000001"}],
        "paging": {"count": 50, "start": 150, "total": 150, "links": []},
    }
    page = linkedin.parse_page(body, CaseInsensitiveDict(), "offset:150")
    assert pagination.followups(linkedin, "offset:150", page, 150) == []
    assert linkedin.page_anomaly(page, "offset:150", 150) == ""  # past the plan: nothing lost


def test_short_page_inside_the_plan_is_flagged(linkedin):
    body = {
        "elements": [{"to": "urn:li:person:0000000051"}],
        "paging": {"count": 50, "start": 50, "total": 150, "links": []},
    }
    page = linkedin.parse_page(body, CaseInsensitiveDict(), "offset:50")
    assert linkedin.page_anomaly(page, "offset:50", 150) == "short_page"


def test_v1_recorded_connections(linkedin):
    status, body, headers = recorded("linkedin", "v1_connections_200.json")
    assert linkedin.classify(status, body, headers, NOW) is None
    page = linkedin.parse_page(body, headers, "offset:0")
    assert page.connections == [("BRZCVE0TI5", "Test Accounts2")] and page.total == 1
    assert linkedin.parse_size(body) == 1


def test_v1_recorded_empty_result_has_no_values(linkedin):
    status, body, headers = recorded("linkedin", "v1_connections_modified_since_200_total_0.json")
    page = linkedin.parse_page(body, headers, "offset:0")
    assert page.connections == [] and page.total == 0 and page.followups == []
    assert linkedin.parse_size(body) == 0


def test_v1_recorded_401_refreshes_then_reauths(linkedin):
    status, body, headers = recorded("linkedin", "v1_error_401_unauthorized.json")
    error = linkedin.classify(status, body, headers, NOW)
    assert error.action is Action.REFRESH and error.rule.kind == "unauthorized"


def test_throttle_waits_until_next_utc_midnight(linkedin):
    body = {
        "serviceErrorCode": 101,
        "message": "Resource level throttle limit for calls to this resource is reached.",
        "status": 429,
    }
    error = linkedin.classify(429, body, CaseInsensitiveDict(), NOW)
    assert error.action is Action.WAIT and error.rule.kind == "throttled"
    assert error.retry_at == datetime.datetime(2023, 11, 15, tzinfo=datetime.UTC).timestamp()


def test_next_utc_midnight_exactly_at_midnight():
    midnight = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC).timestamp()
    assert next_utc_midnight(midnight) == midnight + 86400


def test_expired_message_without_code_is_refresh(linkedin):
    error = linkedin.classify(
        401, {"message": "Expired access token", "status": 401}, CaseInsensitiveDict(), NOW
    )
    assert error.action is Action.REFRESH and error.rule.kind == "expired_access_token"


def test_token_url_real_and_beside_a_custom_base():
    assert (
        LinkedIn("https://api.linkedin.com").token_url()
        == "https://www.linkedin.com/oauth/v2/accessToken"
    )
    assert (
        LinkedIn("http://127.0.0.1:9/linkedin").token_url()
        == "http://127.0.0.1:9/linkedin/oauth/v2/accessToken"
    )


def test_page_dataclass_counts_items_not_connections(linkedin):
    body = {"elements": [{"to": "urn:li:person:a"}, {"note": "no to"}], "paging": {"total": 2}}
    page = linkedin.parse_page(body, CaseInsensitiveDict(), "offset:0")
    assert isinstance(page, Page) and page.item_count == 2 and len(page.connections) == 1
