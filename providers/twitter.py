"""Twitter / X API v2: followers and following of a user, chained by ``pagination_token``.

Docs: https://developer.x.com/en/docs/x-api/users/follows/api-reference/get-users-id-followers,
https://developer.x.com/en/docs/x-api/rate-limits,
https://developer.x.com/en/support/x-api/error-troubleshooting and
https://developer.x.com/en/docs/authentication/oauth-2-0/user-access-token

Auth: OAuth 2.0 user context (refreshable at ``POST /2/oauth2/token`` with
``offline.access``), or OAuth 1.0a when the credential carries a
``token_secret`` (signed with the app's consumer key, never refreshed).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from providers.announced import AnnouncedRule
from providers.errors import Action, ErrorRule
from providers.provider import Auth, HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, int_or_none

FIRST = "token:"  # the first followers page: no pagination_token
FOLLOWING_KIND = "following"
FOLLOWING_FIRST = "following:"  # /2/users/:id/following pages: "following:<next_token>"


class Twitter(Provider):
    NAME = "twitter"
    API_URL = "https://api.twitter.com"
    RELATIONS = ("followers", "following")
    QUOTAS = (QuotaLimit("token", 15, 900),)  # followers/following, user context
    DOCS = "https://developer.x.com/en/docs/x-api/users/follows"
    PAGE_SIZE = 1000  # max_results: 1-1000
    # Newest first (documented for v1.1's followers/ids, not promised for v2): a
    # re-sync reads from the top until someone known, its first page sized to the
    # growth (X bills every user returned)
    INCREMENTAL = "head"
    PAGINATION = Pagination.CURSOR
    RATE_LIMIT_HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")
    # X counts per endpoint and per user (user context) in 15-minute windows; the
    # 2026 table gives followers and following 300 / 15 min per user (docs.x.com
    # fundamentals/rate-limits, "Follows lookup"). Older apps were told 15 / 15 min:
    # the headers say which applies.
    ANNOUNCED_RULES = (AnnouncedRule(300, 900, "endpoint"),)
    # pay-per-use since 2026-01-16: "Following/Followers: Read $0.010 per resource"
    # and "User: Read $0.010 per resource" (the profile call); de-duplication within
    # a UTC day is a "soft guarantee", so netsync counts every resource returned
    PRICE_USD = 0.010
    # Quirk: "result_count may be below max_results mid-stream" (suspended and
    # protected accounts are filtered out per page), so short and one-item
    # pages prove nothing here; the page-count guard still bounds the chain.
    ONE_ITEM_RUN_LIMIT = None
    WAIT_FLOOR_SECONDS = 60.0
    AUTH = Auth.OAUTH1_OR_OAUTH2
    TOKEN_URL = "https://api.twitter.com/2/oauth2/token"
    TOKEN_PATH = "/2/oauth2/token"
    TOKEN_CLIENT_AUTH = "basic"  # confidential clients: HTTP Basic with client id and secret

    #: key: (HTTP status, v1.1 error code); v2 problem JSON has no code → (status, None);
    #: problems inside a 200 → ("problem", type). 401 89 is REFRESH: an OAuth 1.0a token
    #: has nothing to refresh with, so for it REFRESH is REAUTH at once.
    ERRORS = {
        (429, 88): ErrorRule(Action.WAIT, "rate_limited"),  # until x-rate-limit-reset
        (429, None): ErrorRule(Action.WAIT, "rate_limited"),  # same, as problem JSON
        (401, 32): ErrorRule(Action.REAUTH, "could_not_authenticate"),
        (401, 89): ErrorRule(Action.REFRESH, "invalid_or_expired_token"),
        (401, None): ErrorRule(Action.REFRESH, "unauthorized"),  # v2 says no more than this
        (403, 326): ErrorRule(Action.REAUTH, "account_locked", tell_user=True),
        (403, 63): ErrorRule(Action.SKIP, "user_suspended"),
        (400, 215): ErrorRule(Action.FAIL, "bad_authentication_data"),
        (503, 130): ErrorRule(Action.BACKOFF, "over_capacity"),
        (500, 131): ErrorRule(Action.BACKOFF, "internal_error"),
        ("problem", "resource-not-found"): ErrorRule(Action.SKIP, "not_found"),
        ("problem", "not-authorized-for-resource"): ErrorRule(Action.SKIP, "not_authorized"),
    }

    def profile_call(self, account_id):
        return HttpCall(
            "GET",
            self.url(f"/2/users/{self.segment(account_id)}"),
            {"user.fields": "public_metrics"},
        )

    def parse_size(self, body, relation=None):
        data = body.get("data") if "data" in body else body  # v2, else a v1.1 user object
        metrics = data.get("public_metrics") or data
        # v1.1 calls following "friends_count"
        names = {
            "followers": ("followers_count",),
            "following": ("following_count", "friends_count"),
        }
        for name in names[self.relation_or_default(relation)]:
            if name in metrics:
                return int_or_none(metrics.get(name))
        return None

    def first_cursor(self, account_id, relation=None):
        return FIRST if self.relation_or_default(relation) == "followers" else FOLLOWING_FIRST

    def account_uid(self, body, account_id):
        data = body.get("data") if "data" in body else body
        return str(data.get("id_str") or data["id"])

    def page_call(self, account_id, cursor):
        params = {"max_results": self.PAGE_SIZE}
        kind, _, token = cursor.partition(":")
        if token:
            params["pagination_token"] = token
        relation = "following" if kind == FOLLOWING_KIND else "followers"
        return HttpCall("GET", self.url(f"/2/users/{self.segment(account_id)}/{relation}"), params)

    def parse_page(self, body, headers, cursor):
        if "ids" in body or "users" in body:
            return self._parse_v1(body)
        users = body.get("data") or []
        connections = [(str(user["id"]), user.get("username", "")) for user in users]
        token = (body.get("meta") or {}).get("next_token")  # absent on the last page
        problems = tuple(_problem_type(e) for e in body.get("errors") or [])
        kind = cursor.partition(":")[0] or "token"  # the next page pages the same relation
        return Page(
            connections, next_cursor=f"{kind}:{token}" if token else None, problems=problems
        )

    @staticmethod
    def _parse_v1(body):
        """v1.1 ``followers/list`` and ``friends/ids``: ids are ints beyond 2**53, use id_str."""
        if "users" in body:
            connections = [
                (user.get("id_str") or str(user["id"]), user.get("screen_name", ""))
                for user in body["users"]
            ]
        else:
            connections = [(str(i), "") for i in body["ids"]]
        nxt = str(body.get("next_cursor_str") or body.get("next_cursor") or "0")
        return Page(connections, next_cursor=None if nxt == "0" else f"cursor:{nxt}")

    def sized(self, call, most):
        # max_results is 1-1000 (openapi.json), asked page by page: a page asked
        # smaller costs less (the budget left buys a page, not none)
        if "max_results" not in call.params:
            return None
        # never more than the call asked (a head's first page is sized to the growth)
        asked = int(call.params["max_results"])
        params = {**call.params, "max_results": max(1, min(most, asked, self.PAGE_SIZE))}
        return HttpCall(call.method, call.url, params, call.headers)

    def billed_resources(self, body, kind):
        # "$0.010 per resource": every user a follows lookup or a user lookup returns
        if not isinstance(body, dict):
            return 0
        data = body.get("data")
        if kind == "profile":
            return int(isinstance(data, dict))
        return len(data) if isinstance(data, list) else 0

    def endpoint(self, call):
        # /2/users/<id>/followers → users/:id/followers: one bucket per endpoint
        parts = urlsplit(call.url).path.rstrip("/").split("/")
        if len(parts) >= 4 and parts[-3] == "users":
            return f"users/:id/{parts[-1]}"
        return "users/:id" if len(parts) >= 3 and parts[-2] == "users" else "/".join(parts)

    def is_error_body(self, body):
        # A 200 holding only errors[] (an unknown or suspended user): no data at all.
        return (
            isinstance(body, dict)
            and bool(body.get("errors"))
            and "data" not in body
            and "meta" not in body
        )

    def error_key(self, status, body, headers):
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and isinstance(errors[0], dict):
            first = errors[0]
            if isinstance(first.get("code"), int):  # v1.1: {"errors": [{"code": 88, ...}]}
                return (status, first["code"])
            if 200 <= status < 300:
                return ("problem", _problem_type(first))
        return (status, None)  # v2 problem JSON: {"title", "type", "status", "detail"}

    def error_message(self, body):
        if isinstance(body, dict) and body.get("errors") and isinstance(body["errors"][0], dict):
            first = body["errors"][0]
            return str(first.get("message") or first.get("detail") or "")[:200]
        return super().error_message(body)


def _problem_type(error: dict) -> str:
    """``https://api.twitter.com/2/problems/resource-not-found`` → ``resource-not-found``."""
    return str(error.get("type", "")).rstrip("/").rpartition("/")[2] or "unknown"
