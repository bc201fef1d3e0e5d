"""GitHub REST: followers and following of a user (``/users/{login}/followers``, ``/following``).

Docs: https://docs.github.com/en/rest/users/followers and
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
"""

from __future__ import annotations

from providers.announced import AnnouncedRule
from providers.errors import Action, ErrorRule
from providers.pagination import parse_link_header
from providers.provider import HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, int_or_none


class GitHub(Provider):
    NAME = "github"
    API_URL = "https://api.github.com"
    RELATIONS = ("followers", "following")
    QUOTAS = (QuotaLimit("token", 5000, 3600),)  # 5,000/h per token
    DOCS = "https://docs.github.com/en/rest/users/followers"
    PAGE_SIZE = 100  # the maximum per_page
    # a login: letters, digits and single inner hyphens, at most 39 characters
    ACCOUNT_ID_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
    # ``Link`` with rel="last" lets page one fan out to every page at once.
    PAGINATION = Pagination.LINK
    RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    WAIT_FLOOR_SECONDS = 60.0  # secondary limit without retry-after: >= 60 s, then doubling
    # The primary limit is pooled per user: "All apps acting for that user plus the
    # user's PATs draw on the same pool", so it is keyed by the provider account
    # (a refreshed or second token shares it). 5,000/h is a personal or user token;
    # other kinds announce 60, 1,000, 12,500 or 15,000 (x-ratelimit-limit replaces
    # it). The follower endpoints count as resource "core".
    ANNOUNCED_RULES = (AnnouncedRule(5000, 3600, "account", resource="core"),)
    RATE_USED_HEADER = "x-ratelimit-used"
    RATE_RESOURCE_HEADER = "x-ratelimit-resource"
    # secondary limit: "No more than 100 concurrent requests are allowed", REST and
    # GraphQL together
    CONCURRENCY_CAP = 100
    # "Making a conditional request does not count against your primary rate limit
    # if a 304 response is returned and the request was made while correctly
    # authorized with an Authorization header" (best-practices-for-using-the-rest-api)
    NOT_MODIFIED_IS_FREE = True
    # "Most endpoints return an etag header": a re-sync asks each page with
    # If-None-Match, and an unchanged page costs nothing (sync.etag_cache)
    INCREMENTAL = "conditional"

    #: key: (HTTP status, kind of 403/429) or status → what to do
    ERRORS = {
        401: ErrorRule(Action.REAUTH, "bad_credentials"),
        404: ErrorRule(Action.SKIP, "not_found"),
        (403, "primary"): ErrorRule(Action.WAIT, "rate_limited"),
        (429, "primary"): ErrorRule(Action.WAIT, "rate_limited"),
        (403, "secondary"): ErrorRule(Action.WAIT, "secondary_rate_limit"),
        (429, "secondary"): ErrorRule(Action.WAIT, "secondary_rate_limit"),
        403: ErrorRule(Action.FAIL, "forbidden"),
    }

    def profile_call(self, account_id):
        return HttpCall("GET", self.url(f"/users/{self.segment(account_id)}"))

    def parse_size(self, body, relation=None):
        return int(body[self.relation_or_default(relation)])  # "followers" / "following" counts

    def first_cursor(self, account_id, relation=None):
        relation = self.relation_or_default(relation)
        return f"{self.base_path}/users/{self.segment(account_id)}/{relation}?per_page={self.PAGE_SIZE}&page=1"

    def account_uid(self, body, account_id):
        return str(body["id"])  # the numeric id: a login can be renamed and reused

    def page_call(self, account_id, cursor):
        # Follow links exactly as given: they may name another path
        # (/user/<id>/followers) than the one we asked for.
        return HttpCall("GET", self.origin + cursor)

    def parse_page(self, body, headers, cursor):
        connections = [(str(user["id"]), user["login"]) for user in body]
        links = parse_link_header(headers.get("link", ""))
        last = self.relative(links["last"]) if "last" in links else None
        if last is not None:
            # Only page one fans out; the others' rel="next" was already launched.
            if self.query_param(cursor, "page") in (None, "1"):
                last_page = int_or_none(self.query_param(last, "page")) or 1
                fan_out = tuple(self.with_query(last, page=n) for n in range(2, last_page + 1))
                return Page(connections, fan_out=fan_out)
            return Page(connections)
        nxt = self.relative(links["next"]) if "next" in links else None
        return Page(connections, next_cursor=nxt)

    def replayed_page(self, page, cursor, expected_total):
        # The ETag covers the body, not the Link header: page one of a network that
        # grew by a page is still a 304, but its rel="last" moved. Its fan-out then
        # reaches every page the profile's count says there are now.
        if self.query_param(cursor, "page") not in (None, "1") or expected_total is None:
            return page
        pages = -(-expected_total // self.PAGE_SIZE)
        template = page.fan_out[-1] if page.fan_out else cursor
        fan_out = tuple(self.with_query(template, page=n) for n in range(2, pages + 1))
        if len(fan_out) <= len(page.fan_out):
            return page
        return Page(page.connections, fan_out=fan_out, total=page.total)

    def auth_headers(self, credential):
        return {
            "Authorization": f"Bearer {credential.access_token}",
            "Accept": "application/vnd.github+json",
        }

    def error_key(self, status, body, headers):
        if status in (403, 429):
            message = (body or {}).get("message", "") if isinstance(body, dict) else ""
            # The secondary limit was called "abuse detection" until 2021; it
            # may come with only Retry-After and no X-RateLimit-* headers.
            text = message.lower()
            if "secondary rate limit" in text or "abuse detection" in text:
                return (status, "secondary")
            if headers.get("x-ratelimit-remaining") == "0" or "rate limit exceeded" in text:
                return (status, "primary")
            if headers.get("retry-after"):
                return (status, "secondary")
        return status

    def retry_at(self, rule, headers, now):
        info = self.rate_info(headers)
        if info.retry_after is not None:
            return now + info.retry_after
        if rule.action is Action.WAIT and info.reset_at is not None:
            return info.reset_at
        return None
