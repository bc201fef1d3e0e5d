"""What a provider *is*, as data: endpoints, paging, auth and its error table.

A provider module subclasses ``Provider`` with upper-case class attributes
for the differences and a few small hooks for what cannot be data (how to
read a size, a page, an error). The Celery task classes in
``sync.tasks`` do the rest, the same way for every provider.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from providers import pagination
from providers.announced import (
    AnnouncedRule,
    AnswerReport,
    RateHeaderNames,
    parse_epoch,
    read_rate_headers,
)
from providers.errors import Action, ErrorRule, ProviderError, default_rule
from providers.ratelimits import QuotaLimit, RateLimitInfo, int_or_none

#: every relation a provider may offer (CONTRACT.md "Relations")
RELATION_NAMES = ("followers", "following", "friends", "connections")


class Pagination(enum.Enum):
    #: size known and offsets addressable: launch every page at once
    OFFSET_KNOWN = "offset_known"
    #: opaque cursor: each page launches the next as soon as it has it
    CURSOR = "cursor"
    #: ``Link`` header: with ``rel="last"`` fan out from page one, else chain on ``next``
    LINK = "link"
    #: offsets of unknown size: a window of lanes, an empty page ends its lane
    OFFSET_UNKNOWN = "offset_unknown"


@dataclass(frozen=True)
class HttpCall:
    """One outbound request, described without the user's credential."""

    method: str
    url: str
    params: dict = field(default_factory=dict)
    #: headers of this call only (a session refresh carries its own token here)
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page's connections and where the pagination goes next."""

    connections: list  # [(id as str, handle as str)]
    #: the following page's cursor (chained pagination), if any
    next_cursor: str | None = None
    #: every remaining page's cursor at once (fan-out), if the page tells them
    fan_out: tuple = ()
    #: the total the page states, if it does
    total: int | None = None
    #: items the provider returned, when it differs from the connections kept
    items: int | None = None
    #: per-item problems the provider reported beside the data (Twitter ``errors[]``)
    problems: tuple = ()
    #: the cursor of the connections newer than this page's, if the provider links one
    #: (Mastodon's ``prev``, as ``min_id``: a ``since`` head reads on with it)
    newer_cursor: str | None = None
    #: the provider's "newer than this" marker of this page's newest connection
    #: (Mastodon's follow id), stored as ``networks.head`` for the next ``since`` read
    head_marker: str | None = None

    @property
    def item_count(self) -> int:
        return len(self.connections) if self.items is None else self.items

    @property
    def followups(self) -> list[str]:
        if self.fan_out:
            return list(self.fan_out)
        return [self.next_cursor] if self.next_cursor else []


class Auth(enum.Enum):
    #: a static ``Authorization: Bearer`` header (GitHub)
    BEARER = "bearer"
    #: requests-oauthlib ``OAuth2Session``: expiry checked client-side, refresh where possible
    OAUTH2 = "oauth2"
    #: ``OAuth1Session`` when the credential has a token secret (1.0a), else OAUTH2 (Twitter)
    OAUTH1_OR_OAUTH2 = "oauth1_or_oauth2"
    #: a bearer session token renewed by the provider's own refresh call
    #: (``refresh_call`` / ``parse_refresh``; Bluesky's refreshSession), not OAuth
    SESSION = "session"


