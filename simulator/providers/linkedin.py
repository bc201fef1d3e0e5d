"""LinkedIn v2: ``/v2/connections?q=viewer`` with start/count offset paging.

Docs: https://learn.microsoft.com/linkedin/shared/references/v2/network/connections
and https://learn.microsoft.com/linkedin/shared/api-guide/concepts/error-handling

Size: ``projection=(paging)`` answers only ``paging.total`` (a profile call).

Quirks reproduced:
- No rate-limit headers at all; a 429 carries serviceErrorCode 101.
- The documented end of the list is a page shorter than ``count``.
- Fault ``off_by_one`` (the bug from the talk): past ``after_start`` (default
  1), every page holds exactly one person, the one after ``start``, and
  never ends, even past ``total``. A client that advances ``start`` by the
  number of elements walks one-person pages forever.
- Refresh (``POST /oauth/v2/accessToken``) keeps the same refresh token.
"""

from __future__ import annotations

import re

from aiohttp import web

from ..identities import PermutedIds, base62_fixed
from .base import (
    Credentials,
    ErrorRow,
    ProviderSim,
    Route,
    bearer_token,
    dumps,
    int_param,
    json_object,
    json_response,
)

_URN = "urn:li:person:"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class LinkedIn(ProviderSim):
    NAME = "linkedin"
    RELATIONS = ("connections",)
    NATIVE_IDS = PermutedIds(59, 0)  # 10 base62 characters
    ID_FORM = r"urn:li:person:[0-9A-Za-z]{10}"
    PAGE_FAULTS = frozenset({"off_by_one"})
    # "Standard rate limits are not published in documentation" (learn.microsoft.com/
    # linkedin/shared/api-guide/concepts/rate-limits): no default rule. Its limits are
    # per day, application and member, and "reset at midnight UTC every day": a
    # scenario's rules are windows aligned to wall-clock multiples (86400 s: midnight).
    ALIGNED_WINDOWS = True
    PAGING_PARAMS = ("start",)
    # The connections order is not documented: listed newest first, unverified.
    NEWEST_FIRST = True
    TOKEN_TTL_S = 5_184_000  # 60 days; the refresh token is handed back unchanged
    PAGE_SIZE = 50
    MAX_PAGE_SIZE = 500
    BASE_HEADERS = {
        "X-RestLi-Protocol-Version": "2.0.0",
        "X-Li-Format": "json",
        "X-Li-Fabric": "prod-lva1",
        "X-Li-Pop": "prod-lva1-x",
        "X-Li-Proto": "http/1.1",
    }
    SAMPLE_PATHS = {
        "profile": "/v2/connections?q=viewer&projection=(paging)",
        "page": "/v2/connections?q=viewer",
    }
    ROUTES = (
        Route("GET", "/v2/me", "profile", "profile"),
        Route("GET", "/v2/connections", "page", "page", "connections"),
        Route("POST", "/oauth/v2/accessToken", "refresh", "token", authenticated=False),
    )
    ERROR_ROWS = (
        ErrorRow(
            "invalid_access_token",
            401,
            "Invalid access token",
            65600,
            extra={"code": "INVALID_ACCESS_TOKEN"},
        ),
        ErrorRow(
            "revoked_access_token",
            401,
            "The token used in the request has been revoked by the user",
            65601,
            extra={"code": "REVOKED_ACCESS_TOKEN"},
        ),
        ErrorRow(
            "expired_access_token",
            401,
            "Expired access token",
            65602,
            extra={"code": "EXPIRED_ACCESS_TOKEN"},
        ),
        ErrorRow(
            "empty_access_token",
            401,
            "Empty oauth2 access token",
            65604,
            extra={"code": "EMPTY_ACCESS_TOKEN"},
        ),
        ErrorRow(
            "access_denied",
            403,
            "Not enough permissions to access: GET-viewer /connections",
            100,
            extra={"code": "ACCESS_DENIED"},
        ),
        ErrorRow("not_found", 404, "Not Found", extra={"code": "NOT_FOUND"}),
        ErrorRow(
            "bad_request",
            400,
            "Invalid query parameters passed to request",
            extra={"code": "QUERY_PARAM_NOT_ALLOWED"},
        ),
        ErrorRow(
            "throttled",
            429,
            "Resource level throttle limit for calls to this resource is reached.",
            101,
        ),
        ErrorRow("server_error", 500, "Internal Server Error"),
        ErrorRow("unavailable", 503, "Service Unavailable"),
        ErrorRow("gateway_timeout", 504, "Gateway Timeout"),
    )
    ROW_MISSING_AUTH = "empty_access_token"
    ROW_MALFORMED_AUTH = ROW_UNKNOWN_TOKEN = "invalid_access_token"
    ROW_EXPIRED_TOKEN = "expired_access_token"
    ROW_REVOKED_TOKEN = "revoked_access_token"
    ROW_NOT_FOUND = "not_found"
    ROW_OUTAGE = "unavailable"

    def read_credentials(self, request: web.Request) -> Credentials:
        token = request.query.get("oauth2_access_token")
        if token:
            return Credentials(token, "query")
        return bearer_token(request, {"bearer": "bearer"}) or Credentials()

    def call_kind(self, route: Route, request: web.Request) -> str:
        if route.kind == "page" and request.query.get("projection") == "(paging)":
            return "profile"
        return route.kind

    def native_of(self, connection_id: str) -> int | None:
        if not re.fullmatch(self.ID_FORM, connection_id):
            return None
        n = 0
        for char in connection_id[len(_URN) :]:
            n = n * 62 + _BASE62.index(char)
        return n

    def stored_form(self, n: int) -> tuple[str, None]:
        # v2 connections expose only the member URN: there is no handle to store
        return _URN + base62_fixed(n, 10), None

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        body: dict = {}
        if row.code is not None:
            body["serviceErrorCode"] = row.code
        if "code" in row.extra:
            body["code"] = row.extra["code"]
        body["message"] = params.get("message") or row.message
        body["status"] = row.status
        return self.respond(body, row.status)

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        return self.render_error(sim, self.row("throttled"), call, {})

    # --- handlers -------------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        first, _, last = (account.name or account.id).partition(" ")
        return self.respond(
            {
                "id": account.handle or account.id,
                "localizedFirstName": first,
                "localizedLastName": last,
            }
        )

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        if query.get("q") != "viewer":
            return self.render_error(sim, self.row("bad_request"), call, {})
        space = call.account.space()
        start = max(int_param(query, "start", 0), 0)
        count = min(max(int_param(query, "count", self.PAGE_SIZE), 0), self.MAX_PAGE_SIZE)
        paging = {"count": count, "start": start, "total": space.size, "links": []}
        if call.kind == "profile":
            return self.respond({"paging": paging})
        bug = mods.get("off_by_one")
        if bug is not None and space.size:
            self.applied(call, bug)
            shifted = (start + 1) % space.size
            _, natives = space.slice(shifted, shifted + 1)
        else:
            _, natives = space.slice(start, start + count)
        elements = ",".join(f'{{"to":"{_URN}{base62_fixed(n, 10)}"}}' for n in natives)
        return self.respond(json_object(("elements", f"[{elements}]"), ("paging", dumps(paging))))

    def refresh(self, sim, call, mods) -> web.Response:
        form = call.form
        if form.get("grant_type") != "refresh_token" or not form.get("refresh_token"):
            return json_response(
                {
                    "error": "invalid_request",
                    "error_description": 'A required parameter "grant_type" or '
                    '"refresh_token" is missing or invalid',
                },
                400,
            )
        token = self.redeem(sim, form["refresh_token"], call.t)
        if token is None:
            return json_response(
                {
                    "error": "invalid_request",
                    "error_description": "The provided authorization grant or "
                    "refresh token is invalid, expired or revoked",
                },
                400,
            )
        return json_response(
            {
                "access_token": token.value,
                "expires_in": round(token.expires_at - call.t),
                "refresh_token": token.refresh_token,
                "refresh_token_expires_in": 31_536_000,
                "scope": "r_liteprofile,r_network",
            }
        )
