"""What a provider told us about its quota on one response.

Each provider module parses its own headers (GitHub ``x-ratelimit-*``,
Twitter ``x-rate-limit-*``, Mastodon's ISO-8601 reset, Facebook's
``x-app-usage`` percentages, ``retry-after``) into this one shape; the quota
gate (``service.quota``) and the sync record consume only this.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


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
