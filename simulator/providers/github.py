"""GitHub REST v3: profiles and follower/following pages with ``Link`` pagination.

Docs: https://docs.github.com/rest/users/followers and
https://docs.github.com/rest/overview/rate-limits-for-the-rest-api

Quirks reproduced:
- ``Link`` URLs point at ``/user/<numeric id>/followers``, not the path the
  client asked for (real GitHub does this): clients must follow them as given.
- A single page has no ``Link``; the last page has only ``prev``/``first``.
- Body URLs (``url``, ``html_url``, ``followers_url``, ``avatar_url``, …) name
  the scheme, host and ``/github`` prefix that answered, as GitHub Enterprise
  names its own host (``base_url``).
- Primary limit: 403/429 with ``x-ratelimit-remaining: 0``; secondary limit:
  403 with or without ``Retry-After`` and no ``X-RateLimit-*`` headers at all.
  The 5,000 an hour count per user, whatever token; 60 per address without one.
- Conditional requests: a weak ``ETag`` of the token and the body; a matching
  ``If-None-Match`` is a 304 (strong tag, no body) that, authorized, uses no quota.
- Lists oldest first (observed, unverified): new followers land on the last page.
"""

from __future__ import annotations

import binascii
import math

from aiohttp import web

from ..identities import (
    FIRST_NAMES,
    LAST_NAMES,
    PermutedIds,
    first_lower,
    last_lower,
    own_numeric_id,
)
from .base import (
    Credentials,
    ErrorRow,
    ProviderSim,
    RawJSON,
    Route,
    bearer_token,
    fault_reset,
    int_param,
    origin,
)

_DOCS = "https://docs.github.com/rest"
_RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
_SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before "
    "you try again. If you reach out to GitHub Support for help, please include "
    "the request ID 0000:0000:0000000:0000000:00000000."
)


def login_of(n: int) -> str:
    return f"{first_lower(n)}-{last_lower(n)}-{n:x}"


_FIRST = tuple(name.lower() for name in FIRST_NAMES)
_LAST = tuple(name.lower() for name in LAST_NAMES)
_NF, _NL = len(_FIRST), len(_LAST)


