"""LinkedIn against its contract (v1 recorded responses, v2 documented shapes), and its planning."""

from __future__ import annotations

import datetime

from requests.structures import CaseInsensitiveDict

from providers import pagination
from providers.errors import Action
from providers.linkedin import LinkedIn, next_utc_midnight
from providers.provider import Page
from tests.unit.provider_contract import (
    NOW,
    ErrorCase,
    PageCase,
    ProfileCase,
    ProviderContract,
    RateCase,
    canned,
)

W, B, RF, RA, S = Action.WAIT, Action.BACKOFF, Action.REFRESH, Action.REAUTH, Action.SKIP
#: the page size netsync asks for, and the lanes it opens when the size is unknown
N, LANES = LinkedIn.PAGE_SIZE, LinkedIn.LANES


def v2_page(start, count, total):
    elements = [{"to": f"urn:li:person:{i:010d}"} for i in range(start, min(total, start + count))]
    return {
        "elements": elements,
        "paging": {"count": count, "start": start, "total": total, "links": []},
    }


def li(status, code=None, message="x"):
    body = {"message": message, "status": status}
    if code is not None:
        body["serviceErrorCode"] = code
    return body


class TestLinkedIn(ProviderContract):
    PROVIDER = LinkedIn
    FIXTURES = "real/linkedin"
    #: the size comes from the paging projection (v2)
    PROFILE = ProfileCase(
        (200, {"paging": {"count": 10, "start": 0, "total": 120, "links": []}}, {}), 120
    )
    #: LinkedIn announces no rate limit at all
    RATE = RateCase("v1_connections_200.json", None, None, None)
    PAGES = (
        PageCase(
            "recorded v1 connections",
            "v1_connections_200.json",
            "offset:0",
            connections=[("BRZCVE0TI5", "Test Accounts2")],
            total=1,
        ),
        PageCase(
            "recorded v1 empty result has no values",
            "v1_connections_modified_since_200_total_0.json",
            "offset:0",
            connections=[],
            total=0,
            followups=[],
        ),
    )
    ERRORS = (
        ErrorCase("recorded v1 401", "v1_error_401_unauthorized.json", RF, "unauthorized"),
        ErrorCase(
            "throttled waits until the next UTC midnight",
            (
                429,
                li(
                    429, 101, "Resource level throttle limit for calls to this resource is reached."
                ),
                {},
            ),
            W,
            "throttled",
            retry_at=datetime.datetime(2023, 11, 15, tzinfo=datetime.UTC).timestamp(),
        ),
        ErrorCase(
            "expired message without a code refreshes",
            (401, {"message": "Expired access token", "status": 401}, {}),
            RF,
            "expired_access_token",
        ),
        # PROVIDERS.md's table
        ErrorCase(
            "401/65600",
            (401, li(401, 65600, "Invalid access token"), {}),
            RF,
            "invalid_access_token",
        ),
        ErrorCase(
            "401/65601",
            (401, li(401, 65601, "The token used in the request has been revoked by the user"), {}),
            RA,
            "revoked_access_token",
        ),
        ErrorCase(
            "401 expired",
            (401, li(401, message="Expired access token"), {}),
            RF,
            "expired_access_token",
        ),
        ErrorCase(
            "403",
            (403, li(403, 100, "Not enough permissions to access: GET-viewer /connections"), {}),
            RA,
            "access_denied",
        ),
        ErrorCase("404", (404, li(404, message="Not Found"), {}), S, "not_found"),
        ErrorCase(
            "429/101",
            (
                429,
                li(
                    429, 101, "Resource level throttle limit for calls to this resource is reached."
                ),
                {},
            ),
            W,
            "throttled",
        ),
        ErrorCase("500", (500, li(500, message="Internal Server Error"), {}), B, "server_error"),
        ErrorCase("504", (504, li(504, message="Gateway Timeout"), {}), B, "gateway_timeout"),
    )

    def recorded_cursor(self, provider, account_id, request_url):
        start = self.query(request_url).get("start")
        return (
            provider.offset_cursor(int(start))
            if start is not None
            else provider.first_cursor(account_id)
        )

    def documented_ids(self, body):
        return [item["id"] for item in body.get("values", [])]


def linkedin():
    return LinkedIn(LinkedIn.API_URL)


def test_size_from_the_paging_projection():
    call = linkedin().profile_call("me")
    assert call.url == "https://api.linkedin.com/v2/connections?q=viewer&projection=(paging)"


