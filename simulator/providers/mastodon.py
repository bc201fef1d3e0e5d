"""Mastodon: accounts and their followers/following, paged only by ``Link``.

Docs: https://docs.joinmastodon.org/methods/accounts/#followers and
https://docs.joinmastodon.org/api/guidelines/#pagination

Quirks reproduced:
- Cursors are follow ids (a separate, descending sequence), not account ids:
  ``rel="next"`` carries ``max_id``, ``rel="prev"`` carries ``since_id``.
- ``next`` is sent whenever the page is full (Mastodon's ``records_continue?``),
  so a network of exactly N pages ends with one more, empty, page; ``[]`` has
  no ``Link`` at all, and a single short page has only ``prev``.
- Hidden networks (account ``"hidden": true``) answer ``[]``.
- ``X-RateLimit-Reset`` is an ISO-8601 timestamp; 401s carry
  ``WWW-Authenticate: Bearer … error="invalid_token"``.
- Rack::Attack's throttles (``RATE_LIMITS``): per token, per user, per address
  without a token, and the paging throttle; the headers speak for the one
  closest to exceeding; a 429 has no ``Retry-After``.
- Newest first; follows added at run time get larger follow ids, so
  ``since_id``/``min_id`` read exactly the new followers.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..identities import PermutedIds, first_lower, person_name
from .base import ErrorRow, ProviderSim, RawJSON, Route, fault_reset, int_param, origin

_DOMAINS = ("mastodon.social", "fosstodon.org", "hachyderm.io", "mas.to")
#: Follow ids step down by 3 from the newest (gaps, like deleted follows).
_FOLLOW_STEP = 3


def username_of(n: int) -> str:
    return f"{first_lower(n)}_{n:x}"


def acct_of(n: int) -> str:
    username = username_of(n)
    return username if n % 3 == 0 else f"{username}@{_DOMAINS[n % len(_DOMAINS)]}"


def iso8601(t: float) -> str:
    whole = int(t)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e6):06d}Z"
    )


class Mastodon(ProviderSim):
    NAME = "mastodon"
    RELATIONS = ("followers", "following")
    NATIVE_IDS = PermutedIds(56, 100_000_000_000_000_000)  # 18-digit snowflake-like
    ID_FORM = r"[1-9]\d{17}"
    INCLUDABLE = True
    # The real throttles: mastodon/mastodon config/initializers/rack_attack.rb
    # (@020228d; the docs, content/en/api/rate-limits.md, give only the first and the
    # address one): per token 300 / 5 min, per user 1,500 / 5 min, without a user per
    # address 300 / 5 min; and any call with page/max_id/min_id/since_id also 300 /
    # 15 min per user (per address without one). Rack::Attack windows are wall-clock
    # multiples of the period. The headers speak for "the one you are closest to
    # exceeding" (app/controllers/concerns/api/rate_limit_headers.rb: min_by limit - count).
    RATE_LIMITS = (
        {"limit": 300, "window_s": 300, "scope": "token", "auth": "token"},
        {"limit": 1500, "window_s": 300, "scope": "user", "auth": "token"},
        {"limit": 300, "window_s": 300, "scope": "ip", "auth": "none"},
        {"limit": 300, "window_s": 900, "scope": "user", "auth": "token", "applies_to": "paging"},
        {"limit": 300, "window_s": 900, "scope": "ip", "auth": "none", "applies_to": "paging"},
    )
    ALIGNED_WINDOWS = True  # resets at wall-clock multiples (13:50:00)
    PAGING_PARAMS = ("page", "max_id", "min_id", "since_id")  # rack_attack's paging_request?
    FEDERATED = True
    PAGE_FAULTS = frozenset({"short_page"})
    PAGE_SIZE = 40
    MAX_PAGE_SIZE = 80
    ANONYMOUS_OK = True
    BASE_HEADERS = {
        "Server": "Mastodon",
        "Cache-Control": "private, no-store",
        "Vary": "Authorization, Origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    SAMPLE_PATHS = {
        "profile": "/api/v1/accounts/{account}",
        "page": "/api/v1/accounts/{account}/followers",
    }
    ROUTES = (
        Route("GET", "/api/v1/accounts/verify_credentials", "profile", "profile"),
        Route("GET", "/api/v1/accounts/{id}", "profile", "profile", account_param="id"),
        Route("GET", "/api/v1/accounts/{id}/followers", "page", "page", "followers", "id"),
        Route("GET", "/api/v1/accounts/{id}/following", "page", "page", "following", "id"),
    )
    ERROR_ROWS = (
        ErrorRow("unauthorized", 401, "The access token is invalid", 401),
        ErrorRow("token_revoked", 401, "The access token was revoked", 401),
        ErrorRow("token_expired", 401, "The access token expired", 401),
        ErrorRow("forbidden", 403, "This action is not allowed", 403),
        ErrorRow("not_found", 404, "Record not found", 404),
        ErrorRow("gone", 410, "Gone", 410),
        ErrorRow("rate_limited", 429, "Too many requests", 429),
        ErrorRow("server_error", 500, "Internal Server Error", 500),
        ErrorRow("unavailable", 503, "Service Unavailable", 503),
        # no route (Rails' RoutingError: the HTTP reason phrase, not "Record not found")
        ErrorRow("route_not_found", 404, "Not Found", 404),
    )
    ROW_MISSING_AUTH = ROW_MALFORMED_AUTH = ROW_UNKNOWN_TOKEN = "unauthorized"
    ROW_EXPIRED_TOKEN = "token_expired"
    ROW_REVOKED_TOKEN = "token_revoked"
    ROW_NOT_FOUND = "not_found"
    ROW_UNKNOWN_PATH = "route_not_found"
    ROW_OUTAGE = "unavailable"

    def stored_form(self, n: int) -> tuple[str, str]:
        return str(n), acct_of(n)

    def limit_headers(self, quota) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(quota.limit),
            "X-RateLimit-Remaining": str(quota.remaining),
            "X-RateLimit-Reset": iso8601(_reset(quota)),
        }

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        message = params.get("message") or row.message
        headers = {}
        if row.status == 401:
            headers["WWW-Authenticate"] = (
                f'Bearer realm="Doorkeeper", error="invalid_token", error_description="{message}"'
            )
        if row.status == 429:
            quota = sim.quota_for(call)
            reset = fault_reset(quota, params, call.t, 300)
            headers.update(
                {
                    "X-RateLimit-Limit": str(quota.limit if quota else 300),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": iso8601(reset),
                }
            )
        return self.respond({"error": message}, row.status, headers)

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        return self.respond({"error": "Too many requests"}, 429, self.limit_headers(quota))

    # --- handlers -------------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        username = account.handle or account.id
        return self.respond(
            {
                "id": account.id,
                "username": username,
                "acct": username,
                "display_name": account.name or "",
                "locked": False,
                "bot": False,
                "discoverable": True,
                "indexable": False,
                "group": False,
                "created_at": "2022-11-01T00:00:00.000Z",
                "note": "",
                "url": f"https://mastodon.example/@{username}",
                "uri": f"https://mastodon.example/users/{username}",
                "avatar": "https://mastodon.example/avatars/original/missing.png",
                "avatar_static": "https://mastodon.example/avatars/original/missing.png",
                "header": "https://mastodon.example/headers/original/missing.png",
                "header_static": "https://mastodon.example/headers/original/missing.png",
                "followers_count": account.space("followers").size,
                "following_count": account.space("following").size,
                "statuses_count": 0,
                "last_status_at": None,
                "hide_collections": account.hidden,
                "noindex": False,
                "emojis": [],
                "roles": [],
                "fields": [],
            }
        )

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        space = call.account.space(call.relation)
        limit = min(max(int_param(query, "limit", self.PAGE_SIZE), 1), self.MAX_PAGE_SIZE)
        newest = _newest_follow_id(space)
        # a follow id is a rank (newest - 3 × rank), so the cursors are keysets: a page
        # asked for by max_id/since_id/min_id is the same whatever was added since
        after = before = None
        max_id = _id_param(query, "max_id")
        if max_id is not None:  # older than max_id: a larger rank
            after = (newest - max_id) // _FOLLOW_STEP
        for name in ("since_id", "min_id"):  # newer than the cursor: a smaller rank
            cursor = _id_param(query, name)
            if cursor is not None:
                bound = -(-(newest - cursor) // _FOLLOW_STEP)
                before = bound if before is None else min(before, bound)
        # min_id alone: the page just above the cursor; since_id: the newest ones
        nearest = "min_id" in query and max_id is None
        lo, hi = space.window(limit, after, before, nearest)
        if call.account.hidden:
            hi = lo
        short = mods.get("short_page")
        full = hi - lo == limit
        if short is not None and hi > lo:
            # a short page (accounts filtered out server-side) still links on
            self.applied(call, short)
            hi = min(hi, lo + int(short.get("items", max(1, limit // 2))))
            full = full or hi < space.size
        ranks, natives = space.slice(lo, hi)
        body = RawJSON("[" + ",".join(map(_account_item, natives)) + "]")
        headers = {}
        if ranks:
            base = (
                f"{origin(call.request)}{self.served_at(call)}/api/v1/accounts/{call.account.id}/"
                f"{call.relation}?" + (f"limit={query['limit']}&" if "limit" in query else "")
            )
            links = []
            if full:
                links.append(f'<{base}max_id={newest - _FOLLOW_STEP * ranks[-1]}>; rel="next"')
            links.append(f'<{base}since_id={newest - _FOLLOW_STEP * ranks[0]}>; rel="prev"')
            headers["Link"] = ", ".join(links)
        return self.respond(body, 200, headers)


def _reset(quota) -> float:
    """Rack::Attack's reset: the request time plus the whole seconds to the period's end
    (``now + (period - now.to_i % period)``), so it keeps the request's fraction
    (``13:50:00.582400Z``)."""
    if quota.rule.align and quota.now:
        return quota.now + (quota.rule.window_s - int(quota.now) % quota.rule.window_s)
    return quota.reset


def _newest_follow_id(space) -> int:
    """Follow id of rank 0; rank r has ``newest - 3 * r`` (connections added at run time
    have negative ranks: larger ids, the newest follows)."""
    return 10**12 + space.key % 10**11


def _id_param(query, name: str) -> int | None:
    """An id cursor (``max_id`` …), None when absent or not a number (then ignored)."""
    try:
        return int(query[name])
    except (KeyError, ValueError):
        return None


def _account_item(n: int) -> str:
    """A follower as Mastodon lists it (an Account entity; remote ones carry their host)."""
    first, last = person_name(n)
    username, acct = username_of(n), acct_of(n)
    host = acct.partition("@")[2] or "mastodon.example"
    return (
        f'{{"id":"{n}","username":"{username}","acct":"{acct}",'
        f'"display_name":"{first} {last}","locked":false,"bot":false,"discoverable":true,'
        f'"group":false,"created_at":"2023-01-01T00:00:00.000Z","note":"",'
        f'"url":"https://{host}/@{username}",'
        f'"avatar":"https://{host}/avatars/original/missing.png",'
        f'"avatar_static":"https://{host}/avatars/original/missing.png",'
        f'"header":"https://{host}/headers/original/missing.png",'
        f'"header_static":"https://{host}/headers/original/missing.png",'
        f'"followers_count":0,"following_count":0,"statuses_count":0,'
        f'"last_status_at":null,"emojis":[],"fields":[]}}'
    )
