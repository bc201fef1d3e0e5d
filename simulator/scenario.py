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
from .providers.base import endpoint_name

# The per-provider tables below are derived from the provider classes
# (``simulator/providers/<name>.py``); add a fact there, not here.
PROVIDERS = tuple(PROVIDER_SIMS)

#: The relation a provider syncs by default, and the other ones it serves.
RELATIONS = {name: sim.RELATIONS for name, sim in PROVIDER_SIMS.items()}

#: providers whose scenario accounts may list other accounts among their connections
#: (``connections_include``; ``ProviderSim.INCLUDABLE``)
INCLUDABLE = tuple(name for name, sim in PROVIDER_SIMS.items() if sim.INCLUDABLE)

#: who a rule counts against: each access token, the account that owns the token
#: (every token of one user together), the whole app, or the caller's address
SCOPES = ("token", "user", "app", "ip")
PATH_KINDS = ("profile", "page", "token")
#: the calls a rule counts: all, or only those that page (``ProviderSim.PAGING_PARAMS``)
APPLIES_TO = ("all", "paging")
#: the callers a rule counts: any, those with a token the provider accepts, or the others
AUTHS = ("any", "token", "none")
#: what a rule's ``limit`` is multiplied by: the provider's scenario accounts (Facebook's
#: "200 × daily active users": every scenario account is a user of the app)
SCALES = ("app_users",)

#: Rate-limit windows aligned to wall-clock multiples of the window
#: (``ProviderSim.ALIGNED_WINDOWS``); the others start at the first call.
ALIGNED_WINDOWS = {name for name, sim in PROVIDER_SIMS.items() if sim.ALIGNED_WINDOWS}
#: Providers that count every endpoint on its own (``ProviderSim.PER_ENDPOINT_WINDOWS``).
PER_ENDPOINT_WINDOWS = {name for name, sim in PROVIDER_SIMS.items() if sim.PER_ENDPOINT_WINDOWS}
#: Providers whose windows roll (``ProviderSim.ROLLING_WINDOWS``): the calls of the
#: last ``window_s`` seconds, not a window that resets.
ROLLING_WINDOWS = {name for name, sim in PROVIDER_SIMS.items() if sim.ROLLING_WINDOWS}
#: Federated providers: a rule may name one ``instance`` (``ProviderSim.FEDERATED``).
FEDERATED = {name for name, sim in PROVIDER_SIMS.items() if sim.FEDERATED}