def test_v1_recorded_sizes():
    for name, size in (
        ("v1_connections_200.json", 1),
        ("v1_connections_modified_since_200_total_0.json", 0),
    ):
        _, body, _ = canned("real/linkedin", name)
        assert linkedin().parse_size(body) == size


def test_known_size_launches_every_page_at_once():
    cursors = linkedin().initial_cursors("me", 2 * N + 20)
    assert cursors == ["offset:0", f"offset:{N}", f"offset:{2 * N}"]
    call = linkedin().page_call("me", f"offset:{N}")
    assert call.url == f"https://api.linkedin.com/v2/connections?q=viewer&start={N}&count={N}"
    assert linkedin().request_headers() == {"X-Restli-Protocol-Version": "2.0.0"}


def test_unknown_size_opens_lanes():
    provider = linkedin()
    assert provider.initial_cursors("me", None) == [f"lane:{i * N}" for i in range(LANES)]
    full = provider.parse_page(v2_page(N, N, 20 * N), CaseInsensitiveDict(), f"lane:{N}")
    assert pagination.followups(provider, f"lane:{N}", full, None) == [f"lane:{N + LANES * N}"]
    short = provider.parse_page(
        v2_page(3 * N, N, 3 * N + 20), CaseInsensitiveDict(), f"lane:{3 * N}"
    )
    assert pagination.followups(provider, f"lane:{3 * N}", short, None) == []


def test_v2_page_ids_are_urns():
    provider = linkedin()
    page = provider.parse_page(v2_page(0, N, 2 * N + 20), CaseInsensitiveDict(), "offset:0")
    assert page.connections[0] == ("urn:li:person:0000000000", "") and page.total == 2 * N + 20
    # a planned page that is not the last launches nothing (round one did)
    assert pagination.followups(provider, "offset:0", page, 2 * N + 20) == []


def test_full_last_page_chains_one_step_further():
    provider = linkedin()
    page = provider.parse_page(v2_page(2 * N, N, 3 * N), CaseInsensitiveDict(), f"offset:{2 * N}")
    assert pagination.followups(provider, f"offset:{2 * N}", page, 3 * N) == [f"offset:{3 * N}"]


def test_off_by_one_one_person_pages_end_at_once():
    """The talk's bug: past the end, one person per page, forever. A short page is the end."""
    provider = linkedin()
    body = {
        "elements": [{"to": "urn:li:person:0000000001"}],
        "paging": {"count": N, "start": 3 * N, "total": 3 * N, "links": []},
    }
    page = provider.parse_page(body, CaseInsensitiveDict(), f"offset:{3 * N}")
    assert pagination.followups(provider, f"offset:{3 * N}", page, 3 * N) == []
    assert (
        provider.page_anomaly(page, f"offset:{3 * N}", 3 * N) == ""
    )  # past the plan: nothing lost


def test_short_page_inside_the_plan_is_flagged():
    provider = linkedin()
    body = {
        "elements": [{"to": "urn:li:person:0000000051"}],
        "paging": {"count": N, "start": N, "total": 3 * N, "links": []},
    }
    page = provider.parse_page(body, CaseInsensitiveDict(), f"offset:{N}")
    assert provider.page_anomaly(page, f"offset:{N}", 3 * N) == "short_page"


def test_next_utc_midnight_exactly_at_midnight():
    midnight = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC).timestamp()
    assert next_utc_midnight(midnight) == midnight + 86400
    assert (
        next_utc_midnight(NOW) == datetime.datetime(2023, 11, 15, tzinfo=datetime.UTC).timestamp()
    )


def test_token_url_real_and_beside_a_custom_base():
    assert (
        LinkedIn("https://api.linkedin.com").token_url()
        == "https://www.linkedin.com/oauth/v2/accessToken"
    )
    assert (
        LinkedIn("http://127.0.0.1:9/linkedin").token_url()
        == "http://127.0.0.1:9/linkedin/oauth/v2/accessToken"
    )


def test_page_dataclass_counts_items_not_connections():
    body = {"elements": [{"to": "urn:li:person:a"}, {"note": "no to"}], "paging": {"total": 2}}
    page = linkedin().parse_page(body, CaseInsensitiveDict(), "offset:0")
    assert isinstance(page, Page) and page.item_count == 2 and len(page.connections) == 1
