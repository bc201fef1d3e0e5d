"""What a provider *is*, as data: endpoints, paging, auth and its error table.

A provider module subclasses ``Provider`` with upper-case class attributes
for the differences and a few small hooks for what cannot be data (how to
read a size, a page, an error). The Celery task classes in
``providers.base`` do the rest, the same way for every provider.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from providers.errors import ErrorRule, ProviderError, default_rule
from service.ratelimits import RateLimitInfo


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
    """One outbound request, described without the credential."""

    method: str
    url: str
    params: dict = field(default_factory=dict)


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

    @property
    def followups(self) -> list[str]:
        if self.fan_out:
            return list(self.fan_out)
        return [self.next_cursor] if self.next_cursor else []


class Provider:
    """Base description; subclasses set the constants and hooks."""

    #: name used in URLs, queues and keys
    NAME: str = ""
    #: the provider's API documentation
    DOCS: str = ""
    #: connections asked for per page (the provider's maximum, to save calls)
    PAGE_SIZE: int = 100
    PAGINATION: Pagination = Pagination.CURSOR
    #: lanes in flight for OFFSET_UNKNOWN paging
    LANES: int = 4
    #: pages allowed beyond ceil(total / PAGE_SIZE) before the page guard stops a sync
    PAGE_SLACK: int = 3
    #: error table: key from ``error_key()`` → rule; see ``providers.errors``
    ERRORS: dict = {}
    #: quota scopes a call counts against ("token", "app", "ip")
    QUOTA_SCOPES: tuple = ("token",)
    #: consecutive waits without a stated reset start at this many seconds, doubling
    WAIT_FLOOR_SECONDS: float = 60.0

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path

    # -- hooks a provider fills in -------------------------------------------
    def profile_call(self, account_id: str) -> HttpCall:
        raise NotImplementedError

    def parse_size(self, body) -> int | None:
        raise NotImplementedError

    def first_cursor(self, account_id: str) -> str:
        raise NotImplementedError

    def page_call(self, account_id: str, cursor: str) -> HttpCall:
        raise NotImplementedError

    def parse_page(self, body, headers, cursor: str) -> Page:
        raise NotImplementedError

    def rate_info(self, headers) -> RateLimitInfo:
        return RateLimitInfo()

    def error_key(self, status: int, body, headers):
        """What to look up in ``ERRORS``: by default the HTTP status."""
        return status

    def auth_headers(self, credential) -> dict:
        return {"Authorization": f"Bearer {credential.access_token}"}

    # -- shared behaviour -----------------------------------------------------
    def initial_cursors(self, account_id: str, size: int | None) -> list[str]:
        """The cursors round two starts with."""
        if self.PAGINATION is Pagination.OFFSET_KNOWN and size is not None:
            pages = max(1, math.ceil(size / self.PAGE_SIZE))
            return [self.offset_cursor(i * self.PAGE_SIZE) for i in range(pages)]
        if self.PAGINATION is Pagination.OFFSET_UNKNOWN:
            return [self.offset_cursor(i * self.PAGE_SIZE) for i in range(self.LANES)]
        return [self.first_cursor(account_id)]

    @staticmethod
    def offset_cursor(offset: int) -> str:
        return f"offset:{offset}"

    @staticmethod
    def cursor_offset(cursor: str) -> int:
        return int(cursor.partition(":")[2])

    def page_limit(self, expected_total: int | None) -> int | None:
        """Most pages a sync of this size may take before a guard stops it."""
        if expected_total is None:
            return None
        pages = math.ceil(expected_total / self.PAGE_SIZE)
        return pages + max(self.PAGE_SLACK, pages // 10)

    def classify(self, status: int, body, headers, now: float) -> ProviderError | None:
        """None for a good answer; else the table's rule for it."""
        if 200 <= status < 300 and not self.is_error_body(body):
            return None
        key = self.error_key(status, body, headers)
        rule = self.ERRORS.get(key) or self.ERRORS.get(status) or default_rule(status)
        return ProviderError(rule, status, self.error_message(body),
                             self.retry_at(rule, headers, now))

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
        if info.reset_at is not None and info.remaining == 0:
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
