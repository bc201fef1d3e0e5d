"""All of netsync's configuration, read from the environment in one place.

Each setting is declared once, in ``SETTINGS``: its variable, what it means,
its group, the ``Settings`` field it fills, how its value is read and its
default. ``Settings`` (its fields and their defaults), ``load_settings`` and
the documented table (``docs/settings.md``, ``python -m devtools.settings_docs``)
are all made from that one declaration.

Development defaults work out of the box (embedded Redis, fixed dev secrets);
``NETSYNC_ENV=production`` refuses to start while a secret is missing or
still the development one.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

import providers
from providers.ratelimits import QuotaSpecError
from state.quota import QuotaConfig
from state.spend_settings import SpendSettings, SpendSettingsError

#: every provider's name, from the registry (``providers.REGISTRY``)
PROVIDERS = providers.names()

#: each provider's real API, from its class (``<PROVIDER>_API_URL`` replaces it)
REAL_API_URLS = {name: cls.API_URL for name, cls in providers.provider_classes().items()}

# Development-only secrets: good enough for `make demo`, refused in production.
DEV_WEBHOOK_SECRET = "dev-webhook-secret"
DEV_API_TOKEN = "dev-api-token"
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktZmVybmV0LWtleS1kby1ub3QtdXNlLSE="  # 32 bytes, urlsafe b64
#: the Standard Webhooks secret of development: derived, so `make demo` needs none
DEV_CALLBACK_SECRET = (
    "whsec_" + base64.b64encode(hashlib.sha256(b"netsync-dev-callback-secret").digest()).decode()
)

#: the placeholder in a family of variables, one per provider (``<PROVIDER>_API_URL``)
PER_PROVIDER = "<PROVIDER>"


class ConfigError(RuntimeError):
    """The environment does not describe a service that may start."""


# How a variable's (non-empty) text becomes a value. Each takes the variable's
# name, so that every refusal names it; the return annotation is the field's type.


def _text(var: str, raw: str) -> str:
    return raw


def _upper(var: str, raw: str) -> str:
    return raw.upper()


def _lower(var: str, raw: str) -> str:
    return raw.lower()


def _integer(var: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{var} must be an integer, got {raw!r}") from None


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(var: str, raw: str) -> int:
    """Seconds from ``30m``, ``24h``, ``7d``, ``90s`` or ``3600``."""
    match = _DURATION.match(raw or "")
    if not match:
        raise ConfigError(f"{var} must be a duration like 30m, 24h, 7d or 3600, got {raw!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _number(var: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {raw!r}") from None


def _flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var} must be 1/0 (true/false), got {value!r}")


def _csv(var: str, raw: str) -> tuple[str, ...]:
    """Comma-separated, in order (the first signs or encrypts); blanks dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _path(var: str, raw: str) -> Path:
    return Path(raw)


def _regions(var: str, raw: str) -> dict:
    regions = {}
    for item in _csv(var, raw):
        provider, sep, region = item.partition(":")
        if not sep or provider not in PROVIDERS or not region.isidentifier():
            raise ConfigError(f"{var} entry {item!r} is not provider:region")
        regions[provider] = region
    return regions


def _quota(var: str, env: Mapping[str, str]) -> QuotaConfig:
    """Every ``QUOTA_*`` variable at once; a refusal names the one at fault."""
    try:
        return QuotaConfig.from_env(env)
    except QuotaSpecError as exc:
        culprit = next(
            (name for name in sorted(env) if name.startswith("QUOTA_") and _refused(name, env)),
            "QUOTA_*",
        )
        raise ConfigError(f"{culprit}: {exc}") from None


def _spend(var: str, env: Mapping[str, str]) -> SpendSettings:
    """Every ``PRICE_*`` and ``BUDGET_*`` variable at once; a refusal names the one at fault."""
    try:
        return SpendSettings.from_env(env)
    except SpendSettingsError as exc:
        raise ConfigError(str(exc)) from None


def _refused(name: str, env: Mapping[str, str]) -> bool:
    try:
        QuotaConfig.from_env({name: env[name]})
    except QuotaSpecError:
        return True
    return False


#: the providers that have a push channel (``sync.streams``), the default of ``STREAMS``
STREAM_PROVIDERS = ("bluesky", "mastodon", "twitter")


