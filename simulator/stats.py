"""Counters behind ``GET /_sim/stats``: calls, rate-limit rejections, injected errors,
and what each provider would charge (``usage``).

Tokens are fake, so they are reported as given: tests look their own
token up directly. Calls without a token count under ``"-"``.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from .providers import PROVIDER_SIMS

NO_TOKEN = "-"


class Usage:
    """What one provider (or one of its instances) was asked and would charge.

    ``calls``: every call; ``counted``: those that used quota (not a free 304,
    not refused, not an injected fault); ``not_modified``: 304 answers;
    ``resources``: billed items (``ProviderSim.PRICE_USD``: X's users returned).
    """

    __slots__ = ("calls", "counted", "not_modified", "resources")

    def __init__(self) -> None:
        self.calls = self.counted = self.not_modified = self.resources = 0

    def add(self, call) -> None:
        self.calls += 1
        self.counted += call.counted
        self.not_modified += call.status == 304
        self.resources += call.resources

    def to_json(self, price: float) -> dict:
        return {
            "calls": self.calls,
            "counted": self.counted,
            "not_modified": self.not_modified,
            "resources": self.resources,
            "usd": round(self.resources * price, 6),
        }


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
        self.usage: dict[str, Usage] = defaultdict(Usage)
        self.instance_usage: dict[str, dict[str, Usage]] = defaultdict(lambda: defaultdict(Usage))

    def record(self, call) -> None:
        provider = call.provider
        token = call.token or NO_TOKEN
        self.total += 1
        self.by_provider[provider] += 1
        self.by_token[token] += 1
        self.by_provider_token[provider][token] += 1
        self.by_kind[provider][call.kind] += 1
        self.by_status[call.status] += 1
        self.usage[provider].add(call)
        if call.instance is not None:
            self.instance_usage[provider][call.instance].add(call)
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
            "usage": {
                provider: {
                    **usage.to_json(PROVIDER_SIMS[provider].PRICE_USD),
                    "instances": {
                        name: each.to_json(PROVIDER_SIMS[provider].PRICE_USD)
                        for name, each in self.instance_usage.get(provider, {}).items()
                    },
                }
                for provider, usage in self.usage.items()
            },
        }
