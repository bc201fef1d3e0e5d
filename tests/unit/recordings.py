"""Real recorded provider responses, driven through netsync's provider code.

Each provider's contract test (``tests/unit/provider_contract.py``) runs the
recordings of its own directory through ``check`` below; what is
provider-specific about a recording (which provider object reads it, which
account and cursor its request stands for, which ids its body holds by the
documentation) is that test class's hooks.

The recordings are in ``tests/fixtures/real-more/`` (each with an ``expect``
block saying what a client following the provider's documentation must make
of it; see that directory's README.md) and ``tests/fixtures/real/`` (no
``expect`` in the files: ``REAL_EXPECT`` below states it, from the file's
README entry and the documented rules). Each is handled the way netsync's
tasks handle an answer (``sync.tasks``):

- the headers reach the provider as the HTTP layer hands them over
  (``sync.http.send``: requests' case-insensitive ``response.headers``), the
  body as ``response.json()`` or None when it is not JSON;
- ``classify(status, body, headers, now)`` first: an error answer is never
  parsed; a good one must classify as None;
- a page: ``parse_page(body, headers, cursor)``, then the cursors it launches
  (``providers.pagination.followups``), each turned into the request netsync
  would send (``page_call`` → the URL requests prepares from it);
- a profile: ``parse_size(body)``; every answer: ``rate_info(headers)``.

Several recordings are of other endpoints than the ones netsync calls
(GitHub stargazers/subscribers/following, Mastodon tag timelines and
following, Twitter following and list followers, Facebook subscribers and
posts): they have the follower endpoints' shape and paging, so they go
through the same parser, with the cursor netsync would hold had it asked
for exactly the recorded request URL (the contract class's ``recorded_cursor``).

Nothing here is shaped to pass: where the provider code disagrees with a
recording's expectation, the test fails.
"""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from providers import pagination
from providers.facebook import SECRET_PARAMS

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
REAL = FIXTURES / "real"
REAL_MORE = FIXTURES / "real-more"

STAR = "https://api.github.com/repos/PyGithub/PyGithub/stargazers"


def _rate(limit, remaining, reset_at) -> dict:
    return {"limit": limit, "remaining": remaining, "reset_at": reset_at}


_FB_POSTS_FIELDS = "likes.limit(1).summary(true),shares,message,id,created_time,from"

