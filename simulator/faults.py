"""Faults: what goes wrong, on which calls, and when.

A fault is a JSON object with three parts:

- a selector: ``provider``, ``account``, ``token``, ``path_kind``
  ("profile" | "page" | "token"); absent fields match everything;
- a trigger over the calls it matches, counted from when it was added:
  ``at_call`` N (only the Nth), ``from_call`` N (the Nth and later),
  ``every_n`` K (every Kth), ``rate`` p (probability, seeded RNG), and
  ``times`` (fire at most this often); no trigger fields: every call;
- a ``kind`` and its parameters (see ``KINDS``).

The book only decides which faults fire for a call; the app applies them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .providers import PROVIDER_SIMS
from .providers.base import PAGE_KINDS
from .scenario import PATH_KINDS, PROVIDERS, ScenarioError, normalize_account_id

#: Kinds every provider has.
GENERAL_KINDS = (
    "outage",  # 503 in the provider's shape
    "error",  # one row of the provider's error table
    "drop",  # close the connection without an answer
    "latency",  # mean/jitter (ms) for matching calls
    "revoke_token",  # the token (default: the caller's) is revoked for good
    "expire_token",  # the token (default: the caller's) expires now
    "rate_limit",  # replace the provider's rate limits when added
    "stream_disconnect",  # cut the provider's push channel when added ("forget": its replay)
)
#: Fault kinds -> providers they apply to (None: all).
KINDS: dict[str, tuple[str, ...] | None] = {
    **dict.fromkeys(GENERAL_KINDS),
    **{
        kind: tuple(name for name, sim in PROVIDER_SIMS.items() if kind in sim.PAGE_FAULTS)
        for kind in PAGE_KINDS
    },
}


def _query(call):
    return call.request.query if call.request is not None else {}


def _start_at_least(call, fault) -> bool:
    try:
        return int(_query(call).get("start", 0)) >= int(fault.get("after_start", 1))
    except ValueError:
        return False


#: Page faults only count (and fire on) the calls they can bend, so
#: ``at_call``/``times`` mean "the Nth page it could have broken".
APPLIES = {
    "off_by_one": lambda call, fault: call.kind == "page" and _start_at_least(call, fault),
    "cursor_expired": lambda call, fault: (
        call.kind == "page" and ("after" in _query(call) or "before" in _query(call))
    ),
    "empty_page_with_next": lambda call, fault: call.kind == "page",
    "short_page": lambda call, fault: call.kind == "page",
}

#: Kinds that answer the call themselves instead of letting it through.
TERMINAL_KINDS = {"outage", "error", "drop"}


class Fault:
    """One configured fault with its match and fire counters."""

    def __init__(self, raw: dict, fault_id: str, seed: int) -> None:
        self.raw = raw
        self.id = fault_id
        self.kind: str = raw["kind"]
        self.provider: str | None = raw.get("provider")
        self.account: str | None = (
            normalize_account_id(self.provider or "", str(raw["account"]))
            if raw.get("account") is not None
            else None
        )
        self.token: str | None = raw.get("token")
        #: only this instance's calls (federated providers); None: every instance
        self.instance: str | None = raw.get("instance")
        self.path_kind: str | None = raw.get("path_kind")
        self.at_call: int | None = raw.get("at_call")
        self.from_call: int | None = raw.get("from_call")
        self.every_n: int | None = raw.get("every_n")
        self.rate: float | None = raw.get("rate")
        self.times: int | None = raw.get("times")
        self.rng = random.Random(f"{raw.get('seed', seed)}:{fault_id}")
        self.matched = 0
        self.fired = 0

    def get(self, name: str, default: Any = None) -> Any:
        """A kind parameter (``retry_after``, ``mean``, ``items``...)."""
        return self.raw.get(name, default)

    def matches(self, call) -> bool:
        return (
            (self.provider is None or self.provider == call.provider)
            and (self.path_kind is None or self.path_kind == call.kind)
            and (self.token is None or self.token == call.token)
            and (self.instance is None or self.instance == call.instance)
            and (self.account is None or self.account == call.account_id)
            and (self.kind not in APPLIES or APPLIES[self.kind](call, self))
        )

    def fires(self) -> bool:
        """Count one matching call and decide whether the fault fires on it."""
        self.matched += 1
        n = self.matched
        if self.times is not None and self.fired >= self.times:
            return False
        if self.at_call is not None and n != self.at_call:
            return False
        if self.from_call is not None and n < self.from_call:
            return False
        if self.every_n is not None and n % self.every_n:
            return False
        if self.rate is not None and self.rng.random() >= self.rate:
            return False
        self.fired += 1
        return True

    def to_json(self) -> dict:
        return {**self.raw, "id": self.id, "matched": self.matched, "fired": self.fired}


class FaultBook:
    """The active faults, in the order they were added."""

    def __init__(self, seed: int = 0, validate: Callable[[dict], None] | None = None) -> None:
        self.seed = seed
        self.validate = validate
        self.faults: list[Fault] = []
        self._next_id = 1

    def parse(self, raw: Any) -> Fault:
        """Check one fault object and give it an id (``raw["id"]`` if set)."""
        if not isinstance(raw, dict):
            raise ScenarioError("fault: expected an object")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ScenarioError(f"fault: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        provider = raw.get("provider")
        if provider is not None and provider not in PROVIDERS:
            raise ScenarioError(f"fault: unknown provider {provider!r}")
        allowed = KINDS[kind]
        if allowed is not None and provider not in allowed:
            raise ScenarioError(f"fault {kind}: 'provider' must be one of {allowed}")
        if kind in ("error", "rate_limit") and provider is None:
            raise ScenarioError(f"fault {kind}: 'provider' is required")
        instance = raw.get("instance")
        if instance is not None and (not isinstance(instance, str) or not instance):
            raise ScenarioError("fault: 'instance' must be an instance name")
        if raw.get("path_kind") is not None and raw["path_kind"] not in PATH_KINDS:
            raise ScenarioError(f"fault: 'path_kind' must be one of {PATH_KINDS}")
        for name in ("at_call", "from_call", "every_n", "times"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ScenarioError(f"fault: '{name}' must be a positive integer")
        rate = raw.get("rate")
        if rate is not None and (not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
            raise ScenarioError("fault: 'rate' must be a probability in [0, 1]")
        if self.validate is not None:
            self.validate(raw)
        fault_id = str(raw.get("id") or f"f{self._next_id}")
        self._next_id += 1
        return Fault(raw, fault_id, self.seed)

    def parse_all(self, raws: Any) -> list[Fault]:
        if not isinstance(raws, list):
            raise ScenarioError("faults: expected a list")
        return [self.parse(r) for r in raws]

    def add(self, raws: list) -> list[Fault]:
        """Add faults (all or none: one bad fault rejects the batch)."""
        new = self.parse_all(raws)
        self.faults.extend(new)
        return new

    def replace(self, raws: list) -> list[Fault]:
        new = self.parse_all(raws)
        self.faults = new
        return new

    def remove(self, ids: list[str]) -> None:
        wanted = set(ids)
        self.faults = [f for f in self.faults if f.id not in wanted]

    def clear(self) -> None:
        self.faults = []

    def firing(self, call) -> list[Fault]:
        """The faults that fire on this call (each matching fault counts it)."""
        if not self.faults:
            return []
        return [f for f in self.faults if f.matches(call) and f.fires()]

    def to_json(self) -> list[dict]:
        return [f.to_json() for f in self.faults]
