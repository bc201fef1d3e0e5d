"""Facebook Graph API: a user's friends (who also use the app), chained by cursor.

Docs: https://developers.facebook.com/docs/graph-api/reference/user/friends/,
https://developers.facebook.com/docs/graph-api/results (cursor paging),
https://developers.facebook.com/docs/graph-api/guides/error-handling and
https://developers.facebook.com/docs/graph-api/overview/rate-limiting

Errors are classified by ``error.code`` / ``error_subcode`` only: the same
bad-token condition arrives with many different messages and HTTP statuses
(190 comes as 400, 4 as 403), so neither the status nor the message decides.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit

from providers.errors import Action, ErrorRule
from providers.provider import Auth, HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, RateLimitInfo, int_or_none

VERSION = "v19.0"
FIRST = "after:"  # the first page: no cursor
#: query parameters of a ``paging.next`` URL that are credentials, never kept in a cursor
SECRET_PARAMS = {"access_token", "appsecret_proof"}

_BAD_TOKEN = ErrorRule(Action.REAUTH, "invalid_token")
_PERMISSION = ErrorRule(Action.REAUTH, "permission_denied")

#: What Facebook sends → what we do. Key: (error.code, error_subcode), then error.code.
ERRORS = {
    1: ErrorRule(Action.BACKOFF, "unknown_error"),
    2: ErrorRule(Action.BACKOFF, "service_unavailable"),
    4: ErrorRule(Action.WAIT, "app_rate_limit"),  # the app's budget (x-app-usage)
    17: ErrorRule(Action.WAIT, "user_rate_limit"),  # this user's rolling hour
    32: ErrorRule(Action.WAIT, "page_rate_limit"),
    613: ErrorRule(Action.WAIT, "custom_rate_limit"),
    341: ErrorRule(Action.WAIT, "application_limit"),
    368: ErrorRule(Action.WAIT, "policy_block"),  # long: see LONG_WAIT_S
    10: _PERMISSION,
    **dict.fromkeys(range(200, 300), _PERMISSION),  # 200-299: permission removed
    102: ErrorRule(Action.REAUTH, "session_invalid"),
    104: ErrorRule(Action.REAUTH, "token_required"),  # no usable token was sent
    803: ErrorRule(Action.SKIP, "alias_not_found"),  # the user id names nobody
    190: _BAD_TOKEN,  # invalid or expired, no subcode
    (190, 458): ErrorRule(Action.REAUTH, "app_not_installed"),
    (190, 459): ErrorRule(Action.REAUTH, "user_checkpointed", tell_user=True),
    (190, 460): ErrorRule(Action.REAUTH, "password_changed"),
    (190, 463): ErrorRule(Action.REAUTH, "token_expired"),  # no refresh token exists
    (190, 464): ErrorRule(Action.REAUTH, "unconfirmed_user", tell_user=True),
    (190, 467): ErrorRule(Action.REAUTH, "invalid_access_token"),
    (190, 493): ErrorRule(Action.REAUTH, "inactive_user"),
    # Bad parameter, including an expired paging cursor: on a cursor page,
    # restart the pagination once, then FAIL (ProfileTask and a first page FAIL).
    100: ErrorRule(Action.RESTART, "cursor_expired"),
    # "Unsupported get request. Object ... does not exist": the account is gone.
    (100, 33): ErrorRule(Action.SKIP, "object_not_found"),
    # Any other code: retry later if Facebook marks it is_transient, else
    # report it (FAIL, to Sentry) so the table learns it.
    "is_transient": ErrorRule(Action.BACKOFF, "transient_error"),
    "unknown_code": ErrorRule(Action.FAIL, "unknown_error_code"),
}
#: 368 "temporarily blocked for policy" states no end: wait long before trying again.
LONG_WAIT_S = 3600.0


class Facebook(Provider):
    NAME = "facebook"
    API_URL = "https://graph.facebook.com"
    RELATIONS = ("friends",)
    QUOTAS = (
        # app budget = 200 calls × daily active users per hour (here: 100 users)
        QuotaLimit("token", 200, 3600, adaptive=True),
        QuotaLimit("app", 20000, 3600, adaptive=True),
    )
    DOCS = "https://developers.facebook.com/docs/graph-api/reference/user/friends/"
    # A recorded paging.next asks for limit=5000; larger pages save calls from
    # the app-wide budget (200 calls x daily active users per hour).
    PAGE_SIZE = 5000
    PAGINATION = Pagination.CURSOR
    # Quirk: only friends who use the app are listed, filtered per page, so
    # pages are short, one-item or even empty and still say "next"; only the
    # page-count guard (from summary.total_count) bounds the chain.
    ONE_ITEM_RUN_LIMIT = None
    RATE_HEADER_SCOPES = ("app",)  # x-app-usage is the app's share of its rolling hour
    # No reset is ever stated (x-app-usage is a percentage of a rolling hour).
    WAIT_FLOOR_SECONDS = 300.0
    AUTH = Auth.OAUTH2  # long-lived user tokens; Facebook has no refresh_token grant
    ERRORS = ERRORS

    def friends_url(self, account_id: str) -> str:
        return self.url(f"/{VERSION}/{self.segment(account_id)}/friends")

    def profile_call(self, account_id):
        # limit=0: only summary.total_count, no friends
        return HttpCall("GET", self.friends_url(account_id), {"limit": 0, "summary": "total_count"})

    def parse_size(self, body, relation=None):
        summary = body.get("summary") or (body.get("friends") or {}).get("summary") or {}
        return int_or_none(summary.get("total_count"))

    def account_uid(self, body, account_id):
        # the app-scoped user id: the /me?fields=friends form names it, the edge does not
        return str(body.get("id") or account_id) if isinstance(body, dict) else account_id

    def first_cursor(self, account_id, relation=None):
        return FIRST

    def page_call(self, account_id, cursor):
        params = {"limit": self.PAGE_SIZE, "summary": "total_count"}
        kind, _, value = cursor.partition(":")
        value = value.partition("#")[0]  # "#n": the n-th ask at this spot (see parse_page)
        if kind == "after" and value:
            params["after"] = value
        elif kind == "next":
            # A next URL without an after cursor (offset style): its own
            # parameters, the credential goes in the header as always.
            path, _, query = value.partition("?")
            return HttpCall("GET", self.origin + path, dict(parse_qsl(query)))
        return HttpCall("GET", self.friends_url(account_id), params)

    def parse_page(self, body, headers, cursor):
        connections = [
            (str(friend["id"]), friend.get("name", "")) for friend in body.get("data", [])
        ]
        paging = body.get("paging") or {}
        total = int_or_none((body.get("summary") or {}).get("total_count"))
        # Quirk: a page can be empty, or short, and still have next; stop only without it.
        nxt = self.next_cursor(paging)
        here, _, asked = cursor.partition("#")
        if nxt is not None and nxt == here and not connections:
            # ... and an empty page's next may point right back where it was: ask
            # again under a new name (the store refuses a repeated cursor); the
            # page-count guard bounds how often.
            nxt = f"{here}#{int(asked or 1) + 1}"
        return Page(connections, next_cursor=nxt, total=total)

    def next_cursor(self, paging: dict) -> str | None:
        """Where ``paging.next`` points, without its access token.

        ``paging.next`` embeds the user's access token: a cursor travels in a
        Celery message and the delayed set, so only its ``after`` cursor is
        kept and the URL is rebuilt (the token goes in the header).
        """
        nxt = paging.get("next")
        if not nxt:
            return None
        params = dict(parse_qsl(urlsplit(nxt).query))
        after = params.get("after") or (paging.get("cursors") or {}).get("after")
        if after:
            return f"after:{after}"
        relative = self.relative(nxt)
        if relative is None:
            return None  # another host: never send it the token
        path, _, _ = relative.partition("?")
        kept = {k: v for k, v in params.items() if k not in SECRET_PARAMS}
        return f"next:{path}?{urlencode(kept)}"

    def rate_info(self, headers):
        usage = _usage_percent(headers.get("x-app-usage"))
        regain = _regain_seconds(headers.get("x-business-use-case-usage"))
        return RateLimitInfo(usage_percent=usage, retry_after=regain)

    def error_keys(self, status, body, headers):
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return [status]  # not a Graph error at all (a proxy's HTML page)
        code, subcode = error["code"], error.get("error_subcode")
        keys = [(code, subcode), code] if subcode is not None else [code]
        return keys + (["is_transient"] if error.get("is_transient") else []) + ["unknown_code"]

    def retry_at(self, rule, headers, now):
        regain = _regain_seconds(headers.get("x-business-use-case-usage"))
        if regain:
            return now + regain
        if rule.kind == "policy_block":
            return now + LONG_WAIT_S
        return super().retry_at(rule, headers, now)

    def error_message(self, body):
        error = body.get("error") if isinstance(body, dict) else None
        return str(error.get("message", ""))[:200] if isinstance(error, dict) else ""


def _usage_percent(raw) -> float | None:
    """``x-app-usage: {"call_count":28,"total_time":25,"total_cputime":25}`` → 28."""
    try:
        usage = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None
    values = [v for v in usage.values() if isinstance(v, (int, float))]
    return float(max(values)) if values else None


def _regain_seconds(raw) -> float | None:
    """``x-business-use-case-usage``: the longest ``estimated_time_to_regain_access`` (minutes)."""
    try:
        usage = json.loads(raw) if raw else None
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access") or 0
        for entries in (usage or {}).values()
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    longest = max(minutes, default=0)
    return longest * 60.0 if longest else None
