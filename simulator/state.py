"""The simulator's whole state: accounts, tokens, quotas, faults, stats.

One ``Simulator`` lives in the aiohttp application; every handler runs on
the same event loop, so nothing here needs a lock. Run-time changes
(``/_sim/accounts``, ``/_sim/faults``, ``/_sim/reset``) go through the
methods below so the indexes (tokens, GitHub numeric ids) stay in step.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable

from .calls import CallLog
from .faults import FaultBook
from .identities import own_numeric_id
from .providers import PROVIDER_SIMS
from .ratelimit import Quota, RateLimiter, tightest
from .scenario import (
    Account,
    Latency,
    Scenario,
    ScenarioError,
    normalize_account_id,
    parse_rate_limits,
)
from .stats import CallStats
from .tokens import TokenRegistry

#: fault fields that are not a rule's, dropped when a ``rate_limit`` fault gives one rule
_FAULT_FIELDS = {
    "kind",
    "provider",
    "id",
    "account",
    "token",
    "at_call",
    "from_call",
    "every_n",
    "rate",
    "times",
    "seed",
    "instance",
}


def fault_rules(raw: dict):
    """A ``rate_limit`` fault's rules as scenario rules: ``"limits": [...]``, or the
    fault's own rule fields; None for ``"limit": null`` (no rule at all)."""
    if "limits" in raw:
        return raw["limits"]
    if raw.get("limit") is None:
        return None
    return {k: v for k, v in raw.items() if k not in _FAULT_FIELDS}


def validate_fault(raw: dict) -> None:
    """Kind-specific checks that need the providers' tables."""
    kind = raw["kind"]
    provider = raw.get("provider")
    if (
        kind == "error"
        or kind == "revoke_token"
        and provider
        and any(k in raw for k in ("code", "subcode", "name"))
    ):
        PROVIDER_SIMS[provider].find_rows(raw)
    elif kind == "rate_limit":
        limits = fault_rules(raw)
        if limits is not None:
            parse_rate_limits({provider: limits}, "fault rate_limit")
    elif kind == "latency":
        Latency.parse(raw, "fault latency")
    elif kind == "stream_disconnect" and provider not in ("bluesky", "mastodon", "twitter"):
        raise ScenarioError(
            "fault stream_disconnect: 'provider' must be bluesky, mastodon or twitter"
        )