#: real/ file → (kind, expect) in the vocabulary of real-more/README.md; "ids": None = the
#: ids the body holds by the documented rule (the contract class's ``documented_ids``).
REAL_EXPECT = {
    "facebook/error_400_oauthexception_100_app_permissions.json": (
        # Code 100 is a bad parameter: restart the pagination once, then FAIL (PROVIDERS.md).
        "error",
        {"actions": ["restart", "fail"], "retry_at": None},
    ),
    "facebook/error_500_oauthexception_1_unknown_error.json": (
        "error",
        {"actions": ["backoff"], "retry_at": None},
    ),  # code 1: BACKOFF
    "facebook/page_posts_200_paging_and_likes_summary.json": (
        # A posts page: paging.next is a time-based (until) URL with the access token in
        # it: followed as an opaque URL, without the token.
        "page",
        {
            "ids": None,
            "next_request": {
                "path": "/v1.0/15485466463/posts",
                "params": {"fields": _FB_POSTS_FIELDS, "limit": "20", "until": "1413385867"},
            },
        },
    ),
    "facebook/user_subscribers_200_body_only.json": (
        "page",
        {
            "ids": ["1396637703", "717005001"],
            "next_request": {
                "path": "/me/subscribers",
                "params": {
                    "format": "json",
                    "limit": "5000",
                    "offset": "5000",
                    "__after_id": "708124104",
                },
            },
        },
    ),
    "github/error_401_bad_credentials.json": ("error", {"actions": ["reauth"], "retry_at": None}),
    "github/error_403_rate_limit_exceeded.json": (
        # The primary limit (remaining 0), recorded without a reset header: WAIT, and
        # the provider did not say until when.
        "error",
        {"actions": ["wait"], "retry_at": None, "rate": _rate(60, 0, None)},
    ),
    "github/error_403_secondary_rate_limit_retry_after.json": (
        # Retry-After: 60 at Tue, 23 Oct 2018 06:16:56 GMT (1540275416).
        "error",
        {"actions": ["wait"], "retry_at": 1540275476, "rate": _rate(None, None, None)},
    ),
    "github/error_404_unknown_user.json": (
        "error",
        {"actions": ["skip"], "rate": _rate(5000, 4968, None)},
    ),
    "github/stargazers_page1_200_link_next_last.json": (
        # Page one with rel="last": fan out to every page, or chain on rel="next".
        "page",
        {
            "ids": None,
            "next_ok": [[f"{STAR}?page=2", f"{STAR}?page=3"], [f"{STAR}?page=2"]],
            "rate": _rate(5000, 4986, None),
        },
    ),
    "github/stargazers_page3_200_last_page_link_first_prev.json": (
        "page",
        {"ids": None, "next": [], "rate": _rate(5000, 4984, None)},
    ),
    "github/user_followers_200_single_page_no_link.json": (
        "page",
        {"ids": None, "next": [], "rate": _rate(5000, 4958, None)},
    ),
    "github/user_profile_200.json": (
        "profile",
        {"size": 98, "rate": _rate(5000, 4996, 1735944560)},
    ),
    "linkedin/v1_connections_200.json": ("page", {"ids": ["BRZCVE0TI5"], "next": []}),
    "linkedin/v1_connections_modified_since_200_total_0.json": (
        "page",
        {"ids": [], "next": []},
    ),  # {"_total": 0} without values
    "mastodon/account_200.json": (
        "profile",
        {"size": 0, "rate": _rate(300, 299, 1785592200.104512)},
    ),
    "mastodon/account_followers_200_empty_no_link.json": (
        "page",
        {"ids": [], "next": [], "rate": _rate(300, 299, 1785592200.688634)},
    ),
    "mastodon/account_followers_200_link_prev_only.json": (
        "page",
        {"ids": ["1234567890123456"], "next": []},
    ),
    "mastodon/error_401_invalid_token.json": (
        "error",
        {"actions": ["reauth"], "rate": _rate(300, 299, 1785592800.618774)},
    ),
    "mastodon/error_404_account_lookup.json": (
        "error",
        {"actions": ["skip"], "rate": _rate(300, 299, 1785592200.872845)},
    ),
    "twitter/v1_1_error_400_bad_authentication_data.json": (
        "error",
        {"actions": ["fail"], "retry_at": None},
    ),  # 400 code 215: FAIL
    "twitter/v1_1_followers_list_200.json": (
        "page",
        {"ids": None, "next_token": None, "rate": _rate(15, 14, 1613174304)},
    ),
    "twitter/v1_1_friends_ids_200_cursor_64bit_ids.json": (
        "page",
        {
            "ids": [
                "857699969263964161",
                "786491",
                "15772978",
                "145336962",
                "750362064426721281",
                "6253282",
                "2244994945",
            ],
            "next_token": None,
            "rate": _rate(15, 13, 1613173443),
        },
    ),
    "twitter/v1_1_users_show_200.json": (
        "profile",
        {"size": 59112688, "rate": _rate(900, 889, 1612932333)},
    ),
    "twitter/v2_users_followers_200_next_token.json": (
        "page",
        {"ids": None, "next_token": "5CS0O0C6II61EZZZ", "rate": _rate(15, 14, 1618286773)},
    ),
    "twitter/v2_users_following_200_last_page_no_next_token.json": (
        "page",
        {"ids": None, "next_token": None, "rate": _rate(15, 14, 1618286773)},
    ),
}
#: real/ files with no documented outcome to check against, and why
REAL_NOT_CHECKED = {
    # A client_credentials call to the token endpoint (a call netsync never makes):
    # code 1 reads "unknown, BACKOFF" in the table, but the text says a wrong app secret;
    # no source says what a client must do.
    "facebook/error_400_oauthexception_1_invalid_client_secret.json",
    # A v1 401 "No consumer found for key" without serviceErrorCode: PROVIDERS.md's
    # table names 401 only with 65600/65601/"expired"; no documented action.
    "linkedin/v1_error_401_unauthorized.json",
}


# -- the recordings ------------------------------------------------------------------
def recordings(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.glob("*/*.json"))


def readme_files(base: Path) -> set[str]:
    """The files a README's provenance table lists."""
    return set(
        re.findall(r"^\| `([a-z]+/[^`]+\.json)` \|", (base / "README.md").read_text(), re.MULTILINE)
    )


def load(base: Path, name: str, documented_ids=None):
    """(provider, kind, expect, request url, status, headers, body, now) as netsync sees them.

    ``documented_ids(body)`` fills an expectation's ``"ids": None`` (real/ files)."""
    data = json.loads((base / name).read_text())
    provider = name.split("/")[0]
    if base == REAL:
        kind, expect = REAL_EXPECT[name]
        recorded_at = None
    else:
        kind, expect, recorded_at = data["kind"], data["expect"], data["recorded_at"]
    request, response = data["request"], data["response"]
    url = request["url"]
    if request.get("query"):  # real/ keeps the query apart
        url += ("&" if "?" in url else "?") + urlencode(request["query"])
    # sync.http.send: requests' response.headers, a case-insensitive dict in which a
    # repeated header is one value joined by ", " (urllib3).
    headers = CaseInsensitiveDict(
        {
            k: ", ".join(v) if isinstance(v, list) else v
            for k, v in (response.get("headers") or {}).items()
        }
    )
    # sync.http.send: response.json(), None when the body is not JSON.
    if "body" in response:
        body = response["body"]
    else:
        try:
            body = json.loads(response.get("body_text") or "")
        except ValueError:
            body = None
    if expect.get("ids", []) is None:
        expect = {**expect, "ids": documented_ids(body)}
    # Body-only captures kept no status: 200 assumed (README).
    status = response.get("status") or 200
    if recorded_at is None and headers.get("date"):
        recorded_at = parsedate_to_datetime(headers["date"]).timestamp()
    return provider, kind, expect, url, status, headers, body, recorded_at


