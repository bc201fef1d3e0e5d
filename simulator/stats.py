"""Counters behind ``GET /_sim/stats``: calls, rate-limit rejections, injected errors.

Tokens are fake, so they are reported as given: tests look their own
token up directly. Calls without a token count under ``"-"``.
"""

from __future__ import annotations

from collections import Counter, defaultdict

NO_TOKEN = "-"


class CallStats:
    """Per provider / token / kind / status counts since the last reset."""

    def __init__(self, now: float = 0.0) -> None:
        self.reset(now)

    def reset(self, now: float) -> None:
        self.since = now
        self.total = 0
        self.by_provider: Counter = Counter()
        self.by_token: Counter = Counter()
        self.by_provider_token: dict[str, Counter] = defaultdict(Counter)
        self.by_kind: dict[str, Counter] = defaultdict(Counter)
        self.by_status: Counter = Counter()
        self.limited_total = 0
        self.limited_by_provider: Counter = Counter()
        self.limited_by_token: Counter = Counter()
        self.injected_total = 0
        self.injected_by_provider: Counter = Counter()
        self.injected_by_kind: Counter = Counter()
        self.injected_by_fault: Counter = Counter()

    def record(self, call) -> None:
        provider = call.provider
        token = call.token or NO_TOKEN
        self.total += 1
        self.by_provider[provider] += 1
        self.by_token[token] += 1
        self.by_provider_token[provider][token] += 1
        self.by_kind[provider][call.kind] += 1
        self.by_status[call.status] += 1
        if call.rate_limited:
            self.limited_total += 1
            self.limited_by_provider[provider] += 1
            self.limited_by_token[token] += 1
        if call.injected is not None:
            self.injected_total += 1
            self.injected_by_provider[provider] += 1
            self.injected_by_kind[call.injected] += 1
            self.injected_by_fault[call.fault_id] += 1

    def to_json(self, now: float, rate_limits: list[dict]) -> dict:
        return {
            "since": self.since,
            "elapsed_s": round(now - self.since, 3),
            "calls": {
                "total": self.total,
                "by_provider": dict(self.by_provider),
                "by_token": dict(self.by_token),
                "by_provider_token": {p: dict(c) for p, c in self.by_provider_token.items()},
                "by_kind": {p: dict(c) for p, c in self.by_kind.items()},
                "by_status": {str(s): n for s, n in self.by_status.items()},
            },
            "rate_limited": {
                "total": self.limited_total,
                "by_provider": dict(self.limited_by_provider),
                "by_token": dict(self.limited_by_token),
            },
            "errors_injected": {
                "total": self.injected_total,
                "by_provider": dict(self.injected_by_provider),
                "by_kind": dict(self.injected_by_kind),
                "by_fault": dict(self.injected_by_fault),
            },
            "rate_limits": rate_limits,
        }
