"""The scenario: accounts, rate limits, latency and faults, parsed and checked.

A scenario is plain JSON (see the README of the simulator in ``__init__``).
Parsing turns it into small dataclasses and rejects what the simulator
would otherwise misread (unknown provider, negative size, bad scope), so a
typo in a test's scenario fails loudly instead of serving an empty network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ScenarioError
from .identities import ConnectionSpace
from .providers import PROVIDER_SIMS

# The per-provider tables below are derived from the provider classes
# (``simulator/providers/<name>.py``); add a fact there, not here.
PROVIDERS = tuple(PROVIDER_SIMS)

#: The relation a provider syncs by default, and the other ones it serves.
RELATIONS = {name: sim.RELATIONS for name, sim in PROVIDER_SIMS.items()}

#: providers whose scenario accounts may list other accounts among their connections
#: (``connections_include``; ``ProviderSim.INCLUDABLE``)
INCLUDABLE = tuple(name for name, sim in PROVIDER_SIMS.items() if sim.INCLUDABLE)

SCOPES = ("token", "app", "ip")
PATH_KINDS = ("profile", "page", "token")

#: Rate-limit windows aligned to wall-clock multiples of the window
#: (``ProviderSim.ALIGNED_WINDOWS``); the others start at the first call.
ALIGNED_WINDOWS = {name for name, sim in PROVIDER_SIMS.items() if sim.ALIGNED_WINDOWS}

#: The rule in force (announced in the headers and enforced) for a provider
#: whose real API always sends rate-limit headers, when the scenario names
#: no rule for it (``ProviderSim.DEFAULT_RATE_LIMIT``): the real window and
#: scope, with a limit that the test suite and benchmarks never come near (a
#: 200,000-follower GitHub account is 2,001 calls).
#: ``"rate_limits": {"github": null}`` (or ``[]``) opts out: no rule, no headers.
DEFAULT_RATE_LIMITS = {
    name: dict(sim.DEFAULT_RATE_LIMIT)
    for name, sim in PROVIDER_SIMS.items()
    if sim.DEFAULT_RATE_LIMIT is not None
}


@dataclass
class Latency:
    """Added response delay: uniform in ``mean ± jitter`` milliseconds."""

    mean: float = 0.0
    jitter: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.mean <= 0 and self.jitter <= 0

    @classmethod
    def parse(cls, raw: Any, where: str) -> Latency:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object with mean/jitter")
        return cls(_number(raw.get("mean", 0), where), _number(raw.get("jitter", 0), where))


@dataclass
class Account:
    """One provider account whose network the simulator serves."""

    provider: str
    id: str
    size: int = 0
    start: int = 0
    token: str | None = None
    refresh_token: str | None = None
    expires_at: float | None = None
    handle: str | None = None
    name: str | None = None
    numeric_id: int | None = None
    following_size: int | None = None
    following_start: int | None = None
    hidden: bool = False
    #: relation → ids of other scenario accounts that are among this one's connections
    #: (at the first positions of that relation's network, in this order)
    connections_include: dict = field(default_factory=dict)
    _spaces: dict = field(default_factory=dict, repr=False, compare=False)
    #: (provider, account id) → that account's stable native id; set by the simulator state
    _stable_native: Any = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, normalize_account_id(self.provider, self.id))

    def space(self, relation: str | None = None) -> ConnectionSpace:
        """The account's network for ``relation`` (default: the provider's main one)."""
        relation = relation or RELATIONS[self.provider][0]
        space = self._spaces.get(relation)
        if space is None:
            if relation == "following":
                size = self.size if self.following_size is None else self.following_size
                start = self.start if self.following_start is None else self.following_start
            else:
                size, start = self.size, self.start
            included = self.connections_include.get(relation) or ()
            space = ConnectionSpace(
                self.provider,
                self.id,
                relation,
                start,
                max(size, len(included)),
                PROVIDER_SIMS[self.provider].NATIVE_IDS,
            )
            if included and self._stable_native is not None:
                space.overrides = {
                    start + i: self._stable_native(self.provider, other)
                    for i, other in enumerate(included)
                }
            self._spaces[relation] = space
        return space

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @classmethod
    def parse(cls, raw: Any, where: str) -> Account:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object")
        provider = _provider(raw.get("provider"), where)
        if raw.get("id") in (None, ""):
            raise ScenarioError(f"{where}: 'id' is required")
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        unknown = set(raw) - known
        if unknown:
            raise ScenarioError(f"{where}: unknown field(s) {sorted(unknown)}")
        account = cls(provider=provider, id=str(raw["id"]))
        for name in ("size", "start", "following_size", "following_start", "numeric_id"):
            if raw.get(name) is not None:
                value = raw[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ScenarioError(f"{where}: '{name}' must be a non-negative integer")
                setattr(account, name, value)
        for name in ("token", "refresh_token", "handle", "name"):
            if raw.get(name) is not None:
                setattr(account, name, str(raw[name]))
        if raw.get("expires_at") is not None:
            account.expires_at = _number(raw["expires_at"], f"{where}.expires_at")
        account.hidden = bool(raw.get("hidden", False))
        if raw.get("connections_include") is not None:
            account.connections_include = _includes(raw["connections_include"], provider, where)
        return account


@dataclass
class RateLimitRule:
    """One quota: ``limit`` calls per ``window_s`` per scope key.

    ``scope`` keys the budget: "token" (each access token), "app" (every
    token of the provider together) or "ip" (the client address, or the
    first X-Forwarded-For entry). ``path_kind`` restricts the rule to
    profile or page calls. ``status`` (GitHub: 403 or 429) and ``shape``
    (Twitter: "v2" problem JSON or "v1" errors[]) choose the rejection form.
    ``publish: false`` makes it a hidden limit (enforced, never announced):
    no rate-limit headers on any answer, and a rejection carries only
    ``Retry-After`` (whole seconds until the window resets).
    """

    provider: str
    limit: int
    window_s: float
    scope: str = "token"
    path_kind: str | None = None
    status: int | None = None
    shape: str | None = None
    align: bool = False
    publish: bool = True
    #: a provider default (``DEFAULT_RATE_LIMITS``), not named by the scenario
    implicit: bool = False

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def parse(cls, provider: str, raw: Any, where: str) -> RateLimitRule:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object")
        limit = raw.get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ScenarioError(f"{where}: 'limit' must be a non-negative integer")
        window = _number(raw.get("window_s", 3600), f"{where}.window_s")
        if window <= 0:
            raise ScenarioError(f"{where}: 'window_s' must be positive")
        scope = raw.get("scope", "token")
        if scope not in SCOPES:
            raise ScenarioError(f"{where}: 'scope' must be one of {SCOPES}")
        path_kind = raw.get("path_kind")
        if path_kind is not None and path_kind not in PATH_KINDS:
            raise ScenarioError(f"{where}: 'path_kind' must be one of {PATH_KINDS}")
        status = raw.get("status")
        if status is not None and status not in (403, 429):
            raise ScenarioError(f"{where}: 'status' must be 403 or 429")
        shape = raw.get("shape")
        if shape is not None and shape not in ("v1", "v2"):
            raise ScenarioError(f"{where}: 'shape' must be 'v1' or 'v2'")
        publish = raw.get("publish", True)
        if not isinstance(publish, bool):
            raise ScenarioError(f"{where}: 'publish' must be true or false")
        return cls(
            provider,
            limit,
            window,
            scope,
            path_kind,
            status,
            shape,
            bool(raw.get("align", provider in ALIGNED_WINDOWS)),
            publish,
        )


def parse_rate_limits(raw: Any, where: str = "rate_limits") -> dict[str, list[RateLimitRule]]:
    """``{"github": {...}}`` or ``{"github": [{...}, {...}]}`` -> rules per provider."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected an object keyed by provider")
    rules: dict[str, list[RateLimitRule]] = {}
    for provider, spec in raw.items():
        _provider(provider, where)
        specs = [] if spec is None else spec if isinstance(spec, list) else [spec]
        rules[provider] = [RateLimitRule.parse(provider, s, f"{where}.{provider}") for s in specs]
    return rules


