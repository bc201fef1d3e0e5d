"""Bluesky (AT Protocol): an account's followers and follows, chained by ``cursor``.

Docs: https://docs.bsky.app/docs/api/app-bsky-graph-get-followers,
https://docs.bsky.app/docs/api/app-bsky-graph-get-follows,
https://docs.bsky.app/docs/api/app-bsky-actor-get-profile,
https://docs.bsky.app/docs/api/com-atproto-server-refresh-session,
https://atproto.com/specs/xrpc,
https://docs.bsky.app/docs/advanced-guides/rate-limits and
https://docs.bsky.app/docs/advanced-guides/api-directory
(summarised, with what netsync assumes where they are silent, in
``docs/providers.md``, section Bluesky).

``base_url`` is the user's PDS: ``https://bsky.social`` (the entryway of
every Bluesky-hosted account) by default, ``BLUESKY_API_URL`` otherwise. The
session is the legacy one: ``Authorization: Bearer <accessJwt>``, short-lived,
renewed at ``com.atproto.server.refreshSession`` with the refresh JWT, which
rotates on every use. ``app.bsky.*`` reads go through the PDS, which proxies
them to the Bluesky AppView.

Ids are DIDs (``did:plc:…``), the only stable key; handles change, and
``handle.invalid`` stands for one that failed verification.
"""

from __future__ import annotations

import base64
import json

from providers.announced import AnnouncedRule, parse_epoch
from providers.errors import Action, ErrorRule
from providers.provider import Auth, HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, int_or_none

FOLLOWERS = "app.bsky.graph.getFollowers"
FOLLOWS = "app.bsky.graph.getFollows"
PROFILE = "app.bsky.actor.getProfile"
REFRESH_SESSION = "com.atproto.server.refreshSession"

#: relation → (XRPC method, the answer's list key, the profile's count key)
_RELATIONS = {
    "followers": (FOLLOWERS, "followers", "followersCount"),
    "following": (FOLLOWS, "follows", "followsCount"),
}


def jwt_expiry(token) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it; None when there is none.

    The spec asks clients to treat session tokens as opaque: this is only a
    hint for refreshing ahead of time, never a reason to refuse a token.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


