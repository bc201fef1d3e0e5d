"""LinkedIn: the viewer's 1st-degree connections, paged by ``start``/``count``.

Docs: https://learn.microsoft.com/en-us/linkedin/shared/references/v2/network/connections,
https://learn.microsoft.com/en-us/linkedin/shared/api-guide/concepts/pagination,
https://learn.microsoft.com/en-us/linkedin/shared/api-guide/concepts/error-handling,
https://learn.microsoft.com/en-us/linkedin/shared/api-guide/concepts/rate-limits and
https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens

The size is known up front (``projection=(paging)`` → ``paging.total``), so
every page is launched at once. The retired v1 shape (``_total``,
``values``) parses the same way.
"""

from __future__ import annotations

import datetime

from providers.errors import Action, ErrorRule
from providers.provider import Auth, HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, int_or_none


class LinkedIn(Provider):
    NAME = "linkedin"
    API_URL = "https://api.linkedin.com"
    RELATIONS = ("connections",)
    QUOTAS = (
        # daily limits per member and per app, unpublished: learned
        QuotaLimit("token", 1000, 86400, adaptive=True),
        QuotaLimit("app", 100000, 86400, adaptive=True),
    )
    DOCS = "https://learn.microsoft.com/en-us/linkedin/shared/references/v2/network/connections"
    PAGE_SIZE = 50  # the documented count of a v2 connections page
    # Known size: all pages at once. Quirk (the talk's off-by-one bug: an
    # endless run of one-person pages): pages are planned from paging.total,
    # never chained on what a page says; only a full last page chains one
    # step further, and a page shorter than count ends its chain (the
    # documented end), so the bug costs at most one extra call. Without a
    # total, OFFSET_KNOWN falls back to lanes (providers.pagination).
    PAGINATION = Pagination.OFFSET_KNOWN
    LANES = 4
    AUTH = Auth.OAUTH2
    TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"
    TOKEN_PATH = "/oauth/v2/accessToken"
    TOKEN_CLIENT_AUTH = "body"  # client_id and client_secret as form fields

    #: key: (HTTP status, serviceErrorCode) or status
    ERRORS = {
        (401, 65600): ErrorRule(Action.REFRESH, "invalid_access_token"),  # else REAUTH
        (401, 65601): ErrorRule(Action.REAUTH, "revoked_access_token"),
        (401, 65602): ErrorRule(Action.REFRESH, "expired_access_token"),  # else REAUTH
        (401, "expired"): ErrorRule(
            Action.REFRESH, "expired_access_token"
        ),  # no code, only the message
        401: ErrorRule(Action.REFRESH, "unauthorized"),
        403: ErrorRule(Action.REAUTH, "access_denied"),  # the token lacks r_network: log in again
        404: ErrorRule(Action.SKIP, "not_found"),
        429: ErrorRule(Action.WAIT, "throttled"),  # serviceErrorCode 101; see retry_at
    }

    def connections_url(self, **params) -> str:
        # Rest.li wants its parentheses as they are; requests would not re-encode them.
        query = "&".join(f"{k}={v}" for k, v in {"q": "viewer", **params}.items())
        return self.url(f"/v2/connections?{query}")

    def profile_call(self, account_id):
        return HttpCall("GET", self.connections_url(projection="(paging)"))

    def parse_size(self, body, relation=None):
        paging = body.get("paging") or {}
        return int_or_none(paging.get("total", body.get("_total")))

    def first_cursor(self, account_id, relation=None):
        return self.offset_cursor(0)

    def page_call(self, account_id, cursor):
        start = self.cursor_offset(cursor)
        return HttpCall("GET", self.connections_url(start=start, count=self.PAGE_SIZE))

    def parse_page(self, body, headers, cursor):
        if "elements" in body or "paging" in body:
            items = body.get("elements") or []
            connections = [(item["to"], "") for item in items if item.get("to")]
            total = int_or_none((body.get("paging") or {}).get("total"))
        else:  # v1: {"_total": 2, "values": [...]}, and {"_total": 0} with no values at all
            items = body.get("values") or []
            connections = [(item["id"], _v1_name(item)) for item in items if item.get("id")]
            total = int_or_none(body.get("_total"))
        return Page(connections, total=total, items=len(items))

    def page_anomaly(self, page, cursor, expected_total):
        """A planned page shorter than the total says it must be: people are missing.

        The page's own ``paging.total`` is the live count (a network that
        shrank since the size call shortens its last page legitimately).
        """
        total = page.total if page.total is not None else expected_total
        if total is None or not cursor.startswith("offset:"):
            return ""
        due = min(self.PAGE_SIZE, total - self.cursor_offset(cursor))
        return "short_page" if page.item_count < due else ""

    def request_headers(self):
        return {"X-Restli-Protocol-Version": "2.0.0"}

    def error_key(self, status, body, headers):
        if not isinstance(body, dict):
            return status
        code = body.get("serviceErrorCode")
        if isinstance(code, int):
            return (status, code)
        if status == 401 and "expired" in str(body.get("message", "")).lower():
            return (401, "expired")
        return status

    def retry_at(self, rule, headers, now):
        retry = super().retry_at(rule, headers, now)
        if retry is None and rule.action is Action.WAIT:
            # No rate-limit headers: daily limits reset at midnight UTC.
            return next_utc_midnight(now)
        return retry


def next_utc_midnight(now: float) -> float:
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    midnight = datetime.datetime.combine(
        today + datetime.timedelta(days=1), datetime.time(), datetime.UTC
    )
    return midnight.timestamp()


def _v1_name(person: dict) -> str:
    return " ".join(p for p in (person.get("firstName"), person.get("lastName")) if p)