class Provider:
    """Base description; subclasses set the constants and hooks."""

    #: name used in URLs, queues, keys and ``<NAME>_API_URL``
    NAME: str = ""
    #: the characters (and length) an account id of this provider may have; checked
    #: with ``re.fullmatch`` before anything is stored (``valid_account_id``), and the
    #: id is still percent-encoded as one path segment (``segment``) in every call
    ACCOUNT_ID_PATTERN: str = r"[A-Za-z0-9_-]{1,64}"
    #: the real API's base URL (``<NAME>_API_URL`` replaces it: a proxy, the simulator)
    API_URL: str = ""
    #: the provider's API documentation
    DOCS: str = ""
    #: the relations it can sync, the default first (``RELATION_NAMES``)
    RELATIONS: tuple = ()
    #: default quota, one limit per scope (``QUOTA_<NAME>`` replaces it)
    QUOTAS: tuple = ()
    #: connections asked for per page (the provider's maximum, to save calls)
    PAGE_SIZE: int = 100
    PAGINATION: Pagination = Pagination.CURSOR
    #: lanes in flight for OFFSET_UNKNOWN paging
    LANES: int = 4
    #: pages allowed beyond ceil(total / PAGE_SIZE) before the page guard stops a sync
    PAGE_SLACK: int = 3
    #: consecutive one-item pages (that still point further) that stop a sync; None: off
    ONE_ITEM_RUN_LIMIT: int | None = 3
    #: error table: key from ``error_keys()`` → rule; see ``providers.errors``
    ERRORS: dict = {}
    #: rows that mean something else on the refresh call (AUTH SESSION), tried before ``ERRORS``
    REFRESH_ERRORS: dict = {}
    #: the scopes the rate-limit headers speak for (None: every scope of the call)
    RATE_HEADER_SCOPES: tuple | None = None
    #: (limit, remaining, reset) header names; None: the provider sends no such headers
    RATE_LIMIT_HEADERS: tuple | None = None
    #: consecutive waits without a stated reset start at this many seconds, doubling
    WAIT_FLOOR_SECONDS: float = 60.0
    #: how calls are authenticated (``sync.oauth``)
    AUTH: Auth = Auth.BEARER
    #: the OAuth2 refresh endpoint on the real service (None: the provider cannot refresh)
    TOKEN_URL: str | None = None
    #: where the refresh endpoint sits under a non-default base URL (a proxy, the simulator)
    TOKEN_PATH: str | None = None
    #: how the client authenticates a refresh: "basic" (HTTP Basic) or "body" (form fields)
    TOKEN_CLIENT_AUTH: str = "body"

    # -- announced limits, concurrency and price (providers.announced, state.announced)
    #: the limits the provider documents and announces (``AnnouncedRule``), all of
    #: one scope: the gate's prior until the provider's headers say otherwise
    ANNOUNCED_RULES: tuple = ()
    #: further announcement headers: used count, resource name, policy (``RateHeaderNames``)
    RATE_USED_HEADER: str | None = None
    RATE_RESOURCE_HEADER: str | None = None
    RATE_POLICY_HEADER: str | None = None
    #: USD the provider bills per resource it returns (``PRICE_<NAME>`` replaces it); 0: free
    PRICE_USD: float = 0.0
    #: most calls in flight at once per provider account (None: no documented cap)
    CONCURRENCY_CAP: int | None = None
    #: an authorized ``304 Not Modified`` does not count against the limit (GitHub)
    NOT_MODIFIED_IS_FREE: bool = False
    #: accounts live on many servers (Mastodon instances, Bluesky PDSes): a login may
    #: name its own (``instance``), and quotas, breakers, pauses and metrics are per server
    FEDERATED: bool = False
    #: an account id is unique only on its instance (Mastodon's are a server's row ids;
    #: Bluesky's DIDs are global): linked accounts are keyed by instance too
    ACCOUNT_IDS_PER_INSTANCE: bool = False
    #: what an incremental sync may read instead of everything (``sync.modes``):
    #: "conditional" (ETags and 304s), "head" (newest first until a known one),
    #: "since" (only what is newer than a stored marker), None (nothing cheaper)
    INCREMENTAL: str | None = None

    def __init__(self, base_url: str, user_supplied: bool = False):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path
        #: the server this object calls, for a federated provider (host[:port][/path],
        #: the name in keys, metrics and ``providers pause --instance``); else None
        self.instance = f"{parts.netloc.lower()}{parts.path}" if self.FEDERATED else None
        #: the URL came from a user (a login, a DID document), not the operator: its
        #: connections go through the public-address guard (``sync.egress``)
        self.user_supplied = user_supplied

    @property
    def scope_name(self) -> str:
        """What breakers, pauses and metrics are kept per: the provider, or for a
        federated one, the provider at this instance (``mastodon@fosstodon.org``)."""
        return self.NAME if self.instance is None else f"{self.NAME}@{self.instance}"

    @classmethod
    def valid_account_id(cls, account_id) -> bool:
        return (
            isinstance(account_id, str)
            and re.fullmatch(cls.ACCOUNT_ID_PATTERN, account_id) is not None
        )

    @staticmethod
    def segment(account_id: str) -> str:
        """An account id as exactly one path segment (``/``, ``?``, ``#``, ``%`` encoded).

        "." and ".." cannot be encoded away (``%2E`` is unreserved: requests and
        servers decode it back), so they are refused outright.
        """
        if account_id in ("", ".", ".."):
            raise ValueError("an account id cannot be an empty or dot path segment")
        return quote(account_id, safe="")

    # -- hooks a provider fills in -------------------------------------------
    def profile_call(self, account_id: str) -> HttpCall:
        raise NotImplementedError

    def parse_size(self, body, relation: str | None = None) -> int | None:
        """The size of ``relation`` (default: the first of ``RELATIONS``) from the profile."""
        raise NotImplementedError

    def first_cursor(self, account_id: str, relation: str | None = None) -> str:
        """Where paging ``relation`` starts; a later cursor carries the relation itself
        (a URL path, a prefix), so ``page_call`` needs only the cursor."""
        raise NotImplementedError

    def account_uid(self, body, account_id: str) -> str | None:
        """The account's stable provider id from the profile answer (the key the
        members lookup matches connections on). Default: the account id itself."""
        return account_id

    def page_call(self, account_id: str, cursor: str) -> HttpCall:
        raise NotImplementedError

    def replayed_page(self, page: Page, cursor: str, expected_total: int | None) -> Page:
        """A page kept from the last sync, reused on a ``304``: where it points may have
        moved even though its body did not (a fan-out sized by the total)."""
        return page

    def head_cursor(self, account_id: str, relation: str | None, head: str | None) -> str:
        """Where an incremental head starts: the newest page (``head``), or the page just
        newer than the stored marker ``head`` (``since``)."""
        return self.first_cursor(account_id, relation)

    def parse_page(self, body, headers, cursor: str) -> Page:
        raise NotImplementedError

    def rate_info(self, headers) -> RateLimitInfo:
        """What the answer's headers say of the quota (``RATE_LIMIT_HEADERS``, ``retry-after``)."""
        retry_after = int_or_none(headers.get("retry-after"))
        retry_after = float(retry_after) if retry_after is not None else None
        if self.RATE_LIMIT_HEADERS is None:
            return RateLimitInfo(retry_after=retry_after)
        limit, remaining, reset = self.RATE_LIMIT_HEADERS
        return RateLimitInfo(
            limit=int_or_none(headers.get(limit)),
            remaining=int_or_none(headers.get(remaining)),
            reset_at=self.parse_reset(headers.get(reset)),
            retry_after=retry_after,
        )

    def parse_reset(self, value) -> float | None:
        """The reset header as epoch seconds (most providers send them so)."""
        reset = int_or_none(value)
        return float(reset) if reset is not None else None

    def error_key(self, status: int, body, headers):
        """What to look up in ``ERRORS``: by default the HTTP status."""
        return status

    def error_keys(self, status: int, body, headers) -> list:
        """Keys to try in ``ERRORS``, most specific first; the default rule follows."""
        return [self.error_key(status, body, headers), status]

    def auth_headers(self, credential) -> dict:
        return {"Authorization": f"Bearer {credential.access_token}"}

    def request_headers(self) -> dict:
        """Headers every call sends besides the credential (API versions)."""
        return {}

    def page_anomaly(self, page: Page, cursor: str, expected_total: int | None) -> str:
        """A reason to flag the sync ``partial`` for what this page says ("" if none)."""
        return ""

    # -- announced limits, concurrency and price -------------------------------
    def rate_header_names(self) -> RateHeaderNames | None:
        """The headers that announce a limit (``RATE_LIMIT_HEADERS`` and the extras)."""
        if self.RATE_LIMIT_HEADERS is None:
            return None
        limit, remaining, reset = self.RATE_LIMIT_HEADERS
        return RateHeaderNames(
            limit,
            remaining,
            reset,
            used=self.RATE_USED_HEADER,
            resource=self.RATE_RESOURCE_HEADER,
            policy=self.RATE_POLICY_HEADER,
        )

    def announced(self, headers, now: float) -> AnswerReport:
        """What the answer's headers announce (unreadable ones listed, never raised)."""
        return read_rate_headers(headers, self.rate_header_names(), self.read_reset, now)

    def read_reset(self, value: str) -> float:
        """The reset header as epoch seconds; raises ValueError when it does not parse."""
        return parse_epoch(value)

    def is_paging(self, call: HttpCall) -> bool:
        """Whether the provider counts this call as paging (rules ``applies_to="paging"``)."""
        return False

    def endpoint(self, call: HttpCall) -> str:
        """The endpoint a call counts against, for rules of scope ``endpoint``."""
        return urlsplit(call.url).path or "/"

    def worst_resources(self, kind: str) -> int:
        """The most resources one call of ``kind`` (``profile`` or ``page``) may be billed."""
        return self.PAGE_SIZE if kind == "page" else 1

    def sized(self, call: HttpCall, most: int) -> HttpCall | None:
        """``call`` asking for at most ``most`` resources, or None when it cannot ask for
        fewer than its page size (the spend budget then reserves its whole worst case)."""
        return None

    def billed_resources(self, body, kind: str) -> int:
        """How many resources the provider bills an answer of ``kind`` (``profile``,
        ``page``) for, at ``PRICE_<NAME>``: by default a page's items, one profile."""
        if kind == "profile":
            return int(body is not None)
        return len(body) if isinstance(body, list) else 0

    # -- shared behaviour -----------------------------------------------------
    def initial_cursors(
        self, account_id: str, size: int | None, relation: str | None = None
    ) -> list[str]:
        """The cursors round two starts with (see ``providers.pagination``)."""
        return pagination.initial_cursors(self, account_id, size, relation)

    def relation_or_default(self, relation: str | None) -> str:
        if relation is None:
            return self.RELATIONS[0]
        if relation not in self.RELATIONS:
            raise ValueError(f"{self.NAME} has no relation {relation!r}; one of {self.RELATIONS}")
        return relation

    @staticmethod
    def offset_cursor(offset: int) -> str:
        return pagination.offset_cursor(offset)

    @staticmethod
    def cursor_offset(cursor: str) -> int:
        return pagination.cursor_offset(cursor)

    def page_limit(self, expected_total: int | None) -> int | None:
        """Most pages a sync of this size may take before a guard stops it."""
        return pagination.page_limit(expected_total, self.PAGE_SIZE, self.PAGE_SLACK)

    def token_url(self) -> str | None:
        """The refresh endpoint: the real one, or beside a configured non-default base URL."""
        if self.TOKEN_URL is None:
            return None
        if self.TOKEN_PATH is None or self.base_url == self.API_URL.rstrip("/"):
            return self.TOKEN_URL
        return self.base_url + self.TOKEN_PATH

    def quota_scopes(self) -> tuple[str, ...]:
        """The scopes a call counts against: those of the default quota."""
        return tuple(limit.scope for limit in self.QUOTAS)

    def classify(
        self, status: int, body, headers, now: float, tables: tuple = ()
    ) -> ProviderError | None:
        """None for a good answer; else the first rule for it in ``tables``, then ``ERRORS``."""
        if 200 <= status < 300 and not self.is_error_body(body):
            return None
        if status == 304:
            # only ever the answer to a conditional request we sent (RFC 9110 15.4.5):
            # the page is what we hold for it (``sync.etag_cache``)
            return None
        keys = self.error_keys(status, body, headers)
        rule = next(
            (table[key] for table in (*tables, self.ERRORS) for key in keys if key in table), None
        ) or default_rule(status)
        return ProviderError(
            rule, status, self.error_message(body), self.retry_at(rule, headers, now)
        )

    def classify_refresh(self, status: int, body, headers, now: float) -> ProviderError | None:
        """``classify`` for the answer to ``refresh_call``: ``REFRESH_ERRORS`` first."""
        return self.classify(status, body, headers, now, tables=(self.REFRESH_ERRORS,))

    def refresh_call(self, refresh_token: str) -> HttpCall:
        """AUTH SESSION: the call that renews a session with its refresh token."""
        raise NotImplementedError

    def parse_refresh(self, body) -> dict:
        """AUTH SESSION: ``{"access_token", "refresh_token", "expires_at"}`` from its answer."""
        raise NotImplementedError

    def is_error_body(self, body) -> bool:
        """Some providers report errors inside a 200."""
        return False

    def error_message(self, body) -> str:
        if isinstance(body, dict):
            for key in ("message", "detail", "error", "title"):
                value = body.get(key)
                if isinstance(value, str):
                    return value[:200]
                if isinstance(value, dict) and isinstance(value.get("message"), str):
                    return value["message"][:200]
        return ""

    def retry_at(self, rule: ErrorRule, headers, now: float) -> float | None:
        """When the provider said we may call again (retry-after, then the reset)."""
        info = self.rate_info(headers)
        if info.retry_after is not None:
            return now + info.retry_after
        if info.reset_at is not None and (info.remaining == 0 or rule.action is Action.WAIT):
            return info.reset_at
        return None

    # -- URL helpers ----------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + path

    def relative(self, absolute_url: str) -> str | None:
        """A provider-given URL as a cursor (path + query), only if it stays on our origin.

        Following a link to another host would hand it the user's token.
        """
        parts = urlsplit(absolute_url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    @staticmethod
    def with_query(cursor: str, **changes) -> str:
        path, _, query = cursor.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update({k: str(v) for k, v in changes.items()})
        return f"{path}?{urlencode(params)}"

    @staticmethod
    def query_param(cursor: str, name: str) -> str | None:
        return dict(parse_qsl(cursor.partition("?")[2])).get(name)


#: hooks every provider must fill in
REQUIRED_HOOKS = ("profile_call", "parse_size", "first_cursor", "page_call", "parse_page")


def check_provider_class(cls, where: str) -> None:
    """Refuse a provider class whose facts are missing or malformed, naming it.

    Run once at start-up by the registry, so a forgotten quota or URL fails
    there instead of every sync of that provider failing at run time.
    """
    from providers import ProviderDefinitionError

    def bad(fact: str, why: str):
        raise ProviderDefinitionError(f"{where}: {fact} {why}")

    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        bad("", "is not a Provider subclass")
    if not (isinstance(cls.NAME, str) and cls.NAME.isidentifier() and cls.NAME.islower()):
        bad("NAME", f"must be a lower-case identifier, got {cls.NAME!r}")
    if not (isinstance(cls.API_URL, str) and cls.API_URL.startswith("https://")):
        bad("API_URL", f"must be the real API's https:// base URL, got {cls.API_URL!r}")
    if not cls.RELATIONS or any(r not in RELATION_NAMES for r in cls.RELATIONS):
        bad("RELATIONS", f"must name one or more of {RELATION_NAMES}, got {cls.RELATIONS!r}")
    if not cls.QUOTAS or not all(isinstance(q, QuotaLimit) for q in cls.QUOTAS):
        bad("QUOTAS", "must be one or more QuotaLimit (the provider's default quota)")
    if len({q.scope for q in cls.QUOTAS}) != len(cls.QUOTAS):
        bad("QUOTAS", "must hold one limit per scope")
    if not (isinstance(cls.PAGE_SIZE, int) and cls.PAGE_SIZE >= 1):
        bad("PAGE_SIZE", f"must be a positive integer, got {cls.PAGE_SIZE!r}")
    if not isinstance(cls.PAGINATION, Pagination):
        bad("PAGINATION", f"must be a Pagination, got {cls.PAGINATION!r}")
    try:
        re.compile(cls.ACCOUNT_ID_PATTERN)
    except (re.error, TypeError):
        bad("ACCOUNT_ID_PATTERN", f"must be a regular expression, got {cls.ACCOUNT_ID_PATTERN!r}")
    if not isinstance(cls.AUTH, Auth):
        bad("AUTH", f"must be an Auth, got {cls.AUTH!r}")
    if not all(isinstance(rule, ErrorRule) for rule in cls.ERRORS.values()):
        bad("ERRORS", "values must be ErrorRule")
    if cls.RATE_LIMIT_HEADERS is not None and len(cls.RATE_LIMIT_HEADERS) != 3:
        bad("RATE_LIMIT_HEADERS", "must be (limit, remaining, reset) header names")
    _check_announced(cls, bad)
    hooks = REQUIRED_HOOKS + (("refresh_call", "parse_refresh") if cls.AUTH is Auth.SESSION else ())
    for hook in hooks:
        if getattr(cls, hook) is getattr(Provider, hook):
            bad(hook, "is not implemented")


def _check_announced(cls, bad) -> None:
    """The announced-limit facts: rules of one scope, a price, a concurrency cap."""
    rules = cls.ANNOUNCED_RULES
    if not all(isinstance(rule, AnnouncedRule) for rule in rules):
        bad("ANNOUNCED_RULES", "must be AnnouncedRule (providers.announced)")
    if len({rule.scope for rule in rules}) > 1:
        bad("ANNOUNCED_RULES", "must share one scope (one bucket key per call)")
    if len({rule.rule_id for rule in rules}) != len(rules):
        bad("ANNOUNCED_RULES", "must differ in limit, window or applies_to")
    if rules and cls.RATE_LIMIT_HEADERS is None:
        bad("ANNOUNCED_RULES", "need RATE_LIMIT_HEADERS (how the provider announces them)")
    price = cls.PRICE_USD
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price < 1e6:
        bad("PRICE_USD", f"must be a number of USD ≥ 0, got {price!r}")
    cap = cls.CONCURRENCY_CAP
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        bad("CONCURRENCY_CAP", f"must be None or an integer ≥ 1, got {cap!r}")
