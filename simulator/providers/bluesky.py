"""Bluesky (AT Protocol, XRPC): profiles, followers and follows, paged by ``cursor``.

Docs: https://docs.bsky.app/docs/api/app-bsky-graph-get-followers,
https://docs.bsky.app/docs/api/app-bsky-graph-get-follows,
https://docs.bsky.app/docs/api/app-bsky-actor-get-profile,
https://docs.bsky.app/docs/api/com-atproto-server-refresh-session,
https://atproto.com/specs/xrpc and
https://docs.bsky.app/docs/advanced-guides/rate-limits
(netsync's own summary: ``docs/providers.md``, section Bluesky).

Served the way a PDS (``https://bsky.social``) serves them to a client with a
legacy session (``Authorization: Bearer <accessJwt>``):

- ``GET /xrpc/app.bsky.actor.getProfile?actor=`` → a ``profileViewDetailed``
  with ``followersCount`` / ``followsCount``;
- ``GET /xrpc/app.bsky.graph.getFollowers?actor=&limit=&cursor=`` →
  ``{"followers": [profileView], "subject": profileView, "cursor"}``, and
  ``getFollows`` → ``{"follows": [...], "subject", "cursor"}``;
- ``POST /xrpc/com.atproto.server.refreshSession`` with
  ``Authorization: Bearer <refreshJwt>`` → new ``accessJwt`` + ``refreshJwt``.

Quirks reproduced (from the AppView and PDS source, bluesky-social/atproto):
- ``actor`` is a DID or a handle (case-insensitive); ids are DIDs
  (``did:plc:`` + 24 base32 characters), handles are not stable or unique:
  most are ``<name>.bsky.social``, some a custom domain, a few the
  placeholder ``handle.invalid`` (a handle that failed verification).
- The cursor is the keyset of the last item, ``<sortAt ms>::<cid>``. A full
  page always carries one, even when it is the last (the next answer is then
  empty, without a cursor); a short page has none (the AppView fills short
  pages itself). A cursor not of that form is 400 ``Malformed cursor``; one of
  that form the server does not know ends the list (an empty page).
- ``limit`` 1..100, default 50; anything else is 400 ``InvalidRequest``.
- Errors are ``{"error": "<Name>", "message": "..."}``; an expired access token
  is **400** ``ExpiredToken`` (not 401), a bad one 400 ``InvalidToken``, no
  token 401 ``AuthMissing``; an unknown actor 400 ``InvalidRequest``
  ("Profile not found" / "Actor not found: <actor>"). Row ``gateway_html``:
  the load balancer's HTML error page, which is not JSON at all.
- ``RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds, floored)
  and ``RateLimit-Policy`` (``3000;w=300``) on every answer of a rule, and
  ``Retry-After`` on a 429. With no rule in the scenario the PDS's real limit
  applies: 3000 per 5 minutes per IP (``Bluesky.RATE_LIMITS``).
- Lists are newest first (the AppView sorts by ``sortAt`` descending); the
  cursor is a keyset, so follows added while a client pages do not shift it.
- ``refreshSession`` rotates the refresh token: the old one then answers 400
  ``ExpiredToken`` "Token has been revoked". Tokens it issues are JWT-shaped
  (``exp`` is the real expiry); the simulator's own token name is in ``jti``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
import weakref

from aiohttp import web

from ..identities import PermutedIds, first_lower, last_lower, permute, person_name
from .base import (
    Credentials,
    ErrorRow,
    ProviderSim,
    Route,
    bearer_token,
    dumps,
    fault_reset,
    json_object,
)

_FOLLOWERS = "/xrpc/app.bsky.graph.getFollowers"
_FOLLOWS = "/xrpc/app.bsky.graph.getFollows"
_PROFILE = "/xrpc/app.bsky.actor.getProfile"
_REFRESH = "/xrpc/com.atproto.server.refreshSession"

#: Follows are listed newest first, one a second before the next (sortAt, ms).
_NEWEST_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_STEP_MS = 1000
#: Fixed key mixing a connection's native id into the random-looking half of its DID.
_DID_KEY = 0x5EED_B1E5_C0FF_EE00
_CUSTOM_TLDS = ("com", "net", "dev", "xyz", "org")
_CDN = "https://cdn.bsky.app/img"
#: The labeler every app.bsky answer names (Bluesky's own moderation service).
_LABELERS = "did:plc:ar7c4by46qjdydhdevvrndac;redact"
#: Refresh tokens live 90 days (assumed: the docs say only that access tokens are short-lived).
_REFRESH_TTL_S = 90 * 86400
_ISSUER = "did:web:pds.simulator.invalid"
#: a well-formed cursor that names no follow of the list (it lists nothing)
_STRANGER = object()


def _b32(value: int, nbytes: int) -> str:
    return base64.b32encode(value.to_bytes(nbytes, "big")).decode().lower().rstrip("=")


def did_of(n: int) -> str:
    """``did:plc:`` + 24 base32 characters: a random-looking half, then ``n`` itself (unique)."""
    return "did:plc:" + _b32((permute(n, 60, _DID_KEY) << 60) | n, 15)


def handle_of(n: int) -> str:
    if n % 61 == 0:
        return "handle.invalid"
    name = f"{first_lower(n)}-{n:x}"
    if n % 7 == 0:
        return f"{name}.{_CUSTOM_TLDS[n % len(_CUSTOM_TLDS)]}"
    return f"{name}.bsky.social"


def account_did(account) -> str:
    """A scenario account's own DID: its id when that is one, else derived from the id."""
    if account.id.startswith("did:"):
        return account.id
    digest = hashlib.blake2b(f"bluesky\0{account.id}".encode(), digest_size=15).digest()
    return "did:plc:" + _b32(int.from_bytes(digest, "big"), 15)