def with_default_rate_limits(
    rules: dict[str, list[RateLimitRule]],
) -> dict[str, list[RateLimitRule]]:
    """``rules`` plus the implicit default rule of every provider they do not name."""
    out = dict(rules)
    for provider, spec in DEFAULT_RATE_LIMITS.items():
        if provider not in out:
            rule = RateLimitRule.parse(provider, spec, f"default rate limit {provider}")
            rule.implicit = True
            out[provider] = [rule]
    return out


@dataclass
class Scenario:
    """Everything a simulator run starts from."""

    latency: Latency = field(default_factory=Latency)
    provider_latency: dict[str, Latency] = field(default_factory=dict)
    accounts: list[Account] = field(default_factory=list)
    rate_limits: dict[str, list[RateLimitRule]] = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)
    seed: int = 0
    token_ttl_s: dict[str, int] = field(default_factory=dict)

    def latency_for(self, provider: str) -> Latency:
        return self.provider_latency.get(provider, self.latency)


def parse_scenario(raw: Any) -> Scenario:
    """Check and convert a scenario dict (``None`` or ``{}``: the empty scenario)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ScenarioError("scenario: expected a JSON object")
    unknown = set(raw) - {
        "latency_ms",
        "accounts",
        "rate_limits",
        "faults",
        "seed",
        "token_ttl_s",
        "description",
    }
    if unknown:
        raise ScenarioError(f"scenario: unknown field(s) {sorted(unknown)}")
    scenario = Scenario(seed=int(raw.get("seed", 0)))
    latency = raw.get("latency_ms") or {}
    scenario.latency = Latency.parse(latency, "latency_ms")
    for provider, spec in (latency.get("per_provider") or {}).items():
        _provider(provider, "latency_ms.per_provider")
        scenario.provider_latency[provider] = Latency.parse(
            spec, f"latency_ms.per_provider.{provider}"
        )
    scenario.accounts = parse_accounts(raw.get("accounts"))
    scenario.rate_limits = with_default_rate_limits(parse_rate_limits(raw.get("rate_limits")))
    faults = raw.get("faults") or []
    if not isinstance(faults, list):
        raise ScenarioError("faults: expected a list")
    scenario.faults = faults
    for provider, ttl in (raw.get("token_ttl_s") or {}).items():
        _provider(provider, "token_ttl_s")
        scenario.token_ttl_s[provider] = int(ttl)
    return scenario


def parse_accounts(raw: Any, where: str = "accounts") -> list[Account]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(f"{where}: expected a list")
    return [Account.parse(a, f"{where}[{i}]") for i, a in enumerate(raw)]


def normalize_account_id(provider: str, account_id: str) -> str:
    """The lookup form of an account id (GitHub logins are case-insensitive)."""
    sim = PROVIDER_SIMS.get(provider)
    return sim.normalize_id(account_id) if sim is not None else account_id


def _provider(value: Any, where: str) -> str:
    if value not in PROVIDER_SIMS:
        raise ScenarioError(f"{where}: unknown provider {value!r} (known: {', '.join(PROVIDERS)})")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _includes(raw: Any, provider: str, where: str) -> dict:
    """``{"followers": ["other-id", ...], ...}``, checked against the provider's relations."""
    where = f"{where}.connections_include"
    if provider not in INCLUDABLE:
        raise ScenarioError(f"{where}: not supported for {provider} (only {', '.join(INCLUDABLE)})")
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected an object of relation → account ids")
    out = {}
    for relation, ids in raw.items():
        if relation not in RELATIONS[provider]:
            raise ScenarioError(f"{where}: {provider} relations are {RELATIONS[provider]}")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ScenarioError(f"{where}.{relation}: expected a list of account ids")
        if not all(PROVIDER_SIMS[provider].includable_id(i) for i in ids):
            # their wire ids are the accounts' own ids, rendered as numbers
            raise ScenarioError(f"{where}.{relation}: {provider} account ids must be numeric")
        out[relation] = list(dict.fromkeys(ids))
    return out
