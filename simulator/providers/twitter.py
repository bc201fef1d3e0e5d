"""Twitter / X API v2: users, followers/following with ``pagination_token``.

Docs: https://developer.x.com/en/docs/x-api/users/follows and
https://developer.x.com/en/docs/authentication/oauth-2-0/user-access-token

Quirks reproduced:
- The last page has no ``meta.next_token``; an empty network has no ``data``.
- Errors come as v2 problem JSON or as the v1.1 ``errors[]`` shape with a
  numeric code (rows carry both; a fault's ``"shape": "v1"|"v2"`` picks).
- An unknown user is a 200 whose body holds ``errors[]`` (resource-not-found).
- One in four ids is small; the rest exceed 2**53 (ids are strings).
- OAuth 1.0a: the ``oauth_token`` of the ``Authorization: OAuth …`` header
  is the identity; the signature is not checked, the header shape is.
- Refresh (``POST /2/oauth2/token``) rotates the refresh token.
- Limits per user and per endpoint (``RATE_LIMITS``); every user returned by
  followers/following or a lookup is billed (``PRICE_USD``). Newest first; pagination
  tokens are keysets, good across changes to the list.
"""

from __future__ import annotations

import base64
import json
import re
import struct

from aiohttp import web

from ..identities import TwitterIds, first_lower, person_name
from .base import (
    Credentials,
    ErrorRow,
    ProviderSim,
    Route,
    bearer_token,
    dumps,
    fault_reset,
    json_object,
    json_response,
)

_PROBLEMS = "https://api.twitter.com/2/problems"
_OAUTH1_REQUIRED = (
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
)
_OAUTH1_PARAM = re.compile(r'(\w+)="([^"]*)"')


def username_of(n: int) -> str:
    """At most 15 characters, unique: old ids get a name stem, snowflakes 15 hex digits."""
    if n < 1 << 60:
        return f"{first_lower(n)[:3]}{n:x}"
    return f"{n - (1 << 60):015x}"


