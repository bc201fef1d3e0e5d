"""Facebook Graph API: ``/{user-id}/friends`` with cursor paging and ``paging.next``.

Docs: https://developers.facebook.com/docs/graph-api/reference/user/friends/
and https://developers.facebook.com/docs/graph-api/guides/error-handling

Size: ``GET /v19.0/{user-id}?fields=friends.limit(0).summary(true)`` ->
``{"friends": {"data": [], "summary": {"total_count": N}}, "id": ...}``, or
``/friends?limit=0&summary=total_count`` (both count as profile calls).

Quirks reproduced:
- ``paging.next`` is an absolute URL embedding ``access_token`` and ``after``.
- Errors are classified by ``error.code``/``error_subcode``, not HTTP status
  (190 comes as 400, 4 as 403); throttles carry ``is_transient: true``.
- One bad-token condition, many messages: the "bad_token" family (190 with
  and without subcodes, 102) gives 14 messages, one picked per firing.
- Faults: ``empty_page_with_next``, ``cursor_expired`` (code 100), ``short_page``.
- One app-wide rolling hour of 200 calls per user of the app, as ``x-app-usage``
  percentages; a user's own limit (a scenario's) answers code 17, unannounced.
- Cursors point at items (keysets): they survive changes to the list.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from urllib.parse import urlencode

from aiohttp import web

from ..identities import PermutedIds, base62_fixed, person_name
from .base import (
    Credentials,
    ErrorRow,
    ProviderSim,
    Route,
    bearer_token,
    dumps,
    int_param,
    json_object,
    origin,
)

_OAUTH = {"type": "OAuthException"}
_TRANSIENT = {"type": "OAuthException", "is_transient": True}
_V = "Error validating access token: "


def _bad_token(name: str, message: str, code: int = 190, subcode: int | None = None) -> ErrorRow:
    return ErrorRow(name, 400, message, code, subcode, "bad_token", _OAUTH)


class Facebook(ProviderSim):
    NAME = "facebook"
    RELATIONS = ("friends",)
    NATIVE_IDS = PermutedIds(50, 100_000_000_000_000)  # 15-16 digit numbers
    ID_FORM = r"[1-9]\d{14,15}"
    INCLUDABLE = True
    PAGE_FAULTS = frozenset({"empty_page_with_next", "cursor_expired", "short_page"})
    # The app's platform limit (developers.facebook.com/docs/graph-api/overview/rate-limiting):
    # "Calls within one hour = 200 * Number of Users" (daily active users: here the app's
    # scenario accounts), one rolling hour for the whole app, reported as percentages in
    # X-App-Usage. A user token's own rolling-hour count is not published ("we do not
    # reveal actual call count values for users"): a scenario may add a "user" rule,
    # which is then enforced (code 17) but, as the real one, never announced.
    RATE_LIMITS = ({"limit": 200, "window_s": 3600, "scope": "app", "scale": "app_users"},)
    ROLLING_WINDOWS = True
    PAGING_PARAMS = ("after", "before")
    # The friends order is not documented (NOT FOUND): listed newest first, unverified.
    NEWEST_FIRST = True
    PAGE_SIZE = 25
    MAX_PAGE_SIZE = 5000
    BASE_HEADERS = {
        "facebook-api-version": "v19.0",
        "Cache-Control": "private, no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Expires": "Sat, 01 Jan 2000 00:00:00 GMT",
        "Access-Control-Allow-Origin": "*",
        "x-fb-rev": "1012345678",
    }
    SAMPLE_PATHS = {"profile": "/v19.0/{account}", "page": "/v19.0/{account}/friends"}
    ROUTES = (
        Route("GET", "/{version:v\\d+\\.\\d+}/{uid}/friends", "page", "page", "friends", "uid"),
        Route("GET", "/{version:v\\d+\\.\\d+}/{uid}", "profile", "profile", account_param="uid"),
    )
    ERROR_ROWS = (
        ErrorRow("unknown", 500, "An unknown error has occurred.", 1, extra=_OAUTH),
        ErrorRow("service_down", 503, "(#2) Service temporarily unavailable", 2, extra=_TRANSIENT),
        ErrorRow(
            "app_rate_limit", 403, "(#4) Application request limit reached", 4, extra=_TRANSIENT
        ),
        ErrorRow("user_rate_limit", 403, "(#17) User request limit reached", 17, extra=_TRANSIENT),
        ErrorRow("page_rate_limit", 403, "(#32) Page request limit reached", 32, extra=_TRANSIENT),
        ErrorRow(
            "custom_rate_limit",
            403,
            "(#613) Calls to this api have exceeded the rate limit.",
            613,
            extra=_TRANSIENT,
        ),
        ErrorRow(
            "application_limit", 400, "(#341) Application limit reached", 341, extra=_TRANSIENT
        ),
        ErrorRow(
            "policy_block",
            400,
            "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
            368,
            extra=_OAUTH,
        ),
        ErrorRow(
            "permission_denied",
            403,
            "(#10) Application does not have permission for this action",
            10,
            extra=_OAUTH,
        ),
        ErrorRow("permissions_error", 403, "(#200) Permissions error", 200, extra=_OAUTH),
        _bad_token("invalid_token", "Invalid OAuth access token - Cannot parse access token"),
        _bad_token("invalid_token_data", "Invalid OAuth access token data."),
        _bad_token("token_not_decrypted", "The access token could not be decrypted"),
        _bad_token("app_deleted", "Error validating application. Application has been deleted."),
        _bad_token(
            "app_not_installed",
            _V + "User {user} has not authorized application {app}.",
            subcode=458,
        ),
        _bad_token(
            "user_checkpointed",
            _V + "You cannot access the app till you log in to "
            "www.facebook.com and follow the instructions given.",
            subcode=459,
        ),
        _bad_token(
            "password_changed",
            _V + "The session has been invalidated because the user "
            "changed their password or Facebook has changed the session for security "
            "reasons.",
            subcode=460,
        ),
        _bad_token(
            "session_mismatch",
            _V + "Session does not match current stored session. "
            "This may be because the user changed the password since the time the "
            "session was created or Facebook has changed the session for security "
            "reasons.",
            subcode=460,
        ),
        _bad_token(
            "token_expired",
            _V + "Session has expired on {expired}. The current time is {now}.",
            subcode=463,
        ),
        _bad_token(
            "unconfirmed_user",
            _V + "Sessions for the user {user} are not allowed "
            "because the user is not a confirmed user.",
            subcode=464,
        ),
        _bad_token(
            "logged_out", _V + "The session is invalid because the user logged out.", subcode=467
        ),
        _bad_token(
            "invalid_access_token",
            _V + "This may be because the user logged out or may be due to a system error.",
            subcode=467,
        ),
        _bad_token(
            "inactive_user",
            _V + "The session was invalidated because the user has been inactive for 90 days.",
            subcode=493,
        ),
        _bad_token("session_invalid", "Session key invalid or no longer valid", code=102),
        ErrorRow("bad_parameter", 400, "(#100) Invalid parameter", 100, extra=_OAUTH),
        ErrorRow(
            "cursor_expired",
            400,
            "(#100) The cursor passed in 'after' has expired or is "
            "invalid. Restart pagination without a cursor.",
            100,
            extra=_OAUTH,
        ),
        ErrorRow(
            "unsupported_get",
            400,
            "Unsupported get request. Object with ID '{uid}' does "
            "not exist, cannot be loaded due to missing permissions, or does not support "
            "this operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api",
            100,
            33,
            extra={"type": "GraphMethodException"},
        ),
        # WWW-Authenticate says "invalid_token" for it too (the real recording)
        ErrorRow(
            "token_required",
            400,
            "An access token is required to request this resource.",
            104,
            extra={**_OAUTH, "auth_error": "invalid_token"},
        ),
        # a path Graph has no node/edge for: 400, not 404
        ErrorRow("unknown_path", 400, "Unknown path components: {path}", 2500, extra=_OAUTH),
    )
    ROW_MISSING_AUTH = "token_required"
    ROW_MALFORMED_AUTH = ROW_UNKNOWN_TOKEN = "invalid_token"
    ROW_EXPIRED_TOKEN = "token_expired"
    ROW_REVOKED_TOKEN = "logged_out"
    ROW_NOT_FOUND = "unsupported_get"
    ROW_UNKNOWN_PATH = "unknown_path"
    ROW_OUTAGE = "service_down"

    # --- hooks ------------------------------------------------------------------

    def read_credentials(self, request: web.Request) -> Credentials:
        token = request.query.get("access_token")
        if token:
            return Credentials(token, "query")
        return bearer_token(request, {"bearer": "bearer", "oauth": "bearer"}) or Credentials()

    def call_kind(self, route: Route, request: web.Request) -> str:
        # a zero-limit friends call only asks for summary.total_count: a size lookup
        if route.kind == "page" and request.query.get("limit") == "0":
            return "profile"
        return route.kind

    def lookup_account(self, sim, route: Route, raw_id: str, call):
        if raw_id == "me":
            owner = sim.tokens.get(self.NAME, call.token)
            return sim.accounts.get((self.NAME, owner.account_id)) if owner else None
        return super().lookup_account(sim, route, raw_id, call)

    def authorize(self, sim, call) -> str | None:
        # friends are only readable with the user's own token
        owner = sim.tokens.get(self.NAME, call.token)
        return None if owner and owner.account_id == call.account_id else self.ROW_NOT_FOUND

    def revoked_row(self, call, fault) -> str:
        return fault.rng.choice([r for r in self.ERROR_ROWS if r.family == "bad_token"]).name

    def synthesize_rows(self, wanted) -> list[ErrorRow]:
        code = wanted.get("code")
        if isinstance(code, int) and 200 <= code <= 299 and wanted.get("subcode") is None:
            return [
                ErrorRow(
                    f"permissions_{code}",
                    403,
                    f"(#{code}) Requires extended permission",
                    code,
                    extra=_OAUTH,
                )
            ]
        return []

    def stored_form(self, n: int) -> tuple[str, str]:
        return str(n), _name_of(n)

    def announces(self, rule) -> bool:
        # x-app-usage is the app's share; a user's count is never revealed
        return rule.scope in ("app", "ip")

    def limit_headers(self, quota) -> dict[str, str]:
        percent = min(100, quota.used * 100 // max(quota.limit, 1))
        return {
            "x-app-usage": dumps(
                {"call_count": percent, "total_time": percent // 2, "total_cputime": percent // 4}
            )
        }

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        ctx = {
            "user": call.account_id or "0",
            "app": "1234567890",
            "uid": call.account_id or "",
            "expired": _fb_time(call.t - 3600),
            "now": _fb_time(call.t),
            "path": _unknown_components(call.path),
        }
        message = (params.get("message") or row.message).format(**ctx)
        error = {
            "message": message,
            "type": row.extra.get("type", "OAuthException"),
            "code": row.code,
        }
        if row.subcode is not None:
            error["error_subcode"] = row.subcode
        if row.extra.get("is_transient"):
            error["is_transient"] = True
        error["fbtrace_id"] = base62_fixed(hash((call.t, call.path, message)) & (2**64 - 1), 12)[1:]
        kind = row.extra.get("auth_error") or (
            "invalid_token"
            if row.family == "bad_token"
            else "unknown_error"
            if row.code == 1
            else "invalid_request"
        )
        headers = {"WWW-Authenticate": f'OAuth "Facebook Platform" "{kind}" "{message}"'}
        if row.code in (4, 17):  # throttled: usage at (or past) 100 percent
            headers["x-app-usage"] = dumps(
                {"call_count": 100, "total_time": 50, "total_cputime": 25}
            )
        return self.respond({"error": error}, row.status, headers)

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        # the app-wide budget answers code 4, a per-user (or per-token) budget code 17
        user = quota.rule.scope in ("token", "user")
        row = self.row("user_rate_limit" if user else "app_rate_limit")
        response = self.render_error(sim, row, call, {})
        response.headers["x-app-usage"] = self.limit_headers(quota)["x-app-usage"]
        return response

    # --- handlers -------------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        fields = re.split(r",(?![^(]*\))", call.request.query.get("fields", "name,id"))
        body: dict = {}
        for field in fields:
            name = re.split(r"[.{(]", field.strip(), maxsplit=1)[0]
            if name == "friends":
                body["friends"] = {"data": [], "summary": {"total_count": account.space().size}}
            elif name == "name":
                body["name"] = account.name or account.handle or account.id
        body["id"] = account.id
        return self.respond(body)

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        space = call.account.space()
        limit = min(max(int_param(query, "limit", self.PAGE_SIZE), 0), self.MAX_PAGE_SIZE)
        cursor_name = "after" if "after" in query else "before" if "before" in query else None
        lo, hi = space.window(limit)
        boundary = 0  # an empty page's place: the rank the list was asked to go on from
        if cursor_name:
            decoded = _decode_cursor(space, query[cursor_name])
            if decoded is None:
                return self.render_error(sim, self.row("bad_parameter"), call, {})
            rank, issued = decoded
            expiry = mods.get("cursor_expired")
            if expiry is not None and call.t - issued >= float(expiry.get("max_age_s", 0)):
                self.applied(call, expiry)
                return self.render_error(sim, self.row("cursor_expired"), call, {})
            if cursor_name == "after":
                lo, hi = space.window(limit, after=rank)
                boundary = rank + 1
            else:
                lo, hi = space.window(limit, before=rank, nearest=True)
                boundary = rank
        short = mods.get("short_page")
        if short is not None and hi > lo:
            self.applied(call, short)
            hi = min(hi, lo + int(short.get("items", max(1, limit // 2))))
        ranks, natives = space.slice(lo, hi)
        members = [("data", "[]")]
        empty = mods.get("empty_page_with_next")
        if empty is not None and ranks:
            # "A page can be empty and still have next": next resumes at the same spot
            self.applied(call, empty)
            here = _encode_cursor(space, ranks[0] - 1, call.t)
            members.append(
                (
                    "paging",
                    dumps(
                        {
                            "cursors": {"before": here, "after": here},
                            "next": self._url(call, limit, "after", here),
                        }
                    ),
                )
            )
        elif ranks or lo > 0:
            # cursors point at items (Graph: "a cursor … marks a specific item"): after
            # the page's last one, before its first; they survive changes to the list
            members[0] = ("data", "[" + ",".join(map(_friend_item, natives)) + "]")
            after = _encode_cursor(space, ranks[-1] if ranks else boundary - 1, call.t)
            before = _encode_cursor(space, ranks[0] if ranks else boundary, call.t)
            paging: dict = {"cursors": {"before": before, "after": after}}
            if lo > 0:
                paging["previous"] = self._url(call, limit, "before", before)
            if hi < space.size:
                paging["next"] = self._url(call, limit, "after", after)
            members.append(("paging", dumps(paging)))
        if query.get("summary") in ("total_count", "true", "1"):
            members.append(("summary", dumps({"total_count": space.size})))
        return self.respond(json_object(*members))

    def _url(self, call, limit: int, cursor_name: str, cursor: str) -> str:
        request = call.request
        params = {"access_token": call.token or "", "limit": limit}
        if "summary" in request.query:
            params["summary"] = request.query["summary"]
        params[cursor_name] = cursor
        version = request.match_info["version"]
        return f"{origin(request)}/facebook/{version}/{call.account.id}/friends?{urlencode(params)}"


def _unknown_components(path: str) -> str:
    """What Graph names in "Unknown path components": the path past the version
    and the node (``/v19.0/me/friends/x`` -> ``/friends/x``), else all of it."""
    parts = path.split("/")[2:]  # "", "facebook", ...
    if parts and re.fullmatch(r"v\d+\.\d+", parts[0]):
        parts = parts[2:] if len(parts) > 2 else parts[1:]
    return "/" + "/".join(parts)


def _name_of(n: int) -> str:
    first, last = person_name(n)
    return f"{first} {last}"


def _friend_item(n: int) -> str:
    first, last = person_name(n)
    return f'{{"name":"{first} {last}","id":"{n}"}}'


def _fb_time(t: float) -> str:
    return time.strftime("%A, %d-%b-%y %H:%M:%S PST", time.gmtime(t - 8 * 3600))


# --- cursors: base64 of b"AQH" + check + rank + issue time ("QVFI…" like real ones)


def _encode_cursor(space, rank: int, now: float) -> str:
    raw = b"AQH" + struct.pack(">IqI", space.key & 0xFFFFFFFF, rank, int(now))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(space, cursor: str) -> tuple[int, int] | None:
    """(rank, issue time) of a cursor of this list; None: not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        check, rank, issued = struct.unpack(">IqI", raw[3:])
    except (ValueError, struct.error):
        return None
    if raw[:3] != b"AQH" or check != space.key & 0xFFFFFFFF:
        return None
    return rank, issued