def _streams(var: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """``STREAMS``: unset is every channel; set but empty is none."""
    if var not in env:
        return STREAM_PROVIDERS
    chosen = _csv(var, env[var].lower())
    unknown = sorted(set(chosen) - set(STREAM_PROVIDERS))
    if unknown:
        raise ConfigError(f"{var}: no push channel for {unknown} (known: {STREAM_PROVIDERS})")
    return chosen


#: a default that differs in production (``Setting.production_default``)
_SAME = object()


@dataclass(frozen=True)
class Setting:
    """One environment variable (or one family of them, one per provider)."""

    #: the variable; ``<PROVIDER>`` in it makes a family (``GITHUB_API_URL``, …);
    #: None: a fixed value, not read from the environment
    var: str | None
    #: one line of meaning, for the documented table
    meaning: str
    #: the documented table's section
    group: str
    #: the ``Settings`` attribute it fills; None: no field of its own (read by
    #: the Procfile, or with another variable: its meaning says which)
    field: str | None = None
    #: ``(var, raw) -> value`` for a non-empty value
    parse: Callable[[str, str], Any] = _text
    #: the value when unset or empty (a family: the dict its variables update)
    default: Any = None
    #: the default in production, when it differs
    production_default: Any = _SAME
    #: the default as the table writes it, when the value alone would not say
    shown: str | None = None
    #: reads the whole environment instead of ``var`` alone (an open family)
    read: Callable[[str, Mapping[str, str]], Any] | None = None

    def variables(self) -> list[str]:
        """The variable's name, or one name per provider for a family."""
        if self.var is None:
            return []
        if PER_PROVIDER not in self.var:
            return [self.var]
        return [self.var.replace(PER_PROVIDER, name.upper()) for name in PROVIDERS]

    def load(self, env: Mapping[str, str], production: bool = False) -> Any:
        """This setting's value in ``env``: unset, empty or blank is the default."""
        if self.read is not None:
            return self.read(self.var, env)
        if PER_PROVIDER in self.var:
            values = dict(self.default)
            for name, var in zip(PROVIDERS, self.variables()):
                if (env.get(var) or "").strip():
                    values[name] = self.parse(var, env[var])
            return values
        raw = env.get(self.var)
        value = self.parse(self.var, raw) if (raw or "").strip() else None
        if value is None or value == ():  # an empty list is no list: the default
            return self.default_value(production)
        return value

    def default_value(self, production: bool = False) -> Any:
        if production and self.production_default is not _SAME:
            return self.production_default
        return copy.copy(self.default)


STORES = "Environment and stores"
SECRETS = "Secrets"
CALLBACKS = "Callbacks"
SYNCS = "Syncs, queues and providers"
CALLS = "Calls, retries and recovery"
PROCESSES = "Processes and observability"
PUSH = "Push channels (the streams role)"
FIXED = "Fixed values"

#: every setting, once: ``Settings``, ``load_settings`` and ``docs/settings.md`` follow
# (kept one setting to a few lines, as a table reads, rather than as the formatter would)
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    # -- environment and stores
    Setting(
        "NETSYNC_ENV", "`production` enforces real secrets", STORES,
        field="env", default="development",
    ),
    Setting(
        "REDIS_URL",
        "hot state: sync records, cursors, page staging, quotas, delayed set",
        STORES, field="redis_url", shown="embedded Redis under `./var/`; required in production",
    ),
    Setting(
        "REDIS_CLUSTER",
        "`1`: `REDIS_URL` is one node of a Redis Cluster and every process uses redis-py's "
        "cluster client; needs a non-Redis `CELERY_BROKER_URL` (kombu's Redis transport "
        "cannot use a cluster)",
        STORES, field="redis_cluster", parse=_flag, default=False, shown="`0` (one Redis server)",
    ),
    Setting(
        "DATABASE_URL",
        "PostgreSQL (`postgresql://…`): networks, linked accounts, the change feed",
        STORES, field="database_url",
        shown="embedded PostgreSQL under `./var/postgres`; required in production",
    ),
    Setting(
        "DATABASE_POOL_SIZE", "PostgreSQL connections per process (a pool, opened on first use)",
        STORES, field="database_pool_size", parse=_integer, default=8,
    ),
    Setting(
        "CHANGES_RETENTION_DAYS",
        "change-feed entries older than this are removed by `flask --app service db prune`",
        STORES, field="changes_retention_days", parse=_number, default=30.0,
    ),
    Setting(
        "CELERY_BROKER_URL", "broker (`redis://…` or `amqp://…`)", STORES,
        field="broker_url", shown="`REDIS_URL`",
    ),
    Setting(
        "NETSYNC_KEY_PREFIX", "prefix of every netsync key in Redis", STORES,
        field="key_prefix", default="netsync",
    ),
    Setting(
        "NETSYNC_VAR_DIR", "where the embedded Redis and PostgreSQL keep their files", STORES,
        field="var_dir", parse=_path, default=Path("var"), shown="`./var`",
    ),
    # -- secrets
    Setting(
        "WEBHOOK_SECRETS", "comma-separated HMAC secrets (first signs, all verify)", SECRETS,
        field="webhook_secrets", parse=_csv, default=(DEV_WEBHOOK_SECRET,),
        shown="dev secret; required in production",
    ),
    Setting(
        "INTERNAL_API_TOKENS", "comma-separated bearer tokens for `/v1` and the dashboard",
        SECRETS, field="api_tokens", parse=_csv, default=(DEV_API_TOKEN,),
        shown="dev token; required in production",
    ),
    Setting(
        "TOKEN_ENCRYPTION_KEY",
        "Fernet keys for provider credentials at rest, comma-separated (first encrypts, "
        "all decrypt)",
        SECRETS, field="encryption_keys", parse=_csv, default=(DEV_ENCRYPTION_KEY,),
        shown="dev key; required in production",
    ),
    Setting(
        "CALLBACK_SECRET",
        "Standard Webhooks signing secret(s) for callbacks, `whsec_<base64 of ≥ 24 random "
        "bytes>`; comma-separated during a rotation (each signs)",
        SECRETS, field="callback_secrets", parse=_csv, default=(DEV_CALLBACK_SECRET,),
        shown="derived in dev; required in production when `CALLBACK_URL` is set",
    ),
    # -- callbacks
    Setting(
        "CALLBACK_URL",
        "where completion events are POSTed (signed, from a durable outbox; see "
        "[Callbacks](api.md#callbacks))",
        CALLBACKS, field="callback_url",
    ),
    Setting(
        "CALLBACK_MAX_ATTEMPTS",
        "delivery attempts of one callback before it goes to the dead-letter list",
        CALLBACKS, field="callback_max_attempts", parse=_integer, default=8,
    ),
    Setting(
        "CALLBACK_BACKOFF_BASE_SECONDS",
        "full-jitter backoff between callback attempts: the first wait's ceiling (never "
        "sooner than the receiver's `Retry-After`)",
        CALLBACKS, field="callback_backoff_base_seconds", parse=_number, default=2.0,
    ),
    Setting(
        "CALLBACK_BACKOFF_CAP_SECONDS", "the longest wait between callback attempts", CALLBACKS,
        field="callback_backoff_cap_seconds", parse=_number, default=3600.0,
    ),
    # -- syncs, queues and providers
    Setting(
        "WHALE_THRESHOLD", "account size above which a sync runs on `whale`", SYNCS,
        field="whale_threshold", parse=_integer, default=10_000,
    ),
    Setting(
        "FRESHNESS_SECONDS", "a login within this of the last sync does not re-sync", SYNCS,
        field="freshness_seconds", parse=_integer, default=900,
    ),
    Setting(
        "FULL_SYNC_EVERY",
        "`auto` syncs a network in full (verifying it, removals included) when its last "
        "full sync is older than this (`24h`, `30m`, seconds); else incrementally",
        SYNCS, field="full_sync_every_seconds", parse=_duration, default=86400,
    ),
    Setting(
        "PROVIDER_REGIONS",
        "`provider:region,…`: that provider's work goes to `<region>.normal` etc.",
        SYNCS, field="provider_regions", parse=_regions, default={},
    ),
    Setting(
        "<PROVIDER>_API_URL",
        "a provider's base URL (every provider in [Providers](../README.md#providers))",
        SYNCS, field="api_urls", default=REAL_API_URLS,
        shown="the real API (the provider class's `API_URL`)",
    ),
    Setting(
        "OUTBOUND_ALLOW_PRIVATE",
        "comma-separated `host:port`s (as an instance URL writes them) that a user-supplied "
        "instance URL may name although they are loopback or private, `http` then too (tests, "
        "the demo's simulator); see [Federated instances](operations.md#federated-instances)",
        SYNCS, field="outbound_allow_private", parse=_csv, default=(),
        shown="none: only public addresses, `https`",
    ),
    Setting(
        "BLUESKY_PLC_URL", "PLC directory serving `did:plc` DID documents (a Bluesky account's PDS)",
        SYNCS, field="bluesky_plc_url", default="https://plc.directory",
    ),
    Setting(
        "<PROVIDER>_OAUTH_CLIENT",
        "`client_id:client_secret` for token refresh (OAuth 2) or signing (Twitter OAuth 1.0a)",
        SYNCS, field="oauth_clients", default={},
    ),
    Setting(
        "QUOTA_<PROVIDER>",
        "`limit/window_s/scope[/adaptive][,…]` (scope `token`, `app` or `ip`); see "
        "[Quotas](operations.md#quotas)",
        SYNCS, field="quota", read=_quota, default=QuotaConfig.from_env({}),
        shown="the provider class's `QUOTAS` ([Providers](../README.md#providers))",
    ),
    Setting(
        "QUOTA_SHARES",
        "per-class shares of shared buckets, every provider (read with `QUOTA_<PROVIDER>`)",
        SYNCS, shown="`normal:0.5,whale:0.4,trickle:0.1`",
    ),
    Setting(
        "QUOTA_SHARES_<PROVIDER>", "one provider's per-class shares, instead of `QUOTA_SHARES`",
        SYNCS, shown="`QUOTA_SHARES`",
    ),
    Setting(
        "PRICE_<PROVIDER>",
        "USD per resource the provider bills (`PRICE_TWITTER=0.01`: per follower or user "
        "returned); each sync's `cost.usd` and the day's spend are counted at it; see "
        "[Spend](operations.md#spend)",
        SYNCS, field="spend", read=_spend, default=SpendSettings.from_env({}),
        shown="the provider class's `PRICE_USD` (X: 0.010), 0 where free",
    ),
    Setting(
        "BUDGET_<PROVIDER>",
        "`<usd>/day` (a UTC day; read with `PRICE_<PROVIDER>`): a call is reserved at its worst "
        "case before it is sent (a page asks for fewer items when less is left); one that "
        "does not fit parks, its sync `running` with `waiting_for: spend_budget`, until the "
        "next UTC day",
        SYNCS, shown="none",
    ),
    # -- calls, retries and recovery
    Setting(
        "HTTP_CONNECT_TIMEOUT", "seconds, every outbound call", CALLS,
        field="http_connect_timeout", parse=_number, default=3.05,
    ),
    Setting(
        "HTTP_READ_TIMEOUT", "seconds, every outbound call", CALLS,
        field="http_read_timeout", parse=_number, default=10.0,
    ),
    Setting(
        "TASK_SOFT_TIME_LIMIT",
        "seconds a task may run; the hard limit is 15 s more; must exceed the HTTP timeouts",
        CALLS, field="task_soft_time_limit", parse=_integer, default=30,
    ),
    Setting(
        "MAX_BACKOFF_ATTEMPTS",
        "at least this many tries of a transient error (5xx, timeout) before the sync may fail",
        CALLS, field="max_backoff_attempts", parse=_integer, default=5,
    ),
    Setting(
        "BACKOFF_BASE_SECONDS", "full-jitter exponential backoff: the first wait's ceiling",
        CALLS, field="backoff_base_seconds", parse=_number, default=1.0,
    ),
    Setting(
        "BACKOFF_CAP_SECONDS", "full-jitter exponential backoff: the longest wait", CALLS,
        field="backoff_cap_seconds", parse=_number, default=60.0,
    ),
    Setting(
        "RETRY_BUDGET_SECONDS",
        "a page keeps retrying a failing provider (backoff, open circuit) this long: outages "
        "up to this length are ridden out; longer ends the sync `failed` with the previous "
        "network intact (the next trigger tries again)",
        CALLS, field="retry_budget_seconds", parse=_number, default=300.0,
    ),
    Setting(
        "BREAKER_THRESHOLD",
        "consecutive failures of a provider (any worker) that open its circuit breaker: its "
        "pages are parked and one probe call at a time tests whether it is back",
        CALLS, field="breaker_threshold", parse=_integer, default=5,
    ),
    Setting(
        "BREAKER_COOLDOWN_SECONDS",
        "first wait while a provider's breaker is open; doubles after each failed probe",
        CALLS, field="breaker_cooldown_seconds", parse=_number, default=5.0,
    ),
    Setting(
        "BREAKER_MAX_COOLDOWN_SECONDS", "the longest wait while a provider's breaker is open",
        CALLS, field="breaker_max_cooldown_seconds", parse=_number, default=60.0,
    ),
    Setting(
        "BROKER_VISIBILITY_TIMEOUT",
        "Redis broker: seconds before an unacked message of a dead worker is redelivered; no "
        "task waits in the broker (waits are in the delayed set), so it only has to exceed "
        "one task run (`TASK_SOFT_TIME_LIMIT` + 15 s, checked at start-up in production)",
        CALLS, field="broker_visibility_timeout", parse=_integer, default=300,
    ),
    Setting(
        "BROKER_HEARTBEAT_SECONDS",
        "RabbitMQ: the AMQP heartbeat; a consumer whose host is lost is dropped after about "
        "two of these, and its unacked messages requeued (Celery's default is 120)",
        CALLS, field="broker_heartbeat_seconds", parse=_integer, default=10,
    ),
    Setting(
        "STALL_SECONDS",
        "a sync with no page stored, no call made and nothing parked for this long is "
        "stalled: the scheduler sends its pending pages again (see "
        "[Recovery](operations.md#recovery))",
        CALLS, field="stall_seconds", parse=_number, default=60.0,
    ),
    Setting(
        "SWEEP_INTERVAL_SECONDS", "how often the scheduler sweeps for stalled syncs", CALLS,
        field="sweep_interval", parse=_number, default=15.0,
    ),
    Setting(
        "MAX_DELIVERIES",
        "a page delivered more often than this, its worker dying each time (a poison page), "
        "goes to the dead-letter set and its sync ends `failed` (`poison_page`)",
        CALLS, field="max_deliveries", parse=_integer, default=5,
    ),
    Setting(
        "MAX_RECOVERIES",
        "recoveries without progress before a stalled sync ends `failed` (`stalled`)",
        CALLS, field="max_recoveries", parse=_integer, default=3,
    ),
    Setting(
        "WORKER_BEAT_SECONDS",
        "how often each worker process renews its heartbeat in Redis (see "
        "[Lost workers](operations.md#lost-workers))",
        CALLS, field="worker_beat_seconds", parse=_number, default=1.0,
    ),
    Setting(
        "WORKER_LOST_SECONDS",
        "a worker whose heartbeat is this old is lost (host gone, cut off, killed): the "
        "scheduler sends the pages it held again at once, without waiting for "
        "`STALL_SECONDS` or the broker; at least twice `WORKER_BEAT_SECONDS`",
        CALLS, field="worker_lost_seconds", parse=_number, default=5.0,
    ),
    Setting(
        "SCHEDULER_LEASE_SECONDS",
        "of two schedulers, the one holding this lease in Redis runs the lost-worker sweep; "
        "the other takes it over this long after the first stops renewing it",
        CALLS, field="scheduler_lease_seconds", parse=_number, default=5.0,
    ),
    # -- processes and observability
    Setting(
        "PORT", "web port for `make run`", PROCESSES, field="port", parse=_integer, default=8000,
    ),
    Setting(
        "LIVE_MAX_CONNECTIONS",
        "long-polls and event streams one web process holds at once; past it `503` + "
        "`Retry-After`",
        PROCESSES, field="live_max_connections", parse=_integer, default=100,
    ),
    Setting(
        "SENTRY_DSN", "Sentry, in web, workers and scheduler", PROCESSES, field="sentry_dsn",
    ),
    Setting(
        "LOG_LEVEL", "log level", PROCESSES, field="log_level", parse=_upper, default="INFO",
    ),
    Setting(
        "LOG_FORMAT", "`json` (one JSON object per line) or `text` (`key=value`)", PROCESSES,
        field="log_format", parse=_lower, default="text", production_default="json",
        shown="`json` in production, else `text`",
    ),
    Setting(
        "FLOWER_BASIC_AUTH",
        "the optional `flower` role's `user:password` (required to start it; without it the "
        "role says so and idles; read by the Procfile)",
        PROCESSES,
    ),
    Setting(
        "FLOWER_PORT", "the optional `flower` role's port (read by the Procfile)", PROCESSES,
        shown="5555",
    ),
    # -- fixed values: fields of Settings that no variable sets (tests may replace them)
    Setting(
        None, "seconds a signed request's timestamp may differ from our clock", FIXED,
        field="signature_tolerance", default=300,
    ),
    Setting(
        None, "seconds a webhook delivery id is remembered (replay protection)", FIXED,
        field="delivery_ttl", default=24 * 3600,
    ),
    # -- push channels
    Setting(
        "STREAMS",
        "comma-separated providers whose push channels the `streams` role holds "
        "(`bluesky`, `mastodon`, `twitter`); set but empty: none",
        PUSH, field="streams", read=_streams, default=STREAM_PROVIDERS,
        shown="every provider that has one (`bluesky,mastodon,twitter`)",
    ),
    Setting(
        "BLUESKY_JETSTREAM_URL", "Jetstream `subscribe` endpoint the `streams` role reads",
        PUSH, field="jetstream_url", default="wss://jetstream2.us-east.bsky.network/subscribe",
    ),
    Setting(
        "JETSTREAM_REPLAY_SECONDS",
        "how far back Jetstream replays from a cursor; a `streams` role stopped longer marks "
        "every Bluesky network for a full sync (v2 keeps 36 h; a public v1 host less)",
        PUSH, field="jetstream_replay_seconds", parse=_number, default=24 * 3600.0,
    ),
    Setting(
        "STREAMS_REWIND_SECONDS",
        "a Jetstream reconnect resumes this far before the last applied cursor (its time "
        "stamps are not ordered; the events' identities make the overlap harmless)",
        PUSH, field="streams_rewind_seconds", parse=_number, default=5.0,
    ),
    Setting(
        "TWITTER_ACTIVITY_TOKEN",
        "app bearer token for X's Activity API (subscriptions, stream); without it the "
        "`streams` role holds no X channel",
        PUSH, field="twitter_activity_token",
    ),
    Setting(
        "STREAMS_DEBOUNCE_SECONDS",
        "a user's `network.changed` callback waits this long after a pushed change, so a "
        "burst is one callback",
        PUSH, field="streams_debounce_seconds", parse=_number, default=2.0,
    ),
    Setting(
        "STREAMS_MAX_EVENTS_PER_SECOND",
        "a push connection that sends more frames than this per second (or malformed ones) "
        "is cut, logged and counted, and reconnected after a backoff",
        PUSH, field="streams_max_events_per_second", parse=_integer, default=5000,
    ),
    Setting(
        None, "how many shards the Mastodon streams are leased in (several `streams` processes)",
        FIXED, field="streams_shards", default=64,
    ),
    Setting(
        None, "an in-flight sync older than this (seconds) is considered abandoned", FIXED,
        field="sync_stale_seconds", default=6 * 3600,
    ),
    Setting(
        None, "the largest request body (bytes); a larger one is answered `413`", FIXED,
        field="max_body_bytes", default=64 * 1024,
    ),
)
# fmt: on