class GitHub(ProviderSim):
    NAME = "github"
    RELATIONS = ("followers", "following")
    NATIVE_IDS = PermutedIds(30, 1)  # integers in [1, 2**30]
    ID_FORM = r"[1-9]\d*"
    CASE_INSENSITIVE_IDS = True  # logins
    INCLUDABLE = True
    # The real primary limits (docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api;
    # github/docs content/rest/using-the-rest-api/rate-limits-for-the-rest-api.md @21143d5):
    # 5,000 requests an hour for a user, "All of these requests count towards your
    # personal rate limit of 5,000 requests per hour" whatever token or app makes them
    # (personal tokens and every app's user tokens share it); 60 an hour per
    # originating IP address without one. Windows start at the first call.
    RATE_LIMITS = (
        {"limit": 5000, "window_s": 3600, "scope": "user", "auth": "token"},
        {"limit": 60, "window_s": 3600, "scope": "ip", "auth": "none"},
    )
    PAGING_PARAMS = ("page",)
    # The order is not documented (github/docs#20595 declined a follow date); one user
    # observed oldest first (k0shk0sh/FastHub#75), unverified: new followers come last.
    NEWEST_FIRST = False
    # "Most endpoints return an etag header … Making a conditional request does not
    # count against your primary rate limit if a 304 response is returned and the
    # request was made while correctly authorized with an Authorization header"
    # (best-practices-for-using-the-rest-api.md); ETags are tied to the token
    # (GitHub Support in eclipse-csi/otterdog#201).
    ETAGS = True
    FREE_NOT_MODIFIED = True
    PAGE_SIZE = 30
    MAX_PAGE_SIZE = 100
    ANONYMOUS_OK = True
    BASE_HEADERS = {
        "Server": "github.com",
        "X-GitHub-Media-Type": "github.v3; format=json",
        "x-github-api-version-selected": "2022-11-28",
        "Cache-Control": "private, max-age=60, s-maxage=60",
        "Vary": "Accept, Authorization, Cookie, X-GitHub-OTP",
        "X-Content-Type-Options": "nosniff",
    }
    SAMPLE_PATHS = {"profile": "/users/{account}", "page": "/users/{account}/followers"}
    ROUTES = (
        Route("GET", "/user", "profile", "profile"),
        Route("GET", "/users/{login}", "profile", "profile", account_param="login"),
        Route("GET", "/users/{login}/followers", "page", "page", "followers", "login"),
        Route("GET", "/users/{login}/following", "page", "page", "following", "login"),
        Route("GET", "/user/{uid:\\d+}", "profile", "profile", account_param="uid"),
        Route("GET", "/user/{uid:\\d+}/followers", "page", "page", "followers", "uid"),
        Route("GET", "/user/{uid:\\d+}/following", "page", "page", "following", "uid"),
    )
    ERROR_ROWS = (
        ErrorRow("bad_credentials", 401, "Bad credentials", 401),
        ErrorRow("requires_authentication", 401, "Requires authentication", 401),
        ErrorRow(
            "not_found", 404, "Not Found", 404, extra={"doc": f"{_DOCS}/users/users#get-a-user"}
        ),
        ErrorRow(
            "primary_rate_limit",
            403,
            "API rate limit exceeded for user ID {user_id}.",
            403,
            extra={"doc": _RATE_DOCS, "primary": True},
        ),
        ErrorRow(
            "primary_rate_limit_429",
            429,
            "API rate limit exceeded for user ID {user_id}.",
            429,
            extra={"doc": _RATE_DOCS, "primary": True},
        ),
        ErrorRow(
            "secondary_rate_limit",
            403,
            _SECONDARY,
            403,
            extra={"doc": f"{_RATE_DOCS}#about-secondary-rate-limits", "retry_after": 60},
        ),
        ErrorRow(
            "secondary_rate_limit_no_retry_after",
            403,
            _SECONDARY,
            403,
            extra={"doc": f"{_RATE_DOCS}#about-secondary-rate-limits"},
        ),
        ErrorRow("server_error", 500, "Server Error", 500),
        ErrorRow("bad_gateway", 502, "Server Error", 502),
        ErrorRow("unavailable", 503, "Service Unavailable", 503),
        # a path the API does not have (the table's first 404 stays the user lookup's)
        ErrorRow("route_not_found", 404, "Not Found", 404, extra={"doc": _DOCS}),
    )
    ROW_MISSING_AUTH = "requires_authentication"
    ROW_MALFORMED_AUTH = "bad_credentials"
    ROW_UNKNOWN_TOKEN = ROW_EXPIRED_TOKEN = ROW_REVOKED_TOKEN = "bad_credentials"
    ROW_NOT_FOUND = "not_found"
    ROW_UNKNOWN_PATH = "route_not_found"
    ROW_OUTAGE = "unavailable"

    # --- hooks ------------------------------------------------------------------

    def base_url(self, request: web.Request) -> str:
        """Where this API was reached (scheme, host, ``/github``): the root of every
        URL in a body or ``Link``. GitHub Enterprise names its own host there, so
        clients (PyGithub) follow them back to the server that answered."""
        return f"{origin(request)}/{self.NAME}"

    def read_credentials(self, request: web.Request) -> Credentials:
        # both "token X" (classic) and "Bearer X" are accepted by GitHub
        creds = bearer_token(request, {"token": "token", "bearer": "bearer"})
        return creds or Credentials()

    def lookup_account(self, sim, route: Route, raw_id: str, call):
        if route.account_param == "uid":
            key = sim.numeric_index.get((self.NAME, int(raw_id)))
            return sim.accounts.get(key) if key else None
        return super().lookup_account(sim, route, raw_id, call)

    def included_native(self, sim, account_id: str) -> int:
        # a login is listed under its numeric user id, the one its profile answers with
        account = sim.account(self.NAME, account_id)
        if account is not None:
            return sim.numeric_id(account)
        return own_numeric_id(self.NAME, self.normalize_id(account_id))

    def includable_id(self, account_id: str) -> bool:
        return True  # any login: it is listed under its numeric id

    def stored_form(self, n: int) -> tuple[str, str]:
        return str(n), login_of(n)

    def limit_headers(self, quota) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(quota.limit),
            "X-RateLimit-Remaining": str(quota.remaining),
            "X-RateLimit-Reset": self.epoch(quota.reset),
            "X-RateLimit-Used": str(quota.used),
            "X-RateLimit-Resource": "core",
        }

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        headers: dict[str, str] = {}
        user_id = sim.numeric_id(call.account) if call.account else 0
        body = {
            "message": params.get("message") or row.message.format(user_id=user_id),
            "documentation_url": row.extra.get("doc", _DOCS),
            "status": str(row.status),
        }
        if row.extra.get("primary"):
            quota = sim.quota_for(call)
            limit = quota.limit if quota else 5000
            reset = fault_reset(quota, params, call.t, 60)
            headers.update(
                {
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": self.epoch(reset),
                    "X-RateLimit-Used": str(limit),
                    "X-RateLimit-Resource": "core",
                }
            )
        retry_after = params.get("retry_after", row.extra.get("retry_after"))
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return self.respond(body, row.status, headers)

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        if call.authenticated and call.owner is not None:
            owner = sim.accounts.get((self.NAME, call.owner))
            user_id = sim.numeric_id(owner) if owner else 0
            message = f"API rate limit exceeded for user ID {user_id}."
        else:  # counted by address: GitHub's anonymous wording
            message = (
                f"API rate limit exceeded for {call.remote}. (But here's the good news: "
                "Authenticated requests get a higher rate limit. Check out the documentation "
                "for more details.)"
            )
        body = {
            "message": message,
            "documentation_url": _RATE_DOCS,
            "status": str(quota.rule.status or 429),
        }
        return self.respond(body, quota.rule.status or 429, self.limit_headers(quota))

    # --- handlers -----------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        login = account.handle or account.id
        uid = sim.numeric_id(account)
        base = self.base_url(call.request)
        api = f"{base}/users/{login}"
        return self.respond(
            {
                "login": login,
                "id": uid,
                "node_id": _node_id(uid),
                "avatar_url": f"{base}/avatars/u/{uid}?v=4",
                "gravatar_id": "",
                "url": api,
                "html_url": f"{base}/{login}",
                "followers_url": f"{api}/followers",
                "following_url": f"{api}/following{{/other_user}}",
                "repos_url": f"{api}/repos",
                "type": "User",
                "site_admin": False,
                "name": account.name or login,
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "twitter_username": None,
                "public_repos": 0,
                "public_gists": 0,
                "followers": account.space("followers").size,
                "following": account.space("following").size,
                "created_at": "2015-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z",
            }
        )

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        space = call.account.space(call.relation)
        per_page = min(max(int_param(query, "per_page", self.PAGE_SIZE), 1), self.MAX_PAGE_SIZE)
        page = max(int_param(query, "page", 1), 1)
        lo = (page - 1) * per_page
        _, natives = space.slice(lo, lo + per_page)
        body = _user_items(natives, self.base_url(call.request))
        headers = {}
        last = max(1, math.ceil(space.size / per_page))
        if last > 1 or page > 1:
            base = (
                f"{self.base_url(call.request)}/user/{sim.numeric_id(call.account)}/"
                f"{call.relation}?"
                + (f"per_page={query['per_page']}&" if "per_page" in query else "")
            )
            links = []
            if page > 1:
                links.append(f'<{base}page={min(page - 1, last)}>; rel="prev"')
            if page < last:
                links.append(f'<{base}page={page + 1}>; rel="next"')
                links.append(f'<{base}page={last}>; rel="last"')
            if page > 1:
                links.append(f'<{base}page=1>; rel="first"')
            headers["Link"] = ", ".join(links)
        return self.respond(body, 200, headers)


def _node_id(uid: int) -> str:
    return binascii.b2a_base64(b"04:User%d" % uid, newline=False).decode()


def _user_items(ids: list[int], base: str) -> RawJSON:
    """The JSON array of a page: a follower as GitHub lists it (a trimmed "simple
    user": the fields clients read), its URLs under ``base`` (the simulator's
    ``/github``, as GitHub Enterprise's are under its own host). One f-string
    per item, no call per item: this is the hot path of every benchmark."""
    to_base64 = binascii.b2a_base64
    items = []
    for n in ids:
        uid = str(n)
        login = f"{_FIRST[n % _NF]}-{_LAST[(n // 31) % _NL]}-{n:x}"  # == login_of(n)
        node_id = to_base64(b"04:User" + uid.encode(), newline=False).decode()  # == _node_id(n)
        items.append(
            f'{{"login":"{login}","id":{uid},"node_id":"{node_id}",'
            f'"avatar_url":"{base}/avatars/u/{uid}?v=4","gravatar_id":"",'
            f'"url":"{base}/users/{login}","html_url":"{base}/{login}",'
            f'"type":"User","site_admin":false}}'
        )
    return RawJSON("[" + ",".join(items) + "]")