class Bluesky(Provider):
    NAME = "bluesky"
    API_URL = "https://bsky.social"
    DOCS = "https://docs.bsky.app/docs/api/app-bsky-graph-get-followers"
    RELATIONS = ("followers", "following")
    # "Overall API Requests (all endpoints): rate limited by IP, 3000 per 5 minutes"
    # (PDS limits): every user's calls share our egress address's budget.
    QUOTAS = (QuotaLimit("ip", 3000, 300),)
    PAGE_SIZE = 100  # limit: 1-100, default 50
    # the AppView lists followers newest first (by follow time): a re-sync reads from
    # the top until someone known, its first page sized to the growth
    INCREMENTAL = "head"
    # an actor: a handle (a domain name) or a DID (did:plc:…, did:web:…); it travels
    # as the ``actor`` query parameter, never in the path
    # A handle is a domain name (two or more labels of 1-63 characters, 253 at
    # most, the last not starting with a digit); a DID is did:<method>:<id>
    # (https://atproto.com/specs/handle, https://atproto.com/specs/did).
    ACCOUNT_ID_PATTERN = (
        r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"|did:[a-z]+:[A-Za-z0-9._:-]{0,2046}[A-Za-z0-9._-]"
    )
    PAGINATION = Pagination.CURSOR
    # Quirk: the AppView drops taken-down and blocked accounts from a page
    # after reading it (and refills only up to ten times), so a short page
    # mid-list proves nothing; the page-count guard still bounds the chain.
    ONE_ITEM_RUN_LIMIT = None
    # followersCount is a counter kept apart from the list: suspended accounts
    # are counted but not listed, so allow more pages than the count implies.
    PAGE_SLACK = 5
    RATE_LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
    # The PDS counts every request per client IP: 3,000 / 5 min (bsky-docs
    # advanced-guides/rate-limits.md), told in RateLimit-* with a policy
    # "3000;w=300" (atproto xrpc-server rate-limiter-http.ts); the gate keys it per
    # egress address and PDS host.
    ANNOUNCED_RULES = (AnnouncedRule(3000, 300, "ip"),)
    RATE_POLICY_HEADER = "ratelimit-policy"
    WAIT_FLOOR_SECONDS = 60.0
    # A bearer session token, renewed with ``refresh_call`` / ``parse_refresh``
    # below when a call answers ExpiredToken (REFRESH rows).
    AUTH = Auth.SESSION
    # accounts live on many PDSes (the login's ``instance``, else the DID document's
    # ``#atproto_pds`` service: ``sync.pds``); DIDs are global ids
    FEDERATED = True

    #: key: (HTTP status, XRPC ``error`` name), with a third part where one
    #: name covers two conditions (``error_keys``); then the status alone.
    ERRORS = {
        # the PDS's verifier: 400 for a token it issued; the entryway's and the
        # AppView's own verifiers say 401 for the same conditions
        (400, "ExpiredToken"): ErrorRule(Action.REFRESH, "expired_token"),
        (401, "ExpiredToken"): ErrorRule(Action.REFRESH, "expired_token"),
        (400, "InvalidToken"): ErrorRule(Action.REFRESH, "invalid_token"),
        (401, "InvalidToken"): ErrorRule(Action.REFRESH, "invalid_token"),
        (401, "AuthenticationRequired"): ErrorRule(Action.REFRESH, "unauthorized"),
        # no (or no Bearer) Authorization header: our request is wrong
        (401, "AuthMissing"): ErrorRule(Action.FAIL, "auth_missing"),
        # the user's own account, checked on their token: they must act
        (401, "AccountTakedown"): ErrorRule(Action.REAUTH, "account_takedown", tell_user=True),
        (401, "AccountDeactivated"): ErrorRule(
            Action.REAUTH, "account_deactivated", tell_user=True
        ),
        (403, "AccountNotFound"): ErrorRule(Action.REAUTH, "account_not_found"),
        # the actor whose list we read (getProfile / getFollowers of a suspended,
        # deactivated or unknown account): nothing to list
        (400, "AccountTakedown"): ErrorRule(Action.SKIP, "actor_suspended"),
        (400, "AccountDeactivated"): ErrorRule(Action.SKIP, "actor_deactivated"),
        (400, "InvalidRequest", "not_found"): ErrorRule(Action.SKIP, "not_found"),
        (400, "InvalidRequest"): ErrorRule(Action.FAIL, "invalid_request"),
        (429, "RateLimitExceeded"): ErrorRule(Action.WAIT, "rate_limited"),  # until ratelimit-reset
        (500, "InternalServerError"): ErrorRule(Action.BACKOFF, "internal_error"),
        (501, "MethodNotImplemented"): ErrorRule(Action.FAIL, "method_not_implemented"),
        (502, "UpstreamFailure"): ErrorRule(Action.BACKOFF, "upstream_failure"),
        (503, "NotEnoughResources"): ErrorRule(Action.BACKOFF, "not_enough_resources"),
        (504, "UpstreamTimeout"): ErrorRule(Action.BACKOFF, "upstream_timeout"),
        403: ErrorRule(Action.REAUTH, "forbidden"),
        404: ErrorRule(Action.FAIL, "xrpc_not_supported"),  # not a PDS, or not this method
    }

    #: What a failed ``refreshSession`` means (its own table: there an
    #: ExpiredToken is the *refresh* token, revoked or expired, so no refresh
    #: can help). Anything not named: the status's default rule.
    REFRESH_ERRORS = {
        (400, "ExpiredToken"): ErrorRule(Action.REAUTH, "refresh_token_revoked"),
        (401, "ExpiredToken"): ErrorRule(Action.REAUTH, "refresh_token_revoked"),
        (400, "InvalidToken"): ErrorRule(Action.REAUTH, "refresh_token_invalid"),
        (401, "InvalidToken"): ErrorRule(Action.REAUTH, "refresh_token_invalid"),
        (401, "AuthenticationRequired"): ErrorRule(Action.REAUTH, "refresh_unauthorized"),
        (401, "AuthMissing"): ErrorRule(Action.FAIL, "auth_missing"),
        (401, "AccountTakedown"): ErrorRule(Action.REAUTH, "account_takedown", tell_user=True),
        # "Could not find user info for account": the account behind the session is gone
        (400, "InvalidRequest"): ErrorRule(Action.REAUTH, "account_not_found"),
        (429, "RateLimitExceeded"): ErrorRule(Action.WAIT, "rate_limited"),
    }

    # -- the profile: the size of each relation -----------------------------------
    def profile_call(self, account_id):
        return HttpCall("GET", self.xrpc(PROFILE), {"actor": account_id})

    def parse_size(self, body, relation: str | None = None):
        # optional in the schema: None when the AppView leaves it out
        key = _RELATIONS[relation or "followers"][2]
        return int_or_none(body.get(key)) if isinstance(body, dict) else None

    def account_uid(self, body, account_id):
        return str(body["did"])  # handles change; the DID is the stable key

    # -- pages: cursor "<relation>:<the answer's cursor>", "<relation>:" first -----
    def first_cursor(self, account_id, relation: str | None = None):
        relation = relation or "followers"
        if relation not in _RELATIONS:
            raise ValueError(f"bluesky has no relation {relation!r}")
        return f"{relation}:"

    def page_call(self, account_id, cursor):
        relation, _, token = cursor.partition(":")
        method = _RELATIONS[relation or "followers"][0]
        # the limit is always sent (the spec asks for parameters with a default)
        params = {"actor": account_id, "limit": self.PAGE_SIZE}
        if token:
            params["cursor"] = token
        return HttpCall("GET", self.xrpc(method), params)

    def sized(self, call, most):
        # limit is 1-100 (app.bsky.graph.getFollowers lexicon)
        if "limit" not in call.params:
            return None
        asked = int(call.params["limit"])  # never more than the call asked
        params = {**call.params, "limit": max(1, min(most, asked, self.PAGE_SIZE))}
        return HttpCall(call.method, call.url, params, call.headers)

    def parse_page(self, body, headers, cursor):
        relation, _, token = cursor.partition(":")
        key = _RELATIONS[relation or "followers"][1]
        items = (body.get(key) or []) if isinstance(body, dict) else []
        connections = [
            (str(item["did"]), str(item.get("handle") or ""))
            for item in items
            if isinstance(item, dict) and item.get("did")
        ]
        # Absent at the end. A full last page still has one (the next answer
        # is then empty, without one); a cursor repeated would loop forever.
        nxt = body.get("cursor") if isinstance(body, dict) else None
        nxt = f"{relation}:{nxt}" if isinstance(nxt, str) and nxt and nxt != token else None
        return Page(connections, next_cursor=nxt, items=len(items))

    # -- session refresh ----------------------------------------------------------
    def refresh_call(self, refresh_token: str) -> HttpCall:
        """``POST …/com.atproto.server.refreshSession``, authenticated by the refresh JWT."""
        return HttpCall(
            "POST", self.xrpc(REFRESH_SESSION), headers={"Authorization": f"Bearer {refresh_token}"}
        )

    def parse_refresh(self, body) -> dict:
        """The new session: both tokens (the refresh token rotates) and the access expiry."""
        if not isinstance(body, dict) or not body.get("accessJwt") or not body.get("refreshJwt"):
            raise ValueError("refreshSession answer without accessJwt and refreshJwt")
        return {
            "access_token": body["accessJwt"],
            "refresh_token": body["refreshJwt"],
            "expires_at": jwt_expiry(body["accessJwt"]),
        }

    # -- errors and quota ---------------------------------------------------------
    def error_key(self, status, body, headers):
        name = body.get("error") if isinstance(body, dict) else None
        return (status, name) if isinstance(name, str) else status

    def error_keys(self, status, body, headers):
        key = self.error_key(status, body, headers)
        keys = [key, status]
        if key == (400, "InvalidRequest") and _says_not_found(body):
            # "Profile not found", "Actor not found: <actor>": the name alone
            # also covers our own bad parameters, so only here the text decides
            keys.insert(0, (400, "InvalidRequest", "not_found"))
        return keys

    def parse_reset(self, value):
        # Quirk: the server floors the reset to whole seconds; the window
        # really ends up to one second later.
        reset = int_or_none(value)
        return float(reset + 1) if reset is not None else None

    def read_reset(self, value):
        return parse_epoch(value) + 1  # floored to whole seconds, as parse_reset says

    def xrpc(self, method: str) -> str:
        return self.url(f"/xrpc/{method}")


def _says_not_found(body) -> bool:
    message = body.get("message") if isinstance(body, dict) else None
    return isinstance(message, str) and "not found" in message.lower()