class Simulator:
    """Accounts, tokens, faults, quotas and counters of one simulator run."""

    def __init__(
        self, scenario: Scenario, clock: Callable[[], float] = time.time, log_limit: int = 200_000
    ) -> None:
        self.clock = clock
        self.log_limit = log_limit
        self.load(scenario)

    def load(self, scenario: Scenario) -> None:
        """Start over from a scenario (also what ``POST /_sim/reset`` with one does)."""
        FaultBook(scenario.seed, validate_fault).add(scenario.faults)  # check before swapping
        self.scenario = scenario
        self.accounts: dict[tuple[str, str], Account] = {}
        self.per_provider: Counter = Counter()
        self.numeric_index: dict[tuple[str, int], tuple[str, str]] = {}
        self.tokens = TokenRegistry()
        for account in scenario.accounts:
            self.put_account(account)
        self.limiter = RateLimiter(scenario.rate_limits, self.accounts_of)
        self.faults = FaultBook(scenario.seed, validate_fault)
        self.log = CallLog(self.log_limit)
        self.stats = CallStats(self.clock())
        self.rng = random.Random(scenario.seed)
        self.add_faults(scenario.faults)

    # --- accounts -----------------------------------------------------------------

    def put_account(self, account: Account) -> None:
        """Add or replace an account; its scenario token starts fresh."""
        key = account.key
        old = self.accounts.get(key)
        if old is not None:
            for token in {old.token, *old.tokens} - {account.token, *account.tokens, None}:
                self.tokens.access.pop((old.provider, token), None)
        if old is None:
            self.per_provider[account.provider] += 1
        self.accounts[key] = account
        account._spaces = {}  # its networks start again from the scenario (no changes)
        account._stable_native = self.stable_native
        self.numeric_index[(account.provider, self.numeric_id(account))] = key
        self.tokens.register_account(account, key[1])

    def remove_account(self, provider: str, account_id: str) -> bool:
        key = (provider, normalize_account_id(provider, account_id))
        account = self.accounts.pop(key, None)
        if account is None:
            return False
        self.per_provider[provider] -= 1
        self.numeric_index.pop((provider, self.numeric_id(account)), None)
        self.tokens.forget_account(*key)
        return True

    def accounts_of(self, provider: str) -> int:
        """How many accounts of ``provider`` the simulator holds (the app's users)."""
        return self.per_provider[provider]

    def account(self, provider: str, account_id: str) -> Account | None:
        return self.accounts.get((provider, normalize_account_id(provider, account_id)))

    def stable_native(self, provider: str, account_id: str) -> int:
        """The native id another account's network lists this account under: what its
        own profile answers with (``ProviderSim.included_native``)."""
        return PROVIDER_SIMS[provider].included_native(self, account_id)

    @staticmethod
    def numeric_id(account: Account) -> int:
        """The account's own numeric id (GitHub user id): given, or derived from its id."""
        if account.numeric_id is not None:
            return account.numeric_id
        return own_numeric_id(account.provider, account.key[1])

    # --- faults -------------------------------------------------------------------

    def add_faults(self, raws: list) -> list:
        added = self.faults.add(raws)
        for fault in added:
            if fault.kind == "rate_limit":
                self.apply_rate_limit_fault(fault)
            elif fault.kind == "stream_disconnect" and getattr(self, "push", None):
                self.push.disconnect(fault.provider, bool(fault.get("forget", False)))
        return added

    def replace_faults(self, raws: list) -> list:
        replaced = self.faults.replace(raws)
        self.limiter.replace_all(self.scenario.rate_limits)
        for fault in replaced:
            if fault.kind == "rate_limit":
                self.apply_rate_limit_fault(fault)
        return replaced

    def clear_faults(self) -> None:
        """Drop every fault and undo what they changed (quotas, token states)."""
        self.faults.clear()
        self.limiter.replace_all(self.scenario.rate_limits)
        self.tokens.restore()

    def apply_rate_limit_fault(self, fault) -> None:
        """``{"kind": "rate_limit", "provider": P, "limit": ...}`` or ``"limits": [...]``;
        ``"limit": null`` removes the provider's limits. With ``"instance"``, only that
        instance's rules are replaced (the rules it gives hold for that instance)."""
        provider = fault.provider
        limits = fault_rules(fault.raw)
        rules = []
        if limits is not None:
            specs = limits if isinstance(limits, list) else [limits]
            if fault.instance is not None:
                specs = [{**spec, "instance": fault.instance} for spec in specs]
            rules = parse_rate_limits({provider: specs}, "fault rate_limit")[provider]
        if fault.instance is not None:
            kept = [r for r in self.limiter.rules.get(provider, ()) if r.instance != fault.instance]
            rules = kept + rules
        self.limiter.replace(provider, rules)

    # --- quotas -------------------------------------------------------------------

    def quota_for(self, call) -> Quota | None:
        """What the provider's headers say of ``call``'s quota without counting it: the
        announced rule with the fewest calls left (an injected rate-limit error's figures)."""
        provider = PROVIDER_SIMS[call.provider]
        return tightest(self.limiter.peek(call), provider.announces)

    # --- latency and reset ----------------------------------------------------------

    def latency_s(self, provider: str, override: Latency | None = None) -> float:
        latency = override or self.scenario.latency_for(provider)
        if latency.is_zero:
            return 0.0
        ms = latency.mean + (
            self.rng.uniform(-latency.jitter, latency.jitter) if latency.jitter else 0
        )
        return max(0.0, ms) / 1000.0

    def reset(self, accounts: bool = False) -> None:
        """Clear stats, the call log, faults and quota counters.

        Token revocations and fault-made expiries are undone. With
        ``accounts``, the accounts and tokens go back to the scenario's too
        (run-time accounts and refreshed tokens are dropped).
        """
        if accounts:
            self.load(Scenario(**{**self.scenario.__dict__, "faults": []}))
            return
        self.faults.clear()
        self.limiter.replace_all(self.scenario.rate_limits)
        self.tokens.restore()
        self.log.clear()
        self.stats.reset(self.clock())
        self.rng = random.Random(self.scenario.seed)
