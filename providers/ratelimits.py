"""What a provider told us about its quota on one response.

Each provider module parses its own headers (GitHub ``x-ratelimit-*``,
Twitter ``x-rate-limit-*``, Mastodon's ISO-8601 reset, Facebook's
``x-app-usage`` percentages, ``retry-after``) into this one shape; the quota
gate (``state.quota``) and the sync record consume only this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: quota scopes a limit may count against, in the order the buckets are taken
SCOPES = ("token", "ip", "app")


@dataclass(frozen=True)
class RateLimitInfo:
    #: calls allowed per window, as the provider states it
    limit: int | None = None
    #: calls left in the current window
    remaining: int | None = None
    #: when the window resets, epoch seconds
    reset_at: float | None = None
    #: seconds the provider asked us to wait (``retry-after``)
    retry_after: float | None = None
    #: share of the budget used, 0–100 (Facebook ``x-app-usage``)
    usage_percent: float | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def as_record(self) -> dict:
        """Flat string fields to keep with the sync record."""
        return {f"rate_{k}": str(v) for k, v in asdict(self).items() if v is not None}


class QuotaSpecError(ValueError):
    """A quota written as text (``QUOTA_<PROVIDER>``) that does not describe a limit."""


@dataclass(frozen=True)
class QuotaLimit:
    """One provider limit: ``limit`` calls per ``window_s`` per ``scope`` key.

    ``scope`` is who the provider counts against: the user's ``token``, the
    whole ``app``, or our source ``ip``. An ``adaptive`` limit is one nobody
    publishes: ``limit`` is then a ceiling, and the rate is learned.
    """

    scope: str
    limit: int
    window_s: float
    adaptive: bool = False

    def __post_init__(self):
        if (
            self.scope not in SCOPES
            or not isinstance(self.limit, int)
            or self.limit < 1
            or not self.window_s > 0
        ):
            raise QuotaSpecError(f"quota {self}: scope in {SCOPES}, limit ≥ 1, window > 0")

    @classmethod
    def parse(cls, text: str) -> QuotaLimit:
        """``limit/window_s/scope[/adaptive]``, e.g. ``5000/3600/token``."""
        parts = text.strip().split("/")
        try:
            limit, window, scope = int(parts[0]), float(parts[1]), parts[2]
        except (IndexError, ValueError):
            raise QuotaSpecError(f"quota {text!r} is not limit/window_s/scope[/adaptive]") from None
        flags = parts[3:]
        if scope not in SCOPES or limit < 1 or window <= 0 or flags not in ([], ["adaptive"]):
            raise QuotaSpecError(f"quota {text!r}: scope in {SCOPES}, limit ≥ 1, window > 0")
        return cls(scope, limit, window, adaptive=bool(flags))


def parse_limits(text: str) -> tuple[QuotaLimit, ...]:
    """A comma-separated list of ``QuotaLimit.parse`` specs, one per scope."""
    limits = tuple(QuotaLimit.parse(item) for item in text.split(",") if item.strip())
    if len({lim.scope for lim in limits}) != len(limits):
        raise QuotaSpecError(f"quota {text!r}: one limit per scope")
    return limits


def int_or_none(value) -> int | None:
    """A header or body number, or None when it is absent or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
