"""Mastodon: an account's followers and following, paged only by the ``Link`` header.

Docs: https://docs.joinmastodon.org/methods/accounts/#followers,
https://docs.joinmastodon.org/api/guidelines/#pagination,
https://docs.joinmastodon.org/api/rate-limits/ and
https://docs.joinmastodon.org/entities/Error/

``base_url`` is the account's instance: the login's ``instance``, else
``MASTODON_API_URL`` (CONTRACT, "Federated providers").
"""

from __future__ import annotations

import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from providers.announced import AnnouncedRule
from providers.announced import parse_iso8601 as read_iso8601
from providers.errors import Action, ErrorRule
from providers.pagination import parse_link_header
from providers.provider import Auth, HttpCall, Page, Pagination, Provider
from providers.ratelimits import QuotaLimit, int_or_none

#: the query parameters that make a request count against the paging throttle
PAGING_PARAMS = ("page", "max_id", "min_id", "since_id")


def parse_iso8601(value) -> float | None:
    """Quirk: ``X-RateLimit-Reset`` is ``2026-08-01T13:50:00.104512Z``, not epoch seconds."""
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


class Mastodon(Provider):
    NAME = "mastodon"
    API_URL = "https://mastodon.social"
    RELATIONS = ("followers", "following")
    QUOTAS = (QuotaLimit("token", 300, 300),)  # 300 requests / 5 min per token
    DOCS = "https://docs.joinmastodon.org/methods/accounts/#followers"
    PAGE_SIZE = 80  # limit: default 40, max 80
    # newest first by follow id; rel="prev" (since_id) reads only newer followers
    INCREMENTAL = "since"
    # Quirk: only the Link header pages (rel="next" carries max_id, a follow
    # id, not an account id): follow it exactly as given, on our origin only.
    PAGINATION = Pagination.LINK
    RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    AUTH = Auth.OAUTH2  # app tokens do not expire and have no refresh
    # every instance is its own server: its own accounts, tokens, limits and outages
    FEDERATED = True
    # an account id is the instance's own row id ("109…" on one server is someone
    # else on another): a linked account is known by (instance, id)
    ACCOUNT_IDS_PER_INSTANCE = True
    # Overlapping limits (config/initializers/rack_attack.rb), windows aligned to
    # wall-clock multiples of their period, and one set of headers for "the one you
    # are closest to exceeding". Each instance may change them all (the headers say).
    # throttle_per_token_api is 300 / 5 min per *token*: netsync holds one token per
    # account, so it is kept per account here (a re-linked token shares its
    # predecessor's count: never more calls, at worst a few fewer).
    ANNOUNCED_RULES = (
        AnnouncedRule(300, 300, "account", told="tightest", aligned=True),
        # throttle_authenticated_api: 1,500 / 5 min per user
        AnnouncedRule(1500, 300, "account", told="tightest", aligned=True),
        # throttle_authenticated_paging: 300 / 15 min per user for any request with
        # page, max_id, min_id or since_id ("to limit scraping", mastodon#13098):
        # at 80 per page it, not the 300 / 5 min, bounds a big sync
        AnnouncedRule(300, 900, "account", "paging", told="tightest", aligned=True),
    )

    #: key: HTTP status (Mastodon errors are only {"error": "..."})
    ERRORS = {
        401: ErrorRule(Action.REAUTH, "invalid_token"),
        # The account we read is the user's own: a 403 means their login is
        # disabled or the token lacks the scope. They must act: tell them.
        403: ErrorRule(Action.REAUTH, "forbidden", tell_user=True),
        404: ErrorRule(Action.SKIP, "not_found"),
        410: ErrorRule(Action.SKIP, "gone"),
        429: ErrorRule(Action.WAIT, "rate_limited"),  # until X-RateLimit-Reset
    }

    def profile_call(self, account_id):
        return HttpCall("GET", self.url(f"/api/v1/accounts/{self.segment(account_id)}"))

    def parse_size(self, body, relation=None):
        return int_or_none(body.get(f"{self.relation_or_default(relation)}_count"))

    def first_cursor(self, account_id, relation=None):
        relation = self.relation_or_default(relation)
        return f"{self.base_path}/api/v1/accounts/{self.segment(account_id)}/{relation}?limit={self.PAGE_SIZE}"

    def account_uid(self, body, account_id):
        return str(body["id"])

    def page_call(self, account_id, cursor):
        return HttpCall("GET", self.origin + cursor)

    def parse_page(self, body, headers, cursor):
        connections = [(str(account["id"]), account.get("acct", "")) for account in body]
        links = parse_link_header(headers.get("link", ""))
        # An empty page has no Link at all; a single page only rel="prev".
        nxt = self.relative(links["next"]) if "next" in links else None
        # rel="prev" carries since_id: the followers newer than this page's newest. Read
        # on with min_id (the page just above it, not the newest ones) so a head of
        # several pages leaves no gap; the marker is what the next sync starts above.
        prev = self.relative(links["prev"]) if "prev" in links else None
        marker = None
        if prev is not None:
            marker = self.query_param(prev, "since_id") or self.query_param(prev, "min_id")
        newer = None
        if marker is not None:
            path, _, query = prev.partition("?")
            params = [(k, v) for k, v in parse_qsl(query) if k not in ("since_id", "min_id")]
            newer = f"{path}?{urlencode([*params, ('min_id', marker)])}"
        return Page(connections, next_cursor=nxt, newer_cursor=newer, head_marker=marker)

    def head_cursor(self, account_id, relation, head):
        # only the followers newer than the newest one the last sync saw
        return self.with_query(self.first_cursor(account_id, relation), min_id=head)

    def page_anomaly(self, page, cursor, expected_total):
        # Quirk: hidden networks answer [] rather than an error. An empty first
        # page of an account that has followers is hidden, not empty.
        first = not any(f"{name}=" in cursor for name in ("max_id", "min_id", "since_id"))
        if first and not page.connections and not page.followups and expected_total:
            return "hidden_network"
        return ""

    def parse_reset(self, value):
        return parse_iso8601(value)

    def read_reset(self, value):
        return read_iso8601(value)

    def is_paging(self, call):
        # the paging throttle's condition: any of these parameters in the query
        query = dict(parse_qsl(urlsplit(call.url).query))
        query.update({k: str(v) for k, v in call.params.items()})
        return any(name in query for name in PAGING_PARAMS)