class _SettingsBehaviour:
    """What ``Settings`` answers beyond its fields."""

    @property
    def callback_keys(self) -> tuple[bytes, ...]:
        """The HMAC keys of ``callback_secrets`` (the base64 after ``whsec_``)."""
        return tuple(callback_secret_bytes(secret) for secret in self.callback_secrets)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def api_url(self, provider: str) -> str:
        return self.api_urls[provider].rstrip("/")


def _settings_field(setting: Setting) -> tuple[str, Any, Any]:
    """``setting`` as a dataclass field: its name, its type, its default."""
    kind = setting.parse.__annotations__.get("return", "Any")
    if setting.read is not None:
        kind = setting.read.__annotations__.get("return", "Any")
    if setting.default is None:
        kind = f"{kind} | None"
    if isinstance(setting.default, dict):
        return setting.field, kind, field(default_factory=setting.default_value)
    return setting.field, kind, field(default=setting.default)


#: the settings of one process: one field per ``SETTINGS`` entry that names one
Settings = make_dataclass(
    "Settings",
    [_settings_field(setting) for setting in SETTINGS if setting.field],
    bases=(_SettingsBehaviour,),
    namespace={"__module__": __name__, "__doc__": "One process's settings (``SETTINGS``)."},
    frozen=True,
    kw_only=True,
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``environ`` (default: ``os.environ``), in ``SETTINGS`` order."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field and setting.var:
            production = values.get("env") == "production"
            values[setting.field] = setting.load(env, production)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Refuse settings no service may start with, and in production dev secrets."""
    _check_limits(settings)
    if settings.redis_cluster:
        _check_cluster(settings)
    if settings.is_production:
        _check_production(settings)


def _check_limits(settings: Settings) -> None:
    if settings.http_read_timeout + settings.http_connect_timeout >= settings.task_soft_time_limit:
        raise ConfigError(
            "HTTP_CONNECT_TIMEOUT + HTTP_READ_TIMEOUT must stay below TASK_SOFT_TIME_LIMIT"
        )
    for secret in settings.callback_secrets:
        callback_secret_bytes(secret)
    if settings.log_format not in ("json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text, got {settings.log_format!r}")
    if settings.worker_lost_seconds < 2 * settings.worker_beat_seconds:
        raise ConfigError("WORKER_LOST_SECONDS must be at least twice WORKER_BEAT_SECONDS")
    if settings.callback_max_attempts < 1 or settings.live_max_connections < 1:
        raise ConfigError("CALLBACK_MAX_ATTEMPTS and LIVE_MAX_CONNECTIONS must be at least 1")


def _check_cluster(settings: Settings) -> None:
    import queues

    if not settings.redis_url:
        raise ConfigError(
            "REDIS_CLUSTER needs REDIS_URL (a node of the cluster): there is no embedded cluster"
        )
    if not settings.broker_url or queues.is_redis_broker(settings.broker_url):
        # kombu's Redis transport speaks to one server (BRPOP over several lists,
        # its unacked hash and the restore script are multi-key, across slots)
        raise ConfigError(
            "REDIS_CLUSTER needs a CELERY_BROKER_URL that is not Redis "
            "(RabbitMQ): kombu's Redis transport cannot use a cluster"
        )


def _check_production(settings: Settings) -> None:
    if settings.broker_visibility_timeout <= settings.task_soft_time_limit + 15:
        # (tests shorten it on purpose, to show that no wait sits in the broker)
        raise ConfigError(
            "BROKER_VISIBILITY_TIMEOUT must exceed the task time limit "
            "(TASK_SOFT_TIME_LIMIT + 15 s): a running task's message would be "
            "delivered again"
        )
    problems = []
    if settings.callback_url and DEV_CALLBACK_SECRET in settings.callback_secrets:
        problems.append("CALLBACK_SECRET (CALLBACK_URL is set)")
    if DEV_WEBHOOK_SECRET in settings.webhook_secrets:
        problems.append("WEBHOOK_SECRETS")
    if DEV_API_TOKEN in settings.api_tokens:
        problems.append("INTERNAL_API_TOKENS")
    if DEV_ENCRYPTION_KEY in settings.encryption_keys:
        problems.append("TOKEN_ENCRYPTION_KEY")
    if not settings.redis_url:
        problems.append("REDIS_URL (no embedded Redis in production)")
    if not settings.database_url:
        problems.append("DATABASE_URL (no embedded PostgreSQL in production)")
    if problems:
        raise ConfigError("production needs real values for: " + ", ".join(problems))


def callback_secret_bytes(secret: str) -> bytes:
    """The key of a Standard Webhooks secret: the base64 after ``whsec_``."""
    if not secret.startswith("whsec_"):
        raise ConfigError("CALLBACK_SECRET must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("CALLBACK_SECRET must look like whsec_<base64>") from None
    if len(key) < 24:
        raise ConfigError("CALLBACK_SECRET must hold at least 24 random bytes")
    return key
