"""``PRICE_<PROVIDER>`` and ``BUDGET_<PROVIDER>``: parsed here, each error naming its variable.

``PRICE_<PROVIDER>`` is USD per resource the provider bills (``PRICE_TWITTER=0.01``);
unset, the provider class's documented ``PRICE_USD`` (0 where free).
``BUDGET_<PROVIDER>`` is ``<usd>/day`` (``5/day``, ``5.00/day``), a UTC day; unset,
no budget. A malformed value, or a variable naming no provider, fails at
start-up with the variable's name.

``parse_price`` and ``parse_budget`` take ``(var, raw)``, as a parser of the
settings declaration table (``service/config.py`` ``Setting.parse``) does;
``SpendSettings`` is what the task layer's ``CallGate`` takes, built from
the loaded settings or, alone, from the environment (``from_env``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import providers

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*day\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


class SpendSettingsError(ValueError):
    """A ``PRICE_*`` / ``BUDGET_*`` value that cannot be used (the message names the variable)."""


def parse_price(name: str, raw: str) -> float:
    """USD per resource: a plain non-negative decimal (``0.01``)."""
    if not _NUMBER.match(raw or ""):
        raise SpendSettingsError(f"{name} must be USD per resource, e.g. 0.01; got {raw!r}")
    price = float(raw)
    if not math.isfinite(price) or price >= 1e6:
        raise SpendSettingsError(f"{name} must be USD per resource below 1,000,000; got {raw!r}")
    return price


def parse_budget(name: str, raw: str) -> float:
    """``<usd>/day`` (a UTC day): ``5/day``, ``5.00/day``."""
    match = _BUDGET.match(raw or "")
    if match is None:
        raise SpendSettingsError(f"{name} must be <usd>/day, e.g. 5.00/day; got {raw!r}")
    budget = float(match[1])
    if not math.isfinite(budget) or budget >= 1e9:
        raise SpendSettingsError(f"{name} must be below 1,000,000,000/day; got {raw!r}")
    return budget


def _provider_of(name: str, prefix: str) -> str:
    provider = name[len(prefix) :].lower()
    if provider not in providers.names():
        known = ", ".join(f"{prefix}{p.upper()}" for p in providers.names())
        raise SpendSettingsError(f"{name} names no provider (one of {known})")
    return provider


@dataclass(frozen=True)
class SpendSettings:
    """Each provider's price per resource (USD) and daily budget (USD, None: none)."""

    prices: Mapping[str, float]
    budgets: Mapping[str, float | None]

    def price(self, provider: str) -> float:
        return self.prices.get(provider, 0.0)

    def budget(self, provider: str) -> float | None:
        return self.budgets.get(provider)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SpendSettings:
        env = {} if environ is None else environ
        classes = providers.provider_classes()
        prices = {name: float(cls_.PRICE_USD) for name, cls_ in classes.items()}
        budgets: dict[str, float | None] = dict.fromkeys(classes)
        for name, raw in env.items():
            if name.startswith("PRICE_") and raw != "":
                prices[_provider_of(name, "PRICE_")] = parse_price(name, raw)
            elif name.startswith("BUDGET_") and raw != "":
                budgets[_provider_of(name, "BUDGET_")] = parse_budget(name, raw)
        return cls(prices=prices, budgets=budgets)
