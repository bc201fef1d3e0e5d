"""GitHub against its contract: real recorded responses and PROVIDERS.md's error table."""

from __future__ import annotations

from providers import pagination
from providers.errors import Action
from providers.github import GitHub, parse_link_header
from providers.provider import HttpCall
from tests.unit import recordings
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
RESET = str(int(NOW) + 120)
STARGAZERS = "/repos/PyGithub/PyGithub/stargazers"
_, SINGLE, _ = canned("real/github", "user_followers_200_single_page_no_link.json")
LIMIT_EXCEEDED = {"message": "API rate limit exceeded for user ID 1."}
SECONDARY = {"message": "You have exceeded a secondary rate limit."}


class TestGitHub(ProviderContract):
    PROVIDER = GitHub
    FIXTURES = "real/github"
    PROFILE = ProfileCase("user_profile_200.json", 98)
    RATE = RateCase("user_profile_200.json", 5000, 4996, 1735944560)  # any header casing
    PAGES = (
        PageCase(
            "single page, no Link",
            "user_followers_200_single_page_no_link.json",
            "/users/jacquev6/followers?per_page=100&page=1",
            count=len(SINGLE),
            first=(str(SINGLE[0]["id"]), SINGLE[0]["login"]),
            followups=[],
        ),
        PageCase(
            "page one with last fans out every page",
            "stargazers_page1_200_link_next_last.json",
            STARGAZERS,
            followups=[f"{STARGAZERS}?page=2", f"{STARGAZERS}?page=3"],
            next_cursor=None,
        ),
        # Page one already launched every page; a later page's rel="next" is not followed.
        PageCase(
            "a later page with last launches nothing",
            "stargazers_page1_200_link_next_last.json",
            f"{STARGAZERS}?page=2",
            followups=[],
        ),
        PageCase(
            "last page: Link has only first and prev",
            "stargazers_page3_200_last_page_link_first_prev.json",
            f"{STARGAZERS}?page=3",
            followups=[],
        ),
        PageCase(
            "next without last chains",
            (200, [], {"Link": '<https://api.github.com/user/9/followers?page=4>; rel="next"'}),
            "/users/x/followers?page=3",
            followups=["/user/9/followers?page=4"],
        ),
        # Following it would send the user's token to that host.
        PageCase(
            "a link to another host is not followed",
            (200, [], {"Link": '<https://evil.example/followers?page=2>; rel="next"'}),
            "/users/x/followers?page=1",
            followups=[],
        ),
    )
    ERRORS = (
        ErrorCase(
            "recorded 401 bad credentials", "error_401_bad_credentials.json", RA, "bad_credentials"
        ),
        # that old answer carried no reset header: WAIT from the floor
        ErrorCase(
            "recorded 403 primary, no reset",
            "error_403_rate_limit_exceeded.json",
            W,
            "rate_limited",
            retry_at=None,
        ),
        ErrorCase(
            "429 primary waits until the reset",
            (
                429,
                {"message": "API rate limit exceeded"},
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 900)},
            ),
            W,
            "rate_limited",
            retry_at=NOW + 900,
        ),
        ErrorCase(
            "recorded 403 secondary with Retry-After",
            "error_403_secondary_rate_limit_retry_after.json",
            W,
            "secondary_rate_limit",
            retry_at=NOW + 60,
        ),
        ErrorCase(
            "403 secondary without Retry-After",
            (
                403,
                {"message": "You have exceeded a secondary rate limit. Please wait a few minutes"},
                {},
            ),
            W,
            "secondary_rate_limit",
            retry_at=None,
        ),
        ErrorCase("recorded 404 unknown user", "error_404_unknown_user.json", S, "not_found"),
        # PROVIDERS.md's table
        ErrorCase(
            "403 primary",
            (403, LIMIT_EXCEEDED, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": RESET}),
            W,
            "rate_limited",
            retry_at=NOW + 120,
        ),
        ErrorCase(
            "429 primary",
            (429, LIMIT_EXCEEDED, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": RESET}),
            W,
            "rate_limited",
            retry_at=NOW + 120,
        ),
        ErrorCase(
            "403 secondary retry-after",
            (403, SECONDARY, {"retry-after": "60"}),
            W,
            "secondary_rate_limit",
        ),
        ErrorCase("403 secondary", (403, SECONDARY, {}), W, "secondary_rate_limit"),
        ErrorCase(
            "401", (401, {"message": "Bad credentials", "status": "401"}, {}), RA, "bad_credentials"
        ),
        ErrorCase("404", (404, {"message": "Not Found", "status": "404"}, {}), S, "not_found"),
        ErrorCase("500", (500, {"message": "Server Error"}, {}), B, "server_error"),
        ErrorCase("502", (502, None, {}), B, "bad_gateway"),
    )

    # the recordings' requests are netsync's own: the cursor is the URL on our origin
    def recorded_cursor(self, provider, account_id, request_url):
        return self.link_cursor(provider, request_url)

    def documented_ids(self, body):
        return [str(item["id"]) for item in body]


def test_link_header_parsing():
    value = '<https://a/x?page=2>; rel="next", <https://a/x?page=5>; rel="last"'
    assert parse_link_header(value) == {"next": "https://a/x?page=2", "last": "https://a/x?page=5"}
    assert parse_link_header("") == {}
    assert parse_link_header("garbage, <no-close; rel=next") == {}


def test_stargazer_pages_drive_one_complete_chain():
    """The three recorded stargazer pages, driven as one sync from page one: every page
    is asked for exactly once, nothing else is, and every id is kept once."""
    contract = TestGitHub()
    pages = {}  # the URL each recording answered → (headers, body, its ids)
    for base, name in (
        (recordings.REAL, "github/stargazers_page1_200_link_next_last.json"),
        (recordings.REAL_MORE, "github/stargazers_page2_200_link_next_last_first_prev.json"),
        (recordings.REAL, "github/stargazers_page3_200_last_page_link_first_prev.json"),
    ):
        _, _, expect, url, _, headers, body, _ = recordings.load(
            base, name, contract.documented_ids
        )
        pages[recordings.prepared(HttpCall("GET", url)).url] = (headers, body, expect["ids"])
    github = GitHub(GitHub.API_URL)
    queue, asked, kept = [github.relative(recordings.STAR)], [], []
    while queue:
        cursor = queue.pop(0)
        url = recordings.prepared(github.page_call("recorded", cursor)).url
        assert url in pages, f"asked for {url}, which is no page of this list"
        asked.append(url)
        headers, body, _ = pages[url]
        page = github.parse_page(body, headers, cursor)
        kept += [conn_id for conn_id, _ in page.connections]
        queue += pagination.followups(github, cursor, page, None)
    assert sorted(asked) == sorted(pages), asked
    assert kept == [i for url in asked for i in pages[url][2]]
    assert len(kept) == len(set(kept))
