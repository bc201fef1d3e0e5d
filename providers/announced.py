"""Limits as the providers announce them, and what they charge: rules and headers as data.

A provider counts calls under one or more *rules* (``AnnouncedRule``): so
many calls per window, per some key (the token, the provider account, an
endpoint of one account, our egress address), for every call or only for
paging ones. Its answers announce them in headers: GitHub
``x-ratelimit-{limit,remaining,reset,used,resource}``, X ``x-rate-limit-*``,
Mastodon ``X-RateLimit-*`` with an ISO-8601 reset and "the one you are
closest to exceeding", Bluesky ``RateLimit-*`` with a policy
``3000;w=300``; and ``retry-after`` on any status. ``read_rate_headers``
turns them into an ``AnswerReport`` (``Announcement`` per rule told), and
reports the headers it could not read instead of failing: an answer whose
quota headers do not parse is still an answer.

The rules a provider documents are its class's ``ANNOUNCED_RULES``; they are
the prior the gate (``state.announced``) starts from, until the provider's
own headers say otherwise. Sources for every number: PROVIDER-REALITIES.md
and ``docs/providers.md``.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

#: who a rule counts against: a credential, the provider account (every token of
#: it), one endpoint of one account, our egress address (per provider host), the app
RULE_SCOPES = ("token", "account", "endpoint", "ip", "app")
#: which calls a rule counts: every call, or only those that page (Mastodon's throttle)
APPLIES_TO = ("all", "paging")
#: when the headers speak for a rule: on every answer, or only while it is the
#: one closest to being exceeded (Mastodon: several rules, one set of headers)
TOLD = ("always", "tightest")


class AnnouncedRuleError(ValueError):
    """A provider's documented rule that cannot be right."""


@dataclass(frozen=True)
class AnnouncedRule:
    """One documented limit: ``limit`` calls per ``window_s`` per ``scope`` key."""

    limit: int
    window_s: float
    scope: str
    applies_to: str = "all"
    told: str = "always"
    #: windows start at wall-clock multiples of ``window_s`` (Mastodon's Rack::Attack)
    #: rather than at the first call (GitHub, X, Bluesky)
    aligned: bool = False
    #: the ``x-ratelimit-resource`` this rule is (GitHub ``core``); None: any
    resource: str | None = None

    def __post_init__(self):
        if not (isinstance(self.limit, int) and self.limit >= 1 and self.window_s > 0):
            raise AnnouncedRuleError(f"{self}: limit ≥ 1 and window > 0")
        if self.scope not in RULE_SCOPES or self.applies_to not in APPLIES_TO:
            raise AnnouncedRuleError(f"{self}: scope in {RULE_SCOPES}, applies_to in {APPLIES_TO}")
        if self.told not in TOLD:
            raise AnnouncedRuleError(f"{self}: told in {TOLD}")

    @property
    def rule_id(self) -> str:
        """The rule's name in its bucket: the documented limit, window and calls.

        Stays when the provider announces another limit for it (the limit is
        then a field of the bucket, not part of its name).
        """
        return f"{self.limit}-{self.window_s:g}-{self.applies_to}"

    def applies(self, paging: bool) -> bool:
        return self.applies_to == "all" or paging


@dataclass(frozen=True)
class Announcement:
    """One rule as an answer's headers told it."""

    limit: int
    remaining: int
    #: when the provider's window ends, epoch seconds (None: not said)
    reset_at: float | None = None
    #: the window's length, when the provider states it (``RateLimit-Policy``)
    window_s: float | None = None
    #: which of the provider's resources it is (GitHub ``x-ratelimit-resource``)
    resource: str | None = None


@dataclass(frozen=True)
class AnswerReport:
    """What one answer's headers said of the provider's limits."""

    announcements: tuple[Announcement, ...] = ()
    #: seconds the provider asked us to wait (``retry-after``, on any status)
    retry_after: float | None = None
    #: the headers that were present but could not be read (ignored for this answer)
    malformed: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not self.announcements and self.retry_after is None


@dataclass(frozen=True)
class RateHeaderNames:
    """Which headers carry a provider's announcement (lower case; lookups ignore case)."""

    limit: str
    remaining: str
    reset: str
    used: str | None = None
    resource: str | None = None
    policy: str | None = None