def prepared(call) -> requests.PreparedRequest:
    """The request sync.http.send makes of an HttpCall (requests encodes the params)."""
    return requests.Request(call.method, call.url, params=call.params).prepare()


def next_requests(provider, account_id: str, cursor: str, page) -> list[requests.PreparedRequest]:
    """What netsync's PageTask sends after this page (before the Redis-backed guards)."""
    launches = pagination.followups(provider, cursor, page, None)
    return [prepared(provider.page_call(account_id, c)) for c in launches]


def _same(actual, expected) -> bool:
    if expected is None or actual is None:
        return actual is expected
    return actual == pytest.approx(expected, abs=1e-6)


# -- the checks ----------------------------------------------------------------------
def check(contract, base: Path, name: str) -> list[str]:
    """Every way the provider code disagrees with the recording's expectation, read
    with the hooks of ``contract`` (the provider's ``ProviderContract`` subclass)."""
    _, kind, expect, url, status, headers, body, now = load(base, name, contract.documented_ids)
    provider = contract.recording_provider(url)
    problems = check_rate(provider, headers, expect)
    error = provider.classify(status, body, headers, now if now is not None else 0.0)
    if kind == "error":
        return problems + check_error(error, status, expect, now)
    if error is not None:
        return problems + [f"a good answer classified as {error.action.value} ({error.rule.kind})"]
    if kind == "profile":
        size = provider.parse_size(body)
        return problems + (
            []
            if size == expect["size"]
            else [f"parse_size() = {size!r}, expected {expect['size']!r}"]
        )
    account_id = contract.recorded_account(url)
    cursor = contract.recorded_cursor(provider, account_id, url)
    page = provider.parse_page(body, headers, cursor)
    ids = [conn_id for conn_id, _ in page.connections]
    if ids != expect["ids"]:
        problems.append(f"ids = {ids!r}, expected {expect['ids']!r}")
    if not all(isinstance(i, str) for i in ids):
        problems.append("ids are not all strings")
    return problems + check_next(next_requests(provider, account_id, cursor, page), expect)


def check_rate(provider, headers, expect) -> list[str]:
    info = provider.rate_info(headers)
    return [
        f"rate_info().{field} = {getattr(info, field)!r}, expected {want!r}"
        for field, want in expect.get("rate", {}).items()
        if not _same(getattr(info, field), want)
    ]


def check_error(error, status: int, expect, now) -> list[str]:
    if error is None:
        return [f"classify() = None for HTTP {status}, expected one of {expect['actions']}"]
    problems = []
    if error.action.value not in expect["actions"]:
        problems.append(
            f"classify().action = {error.action.value!r} (kind {error.rule.kind!r}), "
            f"expected one of {expect['actions']}"
        )
    if "retry_at" in expect:
        assert expect["retry_at"] is None or now is not None, "a retry time needs the answer's time"
        if not _same(error.retry_at, expect["retry_at"]):
            problems.append(
                f"classify().retry_at = {error.retry_at!r}, "
                f"expected {expect['retry_at']!r} (now = {now})"
            )
    return problems


def check_next(nxt: list[requests.PreparedRequest], expect) -> list[str]:
    """The requests a page leads to, against next / next_ok / next_token / next_request."""
    problems = [f"next request by {r.method}" for r in nxt if r.method != "GET"]
    urls = sorted(r.url for r in nxt)
    if "next" in expect and urls != sorted(expect["next"]):
        problems.append(f"next requests {urls}, expected {sorted(expect['next'])}")
    if "next_ok" in expect and urls not in [sorted(option) for option in expect["next_ok"]]:
        problems.append(f"next requests {urls}, expected one of {expect['next_ok']}")
    if "next_token" in expect:
        tokens = [dict(parse_qsl(urlsplit(u).query)).get("pagination_token") for u in urls]
        want = [] if expect["next_token"] is None else [expect["next_token"]]
        if tokens != want:
            problems.append(
                f"next requests {urls} carry pagination_token {tokens}, expected {want}"
            )
    if "next_request" not in expect:
        return problems
    want = expect["next_request"]
    if want is None or len(urls) != 1:
        return problems + (
            []
            if want is None and not urls
            else [f"next requests {urls}, expected {'none' if want is None else want}"]
        )
    parts = urlsplit(urls[0])
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.path != want["path"]:
        problems.append(f"next request path {parts.path!r}, expected {want['path']!r}")
    missing = {k: v for k, v in want["params"].items() if params.get(k) != v}
    if missing:
        problems.append(f"next request {urls[0]} lacks {missing}")
    leaked = SECRET_PARAMS & set(params)
    if leaked:  # the credential goes in the Authorization header, never in the URL
        problems.append(f"next request {urls[0]} carries {sorted(leaked)}")
    return problems