def account_handle(account) -> str:
    if account.handle:
        return account.handle.lower()
    if "." in account.id and not account.id.startswith("did:"):
        return account.id.lower()
    return f"{account.id.lower().replace('_', '-').replace(':', '-')}.bsky.social"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(header: dict, claims: dict) -> str:
    """A JWT-shaped token (the signature is a hash: nothing checks it)."""
    signing = f"{_b64url(dumps(header).encode())}.{_b64url(dumps(claims).encode())}"
    return f"{signing}.{_b64url(hashlib.sha256(signing.encode()).digest())}"


def jwt_claims(token: str) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def _iso(ms: int) -> str:
    whole, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:03d}Z"


class Bluesky(ProviderSim):
    NAME = "bluesky"
    RELATIONS = ("followers", "following")
    NATIVE_IDS = PermutedIds(60, 0)  # the unique half of a did:plc
    ID_FORM = r"did:plc:[a-z2-7]{24}"
    # The PDS's real limit (bluesky-social/bsky-docs docs/advanced-guides/rate-limits.md):
    # "Overall API Requests (all endpoints) — Rate limited by IP — 3000 per 5 minutes".
    # (The AppView's own limits are "generous" and unpublished; createSession's and the
    # write points are for calls the simulator does not serve.)
    RATE_LIMITS = ({"limit": 3000, "window_s": 300, "scope": "ip"},)
    # a 429 carries Retry-After = ceil(msBeforeNext / 1000) (bluesky-social/atproto
    # packages/xrpc-server/src/rate-limiter-http.ts)
    RETRY_AFTER_ON_LIMIT = True
    PAGING_PARAMS = ("cursor",)
    FEDERATED = True
    PAGE_FAULTS = frozenset({"short_page"})
    TOKEN_TTL_S = 7200  # access tokens: 2 h
    ROTATES_REFRESH = True
    PAGE_SIZE = 50
    MAX_PAGE_SIZE = 100
    BASE_HEADERS = {
        "Vary": "Authorization",
        "Cache-Control": "private",
    }
    SAMPLE_PATHS = {
        "profile": f"{_PROFILE}?actor={{account}}",
        "page": f"{_FOLLOWERS}?actor={{account}}",
    }
    ROUTES = (
        Route("GET", _PROFILE, "profile", "profile", account_param="actor"),
        Route("GET", _FOLLOWERS, "page", "page", "followers", "actor"),
        Route("GET", _FOLLOWS, "page", "page", "following", "actor"),
        Route("POST", _REFRESH, "refresh", "token", authenticated=False),
    )
    #: ``code`` is the HTTP status (XRPC has no numeric codes); ``extra["error"]`` the XRPC name.
    ERROR_ROWS = (
        ErrorRow("expired_token", 400, "Token has expired", 400, extra={"error": "ExpiredToken"}),
        ErrorRow(
            "invalid_token",
            400,
            "Token could not be verified",
            400,
            extra={"error": "InvalidToken"},
        ),
        ErrorRow(
            "auth_missing", 401, "Authentication Required", 401, extra={"error": "AuthMissing"}
        ),
        ErrorRow(
            "authentication_required",
            401,
            "Authentication Required",
            401,
            extra={"error": "AuthenticationRequired"},
        ),
        # the entryway's / AppView's own verifier answers an expired token with 401
        ErrorRow(
            "expired_token_401", 401, "Token has expired", 401, extra={"error": "ExpiredToken"}
        ),
        ErrorRow(
            "account_takedown",
            401,
            "Account has been taken down",
            401,
            extra={"error": "AccountTakedown"},
        ),
        ErrorRow(
            "account_deactivated",
            401,
            "Account is deactivated",
            401,
            extra={"error": "AccountDeactivated"},
        ),
        ErrorRow(
            "account_not_found", 403, "Account not found", 403, extra={"error": "AccountNotFound"}
        ),
        ErrorRow(
            "actor_not_found", 400, "Profile not found", 400, extra={"error": "InvalidRequest"}
        ),
        ErrorRow(
            "actor_suspended",
            400,
            "Account has been suspended",
            400,
            extra={"error": "AccountTakedown"},
        ),
        ErrorRow(
            "actor_deactivated",
            400,
            "Account is deactivated",
            400,
            extra={"error": "AccountDeactivated"},
        ),
        ErrorRow("invalid_request", 400, "Invalid Request", 400, extra={"error": "InvalidRequest"}),
        ErrorRow(
            "rate_limited", 429, "Rate Limit Exceeded", 429, extra={"error": "RateLimitExceeded"}
        ),
        ErrorRow(
            "internal_error",
            500,
            "Internal Server Error",
            500,
            extra={"error": "InternalServerError"},
        ),
        ErrorRow(
            "method_not_implemented",
            501,
            "Method Not Implemented",
            501,
            extra={"error": "MethodNotImplemented"},
        ),
        ErrorRow(
            "upstream_failure", 502, "Upstream Failure", 502, extra={"error": "UpstreamFailure"}
        ),
        ErrorRow(
            "not_enough_resources",
            503,
            "Not Enough Resources",
            503,
            extra={"error": "NotEnoughResources"},
        ),
        ErrorRow(
            "upstream_timeout", 504, "Upstream Timeout", 504, extra={"error": "UpstreamTimeout"}
        ),
        ErrorRow("gateway_html", 502, "502 Bad Gateway", 502, extra={"html": True}),
        ErrorRow("not_found", 404, "XRPC Not Supported", 404, extra={"error": "XRPCNotSupported"}),
    )
    ROW_MISSING_AUTH = ROW_MALFORMED_AUTH = "auth_missing"
    ROW_UNKNOWN_TOKEN = "invalid_token"
    ROW_EXPIRED_TOKEN = "expired_token"
    # A revoked session: its access JWT no longer verifies; its refresh token is dead.
    ROW_REVOKED_TOKEN = "invalid_token"
    ROW_NOT_FOUND = "actor_not_found"
    ROW_UNKNOWN_PATH = "method_not_implemented"  # an unknown NSID; a non-XRPC path is a 404
    ROW_OUTAGE = "not_enough_resources"

    def __init__(self) -> None:
        super().__init__()
        #: per simulator: handle or DID -> account key (checked on use, rebuilt on a miss)
        self._aliases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # --- identities -------------------------------------------------------------------

    def sample_account_id(self, stem: str) -> str:
        return f"{stem}.bsky.social"  # an actor is a handle (a domain name) or a DID

    def stored_form(self, n: int) -> tuple[str, str]:
        return did_of(n), handle_of(n)

    def native_of(self, connection_id: str) -> int | None:
        # only a DID this simulator makes (did_of) names a person it can render
        if not re.fullmatch(self.ID_FORM, connection_id):
            return None
        value = int.from_bytes(base64.b32decode(connection_id[8:].upper()), "big")
        n = value & ((1 << 60) - 1)
        return n if did_of(n) == connection_id else None

    def lookup_account(self, sim, route, raw_id: str, call):
        """``actor`` is the scenario id, the account's DID or its handle."""
        account = sim.accounts.get((self.NAME, raw_id))
        if account is not None or not raw_id:
            return account
        alias = raw_id.lower() if not raw_id.startswith("did:") else raw_id
        table = self._aliases.get(sim)
        key = table.get(alias) if table else None
        account = sim.accounts.get(key) if key else None
        if account is not None and alias in (account_did(account), account_handle(account)):
            return account
        table = {}
        for (provider, _), candidate in sim.accounts.items():
            if provider == self.NAME:
                table[account_did(candidate)] = table[account_handle(candidate)] = candidate.key
        self._aliases[sim] = table
        return sim.accounts.get(table[alias]) if alias in table else None

    # --- credentials: scenario tokens as given, issued JWTs by their ``jti`` ------------

    def read_credentials(self, request: web.Request) -> Credentials:
        creds = bearer_token(request, {"bearer": "bearer"})
        if creds is None:
            return Credentials()
        if creds.token and creds.token.count(".") == 2:
            claims = jwt_claims(creds.token)
            if claims and claims.get("iss") == _ISSUER and isinstance(claims.get("jti"), str):
                creds.token = claims["jti"]
        return creds

    # --- rate limit headers -----------------------------------------------------------

    def limit_headers(self, quota) -> dict[str, str]:
        # floored, as the XRPC server does (the window really ends up to 1 s later)
        return {
            "RateLimit-Limit": str(quota.limit),
            "RateLimit-Remaining": str(quota.remaining),
            "RateLimit-Reset": str(math.floor(quota.reset)),
            "RateLimit-Policy": f"{quota.limit};w={round(quota.rule.window_s)}",
        }

    def render_rate_limited(self, sim, quota, call) -> web.Response:
        return self.respond(
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            429,
            self.limit_headers(quota),
        )

    # --- errors -----------------------------------------------------------------------

    def render_error(self, sim, row: ErrorRow, call, params) -> web.Response:
        if call.kind == "other" and "/xrpc/" not in call.path:
            row = self.row("not_found")
        message = params.get("message") or row.message
        query = call.request.query if call.request is not None else {}
        if row.name == "actor_not_found" and not params.get("message"):
            if not query.get("actor"):
                row, message = self.row("invalid_request"), 'Params must have the property "actor"'
            elif call.kind == "page":
                message = f"Actor not found: {query['actor']}"
        if row.extra.get("html"):
            return web.Response(
                text=f"<html>\r\n<head><title>{message}</title></head>\r\n<body>\r\n"
                f"<center><h1>{message}</h1></center>\r\n</body>\r\n</html>\r\n",
                status=row.status,
                content_type="text/html",
            )
        headers = {}
        if row.status == 429:
            quota = sim.quota_for(call)
            limit = quota.limit if quota is not None else 3000
            window = round(quota.rule.window_s) if quota is not None else 300
            reset = fault_reset(quota, params, call.t, 300)
            headers = {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(math.floor(reset)),
                "RateLimit-Policy": f"{limit};w={window}",
                "Retry-After": str(max(1, math.ceil(reset - call.t))),
            }
        return self.respond({"error": row.extra["error"], "message": message}, row.status, headers)

    def _error(self, sim, call, name: str, message: str | None = None) -> web.Response:
        return self.render_error(sim, self.row(name), call, {"message": message} if message else {})

    # --- handlers ---------------------------------------------------------------------

    def profile(self, sim, call, mods) -> web.Response:
        account = call.account
        did = account_did(account)
        body = json_object(
            *[
                (k, dumps(v))
                for k, v in {
                    "did": did,
                    "handle": account_handle(account),
                    **({"displayName": account.name} if account.name else {}),
                    "description": "",
                    "avatar": f"{_CDN}/avatar/plain/{did}/bafkreiavatar@jpeg",
                    "associated": {
                        "lists": 0,
                        "feedgens": 0,
                        "starterPacks": 0,
                        "labeler": False,
                        "chat": {"allowIncoming": "following"},
                    },
                    "labels": [],
                    "createdAt": "2023-04-01T00:00:00.000Z",
                    "indexedAt": "2024-11-01T00:00:00.000Z",
                    "viewer": {"muted": False, "blockedBy": False},
                    "followersCount": account.space("followers").size,
                    "followsCount": account.space("following").size,
                    "postsCount": 0,
                }.items()
            ]
        )
        return self.respond(body, 200, {"atproto-content-labelers": _LABELERS})

    def page(self, sim, call, mods) -> web.Response:
        query = call.request.query
        raw_limit = query.get("limit", str(self.PAGE_SIZE))
        try:
            limit = int(raw_limit)
        except ValueError:
            return self._error(sim, call, "invalid_request", "Params/limit must be an integer")
        if limit > self.MAX_PAGE_SIZE:
            return self._error(
                sim,
                call,
                "invalid_request",
                f"Params/limit can not be greater than {self.MAX_PAGE_SIZE}",
            )
        if limit < 1:
            return self._error(sim, call, "invalid_request", "Params/limit can not be less than 1")
        space = call.account.space(call.relation)
        lo, hi = space.window(limit)
        if query.get("cursor"):
            decoded = self._decode_cursor(space, query["cursor"])
            if decoded is None:
                return self._error(sim, call, "invalid_request", "Malformed cursor")
            if decoded is _STRANGER:  # well-formed, but not one of ours: nothing older to list
                lo = hi = space.size
            else:  # a keyset: what follows that item, whatever changed since
                lo, hi = space.window(limit, after=decoded)
        more = hi - lo == limit  # a full page always names its last item's keyset
        short = mods.get("short_page")
        if short is not None and hi > lo:
            # accounts filtered out server-side (takedowns, blocks): short, but the list goes on
            self.applied(call, short)
            hi = min(hi, lo + int(short.get("items", max(1, limit // 2))))
            more = more or hi < space.size
        ranks, natives = space.slice(lo, hi)
        items = "[" + ",".join(map(_profile_item, natives)) + "]"
        key = "followers" if call.relation == "followers" else "follows"
        members = [(key, items), ("subject", _subject(call.account))]
        if more and ranks:
            members.append(("cursor", dumps(self._encode_cursor(space, ranks[-1]))))
        return self.respond(json_object(*members), 200, {"atproto-content-labelers": _LABELERS})

    def refresh(self, sim, call, mods) -> web.Response:
        if not call.request.headers.get("Authorization"):
            return self._error(sim, call, "auth_missing")
        grant = sim.tokens.refresh.get((self.NAME, call.token or ""))
        if grant is None:
            if sim.tokens.get(self.NAME, call.token) is not None:
                return self._error(sim, call, "invalid_token", "Invalid token type")
            return self._error(sim, call, "invalid_token")
        if grant.used or grant.revoked:
            return self._error(sim, call, "expired_token", "Token has been revoked")
        account = sim.accounts.get((self.NAME, grant.account_id))
        token = self.redeem(sim, grant.value, call.t)
        if token is None or account is None:
            return self._error(sim, call, "expired_token", "Token has been revoked")
        did, now = account_did(account), int(call.t)
        access = make_jwt(
            {"typ": "at+jwt", "alg": "HS256"},
            {
                "scope": "com.atproto.access",
                "sub": did,
                "aud": _ISSUER,
                "iss": _ISSUER,
                "iat": now,
                "exp": math.floor(token.expires_at),
                "jti": token.value,
            },
        )
        refresh = make_jwt(
            {"typ": "refresh+jwt", "alg": "HS256"},
            {
                "scope": "com.atproto.refresh",
                "sub": did,
                "aud": _ISSUER,
                "iss": _ISSUER,
                "iat": now,
                "exp": now + _REFRESH_TTL_S,
                "jti": token.refresh_token,
            },
        )
        return self.respond(
            {
                "accessJwt": access,
                "refreshJwt": refresh,
                "handle": account_handle(account),
                "did": did,
                "active": True,
            }
        )

    # --- cursors: ``<sortAt ms>::<cid>`` of the last item listed ------------------------

    # (a follow's rank r has sortAt ``_NEWEST_MS - r s``: follows added at run time
    # have negative ranks, later sortAt, and come first)

    @staticmethod
    def _cid(space, rank: int) -> str:
        digest = hashlib.blake2b(f"{space.key}:{rank}".encode(), digest_size=32).digest()
        return "bafyrei" + base64.b32encode(digest).decode().lower().rstrip("=")

    def _encode_cursor(self, space, rank: int) -> str:
        return f"{_NEWEST_MS - _STEP_MS * rank}::{self._cid(space, rank)}"

    def _decode_cursor(self, space, cursor: str):
        """The rank the cursor names; ``_STRANGER`` for a well-formed one of no follow
        here; None: malformed."""
        parts = cursor.split("::")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            return None
        try:
            offset = _NEWEST_MS - int(parts[0])
        except ValueError:
            return _STRANGER
        rank, rest = divmod(offset, _STEP_MS)
        if rest or parts[1] != self._cid(space, rank):
            return _STRANGER
        return rank


def _subject(account) -> str:
    did = account_did(account)
    return dumps(
        {
            "did": did,
            "handle": account_handle(account),
            **({"displayName": account.name} if account.name else {}),
            "avatar": f"{_CDN}/avatar/plain/{did}/bafkreiavatar@jpeg",
            "associated": {"chat": {"allowIncoming": "following"}},
            "labels": [],
            "createdAt": "2023-04-01T00:00:00.000Z",
            "indexedAt": "2024-11-01T00:00:00.000Z",
            "viewer": {"muted": False, "blockedBy": False},
            "description": "",
        }
    )


def _profile_item(n: int) -> str:
    """A follower or followed account as the AppView lists it (``profileView``)."""
    did = did_of(n)
    first, last = person_name(n)
    name = "" if n % 11 == 0 else f',"displayName":"{first} {last}"'
    avatar = "" if n % 3 == 0 else f',"avatar":"{_CDN}/avatar/plain/{did}/bafkrei{n:x}@jpeg"'
    created = _iso(1_680_000_000_000 + (n % 50_000_000) * 1000)
    return (
        f'{{"did":"{did}","handle":"{handle_of(n)}"{name}{avatar},'
        f'"associated":{{"chat":{{"allowIncoming":"following"}}}},'
        f'"labels":[],"createdAt":"{created}","indexedAt":"{created}",'
        f'"viewer":{{"muted":false,"blockedBy":false}},'
        f'"description":"{last_lower(n)} fan"}}'
    )