class _Unreadable(ValueError):
    """A header value that does not parse (the caller names the header)."""


def parse_count(value: str) -> int:
    """A non-negative whole number, as every provider writes its counts."""
    text = value.strip()
    if not text.isdigit():
        raise _Unreadable(value)
    return int(text)


def parse_epoch(value: str) -> float:
    """Epoch seconds (GitHub, X, Bluesky)."""
    try:
        number = float(value.strip())
    except ValueError:
        raise _Unreadable(value) from None
    if not math.isfinite(number) or number < 0:
        raise _Unreadable(value)
    return number


def parse_iso8601(value: str) -> float:
    """Mastodon's reset: ``2026-08-01T13:50:00.104512Z``."""
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Unreadable(value) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_retry_after(value: str, now: float) -> float:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), as seconds from now."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise _Unreadable(value) from None
        if moment is None:
            raise _Unreadable(value) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return max(0.0, moment.timestamp() - now)
    if not math.isfinite(seconds) or seconds < 0:
        raise _Unreadable(value)
    return seconds


_POLICY_ITEM = re.compile(r"^\s*(\d+)\s*;\s*w\s*=\s*(\d+(?:\.\d+)?)\s*(?:;.*)?$")


def parse_policy(value: str) -> tuple[tuple[int, float], ...]:
    """``RateLimit-Policy: 3000;w=300`` (several items comma-separated) → ((3000, 300.0),)."""
    items = []
    for item in value.split(","):
        match = _POLICY_ITEM.match(item)
        if match is None or int(match[1]) < 1 or float(match[2]) <= 0:
            raise _Unreadable(value)
        items.append((int(match[1]), float(match[2])))
    return tuple(items)


def _header(headers, name: str | None) -> str | None:
    if name is None or headers is None:
        return None
    value = headers.get(name)
    if value is None and hasattr(headers, "items"):  # a plain dict: look up without case
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value if isinstance(value, str) else None


def read_rate_headers(
    headers, names: RateHeaderNames | None, parse_reset: Callable[[str], float], now: float
) -> AnswerReport:
    """An answer's quota headers as an ``AnswerReport``; unreadable ones are named, not raised."""
    malformed: list[str] = []
    retry_after = None
    raw_retry = _header(headers, "retry-after")
    if raw_retry is not None:
        try:
            retry_after = parse_retry_after(raw_retry, now)
        except _Unreadable:
            malformed.append("retry-after")
    announcement = None
    if names is not None:
        announcement = _announcement(headers, names, parse_reset, malformed)
    return AnswerReport(
        announcements=(announcement,) if announcement else (),
        retry_after=retry_after,
        malformed=tuple(malformed),
    )


def _announcement(headers, names, parse_reset, malformed: list) -> Announcement | None:
    """The one rule the headers speak for, or None (absent, or a header unreadable)."""
    values = {}
    for field, parse in (
        ("limit", parse_count),
        ("remaining", parse_count),
        ("used", parse_count),
        ("reset", parse_reset),
        ("policy", parse_policy),
    ):
        name = getattr(names, field)
        raw = _header(headers, name)
        if raw is None:
            continue
        try:
            values[field] = parse(raw)
        except (_Unreadable, ValueError, OverflowError):
            malformed.append(name)
    if any(getattr(names, f) in malformed for f in ("limit", "remaining", "used", "reset")):
        return None  # a count we cannot read: nothing of this answer is believed
    limit, remaining = values.get("limit"), values.get("remaining")
    if remaining is None and limit is not None and "used" in values:
        remaining = limit - values["used"]
    if limit is None or remaining is None:
        return None
    if limit < 1 or not 0 <= remaining <= limit:
        malformed.append(names.limit)
        return None
    window = _policy_window(values.get("policy"), limit)
    resource = _header(headers, names.resource)
    return Announcement(
        limit, remaining, values.get("reset"), window, resource.strip() if resource else None
    )


def _policy_window(policy, limit: int) -> float | None:
    """The window the policy states for the announced limit (the first item with it)."""
    for quota, window in policy or ():
        if quota == limit:
            return window
    return None