#: The rules in force (announced in the headers and enforced) when the scenario
#: names none for a provider: each provider's real, documented limits
#: (``ProviderSim.RATE_LIMITS``, with their sources there). A provider without
#: published limits has none (nothing enforced, nothing announced).
#: ``"rate_limits": {"github": []}`` (or ``null``) opts out: no rule, no headers.
DEFAULT_RATE_LIMITS = {
    name: [dict(rule) for rule in sim.RATE_LIMITS]
    for name, sim in PROVIDER_SIMS.items()
    if sim.RATE_LIMITS
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
    #: the instance the account lives on (federated providers): served under
    #: ``/<provider>/<instance>/…`` only (None: the default instance, ``/<provider>/…``)
    instance: str | None = None
    #: more access tokens of the same account (a personal token, other apps' tokens):
    #: they never expire; a "user" rule counts them all together
    tokens: list = field(default_factory=list)
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
            sim = PROVIDER_SIMS[self.provider]
            space = ConnectionSpace(
                self.provider,
                self.id,
                relation,
                start,
                max(size, len(included)),
                sim.NATIVE_IDS,
                sim.NEWEST_FIRST,
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
        if raw.get("instance") is not None:
            account.instance = instance_name(raw["instance"], provider, where)
        tokens = raw.get("tokens") or []
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise ScenarioError(f"{where}: 'tokens' must be a list of token strings")
        account.tokens = list(tokens)
        if raw.get("connections_include") is not None:
            account.connections_include = _includes(raw["connections_include"], provider, where)
        return account


#: path segments a federated provider already serves at its root: no instance name
RESERVED_INSTANCE_NAMES = frozenset({"api", "xrpc", "jetstream", "plc", "oauth", "_sim"})


def instance_name(raw, provider: str, where: str) -> str:
    """A federated provider's instance name: one path segment (``a.example``)."""
    if provider not in FEDERATED:
        raise ScenarioError(f"{where}: 'instance' only for {sorted(FEDERATED)}")
    if (
        not isinstance(raw, str)
        or not raw
        or raw in RESERVED_INSTANCE_NAMES
        or not all(c.isalnum() or c in "-._" for c in raw)
    ):
        raise ScenarioError(
            f"{where}: 'instance' must be a name of letters, digits, '-', '.', '_' "
            f"(not {sorted(RESERVED_INSTANCE_NAMES)})"
        )
    return raw


@dataclass
class RateLimitRule:
    """One quota: ``limit`` calls per ``window_s`` per scope key.

    ``scope`` keys the budget: "token" (each access token), "user" (the account
    that owns the token: all its tokens together, as GitHub pools them), "app"
    (every caller of the provider together) or "ip" (the client address, or
    the first X-Forwarded-For entry); a "token" or "user" rule counts a call
    without an accepted token by its address. ``applies_to: "paging"`` counts
    only calls that page (Mastodon's paging throttle); ``auth`` only callers
    with ("token") or without ("none") a token the provider accepts;
    ``path_kind`` only profile or page calls; ``endpoint`` only one route
    (``/2/users/:id``). ``per_endpoint`` gives every endpoint its own window
    (X); ``rolling`` counts the last ``window_s`` seconds instead of windows
    that reset (Facebook); ``align`` starts windows on wall-clock multiples
    (Mastodon, LinkedIn's midnight UTC); ``scale: "app_users"`` multiplies the
    limit by the provider's scenario accounts. ``status`` (GitHub: 403 or 429)
    and ``shape`` (Twitter: "v2" problem JSON or "v1" errors[]) choose the
    rejection form. ``publish: false`` makes it a hidden limit (enforced, never
    announced): it speaks in no rate-limit header, and its rejection carries
    only ``Retry-After`` (whole seconds until the window resets). ``instance``
    (federated providers) keeps the rule to that instance's calls.
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
    applies_to: str = "all"
    auth: str = "any"
    endpoint: str | None = None
    per_endpoint: bool = False
    rolling: bool = False
    scale: str | None = None
    instance: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def parse(cls, provider: str, raw: Any, where: str) -> RateLimitRule:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object")
        unknown = set(raw) - (set(cls.__dataclass_fields__) - {"provider", "implicit"})
        if unknown:
            raise ScenarioError(f"{where}: unknown field(s) {sorted(unknown)}")
        limit = raw.get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ScenarioError(f"{where}: 'limit' must be a non-negative integer")
        window = _number(raw.get("window_s", 3600), f"{where}.window_s")
        if window <= 0:
            raise ScenarioError(f"{where}: 'window_s' must be positive")
        choices = {
            "scope": SCOPES,
            "path_kind": PATH_KINDS,
            "applies_to": APPLIES_TO,
            "auth": AUTHS,
            "scale": SCALES,
            "status": (403, 429),
            "shape": ("v1", "v2"),
        }
        for name, allowed in choices.items():
            if raw.get(name) is not None and raw[name] not in allowed:
                raise ScenarioError(f"{where}: '{name}' must be one of {allowed}")
        flags = {
            "align": provider in ALIGNED_WINDOWS,
            "publish": True,
            "per_endpoint": provider in PER_ENDPOINT_WINDOWS,
            "rolling": provider in ROLLING_WINDOWS,
        }
        for name in flags:
            if name in raw:
                if not isinstance(raw[name], bool):
                    raise ScenarioError(f"{where}: '{name}' must be true or false")
                flags[name] = raw[name]
        endpoint = raw.get("endpoint")
        if endpoint is not None:
            endpoints = PROVIDER_SIMS[provider].endpoints()
            endpoint = endpoint_name(endpoint) if isinstance(endpoint, str) else endpoint
            if endpoint not in endpoints:
                raise ScenarioError(f"{where}: 'endpoint' must be one of {sorted(endpoints)}")
        instance = raw.get("instance")
        if instance is not None:
            if provider not in FEDERATED:
                raise ScenarioError(f"{where}: 'instance' only for {sorted(FEDERATED)}")
            if not isinstance(instance, str) or not instance:
                raise ScenarioError(f"{where}: 'instance' must be an instance name")
        return cls(
            provider,
            limit,
            window,
            raw.get("scope", "token"),
            raw.get("path_kind"),
            raw.get("status"),
            raw.get("shape"),
            flags["align"],
            flags["publish"],
            applies_to=raw.get("applies_to", "all"),
            auth=raw.get("auth", "any"),
            endpoint=endpoint,
            per_endpoint=flags["per_endpoint"],
            rolling=flags["rolling"],
            scale=raw.get("scale"),
            instance=instance,
        )


def parse_rate_limits(raw: Any, where: str = "rate_limits") -> dict[str, list[RateLimitRule]]:
    """``{"github": {...}}`` or ``{"github": [{...}, {...}]}`` -> rules per provider
    (``null`` or ``[]``: none at all)."""
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
    for provider in DEFAULT_RATE_LIMITS:
        if provider not in out:
            out[provider] = default_rules(provider)
    return out


def default_rules(provider: str) -> list[RateLimitRule]:
    """The provider's real limits (``ProviderSim.RATE_LIMITS``) as implicit rules."""
    rules = []
    for spec in DEFAULT_RATE_LIMITS.get(provider, []):
        rule = RateLimitRule.parse(provider, spec, f"{provider} RATE_LIMITS")
        rule.implicit = True
        rules.append(rule)
    return rules


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
    #: Mastodon instance name ("" for the default) -> the streaming base URL its
    #: ``/api/v2/instance`` announces instead of its own (as a real instance may name
    #: ``wss://streaming.<domain>``): a test's hostile or other-host instance
    streaming_urls: dict[str, str] = field(default_factory=dict)

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
        "streaming_urls",
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
    scenario.streaming_urls = parse_streaming_urls(raw.get("streaming_urls"))
    return scenario


def parse_streaming_urls(raw: Any) -> dict[str, str]:
    """``{"<instance>" | "": "wss://host[:port][/path]"}``: what each Mastodon instance
    announces as its streaming base URL."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError("streaming_urls: expected an object")
    urls = {}
    for name, url in raw.items():
        where = f"streaming_urls.{name}"
        if name:
            instance_name(name, "mastodon", where)
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ScenarioError(f"{where}: expected a ws:// or wss:// URL")
        urls[name] = url.rstrip("/")
    return urls


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


# the classes' own limits, checked when the simulator loads (a slip fails here)
for _name in DEFAULT_RATE_LIMITS:
    default_rules(_name)