class Twitter(ProviderSim):
    NAME = "twitter"
    RELATIONS = ("followers", "following")
    NATIVE_IDS = TwitterIds()
    ID_FORM = r"[1-9]\d*"
    INCLUDABLE = True
    # The real limits (docs.x.com/x-api/fundamentals/rate-limits; xdevplatform/docs
    # x-api/fundamentals/rate-limits.mdx, table unchanged since the pay-per-use commit
    # b702cd8, 2026-01-16): "Each endpoint has its own limits", per user with a user
    # token (OAuth 2.0 user context or OAuth 1.0a): follows lookup (followers,
    # following) 300 / 15 min each, GET /2/users/:id 900 / 15 min, GET /2/users/me
    # 75 / 15 min. (Per-app limits are for app-only Bearer tokens, which the simulator
    # does not issue.)
    RATE_LIMITS = (
        {"limit": 300, "window_s": 900, "scope": "user", "auth": "token", "path_kind": "page"},
        {
            "limit": 900,
            "window_s": 900,
            "scope": "user",
            "auth": "token",
            "endpoint": "/2/users/:id",
        },
        {"limit": 75, "window_s": 900, "scope": "user", "auth": "token", "endpoint": "/2/users/me"},
    )
    PER_ENDPOINT_WINDOWS = True
    PAGING_PARAMS = ("pagination_token",)
    # "Following/Followers: Read" $0.010 per resource, pay-per-use since 2026-01-16
    # (xdevplatform/docs x-api/getting-started/pricing.mdx); a resource is a user
    # returned. The docs' cost estimator (xdevplatform/docs sliders.js) prices
    # get-followers, get-following, get-user-by-id and get-my-user alike, as
    # "User: Read" per resource: the profile call is billed too. Not modelled: the
    # $0.001 "Owned Reads" of the app owner's own account, and the de-duplication of a
    # resource within a UTC day (a "soft guarantee").
    PRICE_USD = 0.010
    PAGE_FAULTS = frozenset({"short_page"})
    TOKEN_TTL_S = 7200  # 2 h
    ROTATES_REFRESH = True
    PAGE_SIZE = 100
    MAX_PAGE_SIZE = 1000
    BASE_HEADERS = {
        "Server": "tsa_b",
        "x-access-level": "read",
        "Cache-Control": "no-cache, no-store, max-age=0",
        "x-content-type-options": "nosniff",
    }
    SAMPLE_PATHS = {"profile": "/2/users/{account}", "page": "/2/users/{account}/followers"}
    ROUTES = (
        Route("GET", "/2/users/me", "profile", "profile"),
        Route("GET", "/2/users/{id}", "profile", "profile", account_param="id"),
        Route("GET", "/2/users/{id}/followers", "page", "page", "followers", "id"),
        Route("GET", "/2/users/{id}/following", "page", "page", "following", "id"),
        Route("POST", "/2/oauth2/token", "refresh", "token", authenticated=False),
    )
    ERROR_ROWS = (
        ErrorRow(
            "rate_limit", 429, "Rate limit exceeded", 88, extra={"title": "Too Many Requests"}
        ),
        ErrorRow(
            "could_not_authenticate",
            401,
            "Could not authenticate you.",
            32,
            extra={"title": "Unauthorized"},
        ),
        ErrorRow(
            "invalid_or_expired_token",
            401,
            "Invalid or expired token.",
            89,
            extra={"title": "Unauthorized"},
        ),
        ErrorRow(
            "account_locked",
            403,
            "To protect our users from spam and other malicious activity, this account is "
            "temporarily locked. Please log in to https://twitter.com to unlock your account.",
            326,
            extra={"title": "Forbidden"},
        ),
        ErrorRow(
            "user_suspended", 403, "User has been suspended.", 63, extra={"title": "Forbidden"}
        ),
        ErrorRow(
            "bad_authentication_data",
            400,
            "Bad Authentication data.",
            215,
            extra={"title": "Bad Request"},
        ),
        ErrorRow(
            "over_capacity", 503, "Over capacity", 130, extra={"title": "Service Unavailable"}
        ),
        ErrorRow(
            "internal_error", 500, "Internal error", 131, extra={"title": "Internal Server Error"}
        ),
        ErrorRow("unauthorized", 401, "Unauthorized", extra={"title": "Unauthorized"}),
        # an endpoint the API does not have: a real 404 (unlike an unknown user)
        ErrorRow(
            "page_not_found",
            404,
            "Sorry, that page does not exist.",
            34,
            extra={"title": "Not Found Error"},
        ),
        ErrorRow(
            "resource_not_found",
            200,
            "Could not find user with id: [{id}].",
            extra={"title": "Not Found Error", "problem": "resource-not-found"},
        ),
        ErrorRow(
            "not_authorized_for_resource",
            200,
            "Sorry, you are not authorized to see the user with id: [{id}].",
            extra={"title": "Authorization Error", "problem": "not-authorized-for-resource"},
        ),
    )
    ROW_MISSING_AUTH = "unauthorized"
    ROW_MALFORMED_AUTH = "bad_authentication_data"
    ROW_UNKNOWN_TOKEN = "unauthorized"
    ROW_EXPIRED_TOKEN = ROW_REVOKED_TOKEN = "invalid_or_expired_token"
    ROW_NOT_FOUND = "resource_not_found"
    ROW_UNKNOWN_PATH = "page_not_found"
    ROW_OUTAGE = "over_capacity"

    # --- hooks ------------------------------------------------------------------

    def read_credentials(self, request: web.Request) -> Credentials:
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "oauth ":
            params = dict(_OAUTH1_PARAM.findall(header))
            if any(not params.get(p) for p in _OAUTH1_REQUIRED):
                return Credentials(problem="malformed")
            return Credentials(params["oauth_token"], "oauth1")
        return bearer_token(request, {"bearer": "bearer"}) or Credentials()

    def unknown_token_row(self, call) -> str:
        return "could_not_authenticate" if call.scheme == "oauth1" else self.ROW_UNKNOWN_TOKEN

    def revoked_row(self, call, fault) -> str:
        return "could_not_authenticate" if call.scheme == "oauth1" else self.ROW_REVOKED_TOKEN

    def stored_form(self, n: int) -> tuple[str, str]:
        return str(n), username_of(n)

    def limit_headers(self, quota) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(quota.limit),
            "x-rate-limit-remaining": str(quota.remaining),
            "x-rate-limit-reset": self.epoch(quota.reset),
        }

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        message = params.get("message") or row.message
        problem = row.extra.get("problem")
        headers = {}
        if problem:  # per-item problem inside a 200
            user_id = call.request.match_info.get("id", call.account_id or "")
            # fault param "beside_data": the page's data with errors[] next to it,
            # about a follower that cannot be shown (its id: "hidden_id")
            beside = params.get("beside_data") and call.kind == "page" and call.account is not None
            if beside:
                user_id = str(params.get("hidden_id", "2244994945"))
            detail = message.format(id=user_id)
            body = {
                "errors": [
                    {
                        "value": user_id,
                        "detail": detail,
                        "title": row.extra["title"],
                        "resource_type": "user",
                        "parameter": "id",
                        "resource_id": user_id,
                        "type": f"{_PROBLEMS}/{problem}",
                    }
                ]
            }
            if beside:
                page = json.loads(self.page(sim, call, {}).text)
                body = {**page, "errors": body["errors"]}
            return self.respond(body, row.status)
        if row.status == 429:
            quota = sim.quota_for(call)
            reset = fault_reset(quota, params, call.t, 900)
            headers = {
                "x-rate-limit-limit": str(quota.limit if quota else 15),
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": self.epoch(reset),
            }
        shape = params.get("shape") or ("v1" if row.code is not None else "v2")
        return self.respond(self._error_body(row, message, shape), row.status, headers)

    @staticmethod
    def _error_body(row: ErrorRow, message: str, shape: str) -> dict:
        if shape == "v1" and row.code is not None:
            return {"errors": [{"code": row.code, "message": message}]}
        title = row.extra.get("title", "Error")
        detail = title if row.code is None or row.status == 429 else message
        return {"title": title, "detail": detail, "type": "about:blank", "status": row.status}

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        row = self.row("rate_limit")
        body = self._error_body(row, row.message, quota.rule.shape or "v2")
        return self.respond(body, 429, self.limit_headers(quota))

    # --- handlers -------------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        data = {
            "id": account.id,
            "name": account.name or account.id,
            "username": account.handle or f"user{account.id}"[:15],
        }
        fields = call.request.query.get("user.fields", "")
        if "public_metrics" in fields.split(","):
            data["public_metrics"] = {
                "followers_count": account.space("followers").size,
                "following_count": account.space("following").size,
                "tweet_count": 0,
                "listed_count": 0,
                "like_count": 0,
            }
        call.resources = 1  # billed: the user returned ("User: Read", as a follower is)
        return self.respond({"data": data})

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        space = call.account.space(call.relation)
        raw_max = query.get("max_results", str(self.PAGE_SIZE))
        if not raw_max.isdigit() or not 1 <= int(raw_max) <= self.MAX_PAGE_SIZE:
            return self._invalid_param(
                "max_results", raw_max, f"is not between 1 and {self.MAX_PAGE_SIZE}"
            )
        max_results = int(raw_max)
        lo, hi = space.window(max_results)
        if "pagination_token" in query:
            decoded = self._decode_token(space, query["pagination_token"])
            if decoded is None:
                return self._invalid_param(
                    "pagination_token", query["pagination_token"], "is not valid"
                )
            forward, rank = decoded
            if forward:
                lo, hi = space.window(max_results, after=rank)
            else:
                lo, hi = space.window(max_results, before=rank, nearest=True)
        short = mods.get("short_page")
        if short is not None and hi > lo:
            self.applied(call, short)
            hi = min(hi, lo + int(short.get("items", max(1, max_results // 2))))
        ranks, natives = space.slice(lo, hi)
        call.resources = len(natives)  # billed: each user returned
        meta = {"result_count": len(natives)}
        if ranks and hi < space.size:
            meta["next_token"] = self._encode_token(space, True, ranks[-1])
        if ranks and lo > 0:
            meta["previous_token"] = self._encode_token(space, False, ranks[0])
        members = [("meta", dumps(meta))]
        if natives:  # an empty page has no "data" at all
            members.insert(0, ("data", "[" + ",".join(map(_user_item, natives)) + "]"))
        return self.respond(json_object(*members))

    def refresh(self, sim, call, mods) -> web.Response:
        form = call.form
        if form.get("grant_type") != "refresh_token":
            return json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Value passed for the grant type was invalid.",
                },
                400,
            )
        token = self.redeem(sim, form.get("refresh_token", ""), call.t)
        if token is None:
            return json_response(
                {
                    "error": "invalid_request",
                    "error_description": "Value passed for the token was invalid.",
                },
                400,
            )
        return json_response(
            {
                "token_type": "bearer",
                "expires_in": round(token.expires_at - call.t),
                "access_token": token.value,
                "scope": "tweet.read users.read follows.read offline.access",
                "refresh_token": token.refresh_token,
            }
        )

    # --- pagination tokens: opaque 16-character strings holding a place in the list --
    # (a keyset: the rank of the item the page ends or starts at, so a token stays
    # good when followers come and go while a client pages)

    @staticmethod
    def _encode_token(space, forward: bool, rank: int) -> str:
        check = (space.key & 0x7FFF) << 1 | forward
        return base64.b32encode(struct.pack(">Hq", check, rank)).decode()

    @staticmethod
    def _decode_token(space, token: str) -> tuple[bool, int] | None:
        """(forward, rank): the items after ``rank``, or (backward) those before it."""
        try:
            check, rank = struct.unpack(">Hq", base64.b32decode(token))
        except (ValueError, struct.error):
            return None
        if check >> 1 != space.key & 0x7FFF:
            return None
        return bool(check & 1), rank

    def _invalid_param(self, name: str, value: str, why: str) -> web.Response:
        return self.respond(
            {
                "errors": [
                    {
                        "parameters": {name: [value]},
                        "message": f"The `{name}` query parameter value [{value}] {why}",
                    }
                ],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": f"{_PROBLEMS}/invalid-request",
            },
            400,
        )


def _user_item(n: int) -> str:
    first, last = person_name(n)
    return f'{{"id":"{n}","name":"{first} {last}","username":"{username_of(n)}"}}'
