"""All of netsync's configuration, read from the environment in one place.

Development defaults work out of the box (embedded Redis, fixed dev secrets);
``NETSYNC_ENV=production`` refuses to start while a secret is missing or
still the development one. Every setting is listed in the README.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import providers
from providers.ratelimits import QuotaSpecError
from state.quota import QuotaConfig

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


class ConfigError(RuntimeError):
    """The environment does not describe a service that may start."""


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(env, name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0 (true/false), got {raw!r}")


def _regions(raw: str | None) -> dict[str, str]:
    regions = {}
    for item in _csv(raw):
        provider, sep, region = item.partition(":")
        if not sep or provider not in PROVIDERS or not region.isidentifier():
            raise ConfigError(f"PROVIDER_REGIONS entry {item!r} is not provider:region")
        regions[provider] = region
    return regions


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    redis_url: str | None = None
    #: ``REDIS_URL`` names one node of a Redis Cluster: every process uses the cluster client
    redis_cluster: bool = False
    broker_url: str | None = None
    key_prefix: str = "netsync"
    webhook_secrets: tuple[str, ...] = (DEV_WEBHOOK_SECRET,)
    api_tokens: tuple[str, ...] = (DEV_API_TOKEN,)
    encryption_keys: tuple[str, ...] = (DEV_ENCRYPTION_KEY,)
    callback_url: str | None = None
    sentry_dsn: str | None = None
    whale_threshold: int = 10_000
    freshness_seconds: int = 900
    api_urls: dict = field(default_factory=lambda: dict(REAL_API_URLS))
    provider_regions: dict = field(default_factory=dict)
    port: int = 8000
    log_level: str = "INFO"
    #: seconds a signed request's timestamp may differ from our clock
    signature_tolerance: int = 300
    #: seconds a webhook delivery id is remembered for replay protection
    delivery_ttl: int = 24 * 3600
    #: connect / read timeouts for every outbound HTTP call (seconds)
    http_connect_timeout: float = 3.05
    http_read_timeout: float = 10.0
    #: soft time limit of a page task; the HTTP timeouts stay below it
    task_soft_time_limit: int = 30
    #: at least this many tries of a BACKOFF error (5xx, timeouts) before its sync may fail
    max_backoff_attempts: int = 5
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    #: a page keeps retrying a failing provider (BACKOFF, open circuit) this long
    #: before its sync ends ``failed``: outages up to this length are ridden out
    retry_budget_seconds: float = 300.0
    #: consecutive failures of a provider that open its circuit breaker
    breaker_threshold: int = 5
    #: first wait while a provider's breaker is open (doubles per failed probe, capped)
    breaker_cooldown_seconds: float = 5.0
    breaker_max_cooldown_seconds: float = 60.0
    #: an in-flight sync older than this is considered abandoned
    sync_stale_seconds: int = 6 * 3600
    max_body_bytes: int = 64 * 1024
    #: OAuth client credentials per provider (refresh), "CLIENT_ID:SECRET"
    oauth_clients: dict = field(default_factory=dict)
    #: Standard Webhooks secrets (``whsec_<base64>``) signing callbacks; each signs (rotation)
    callback_secrets: tuple[str, ...] = (DEV_CALLBACK_SECRET,)
    #: delivery attempts of one callback before it goes to the dead-letter list
    callback_max_attempts: int = 8
    callback_backoff_base_seconds: float = 2.0
    callback_backoff_cap_seconds: float = 3600.0
    #: long-polls and event streams held at once by one web process
    live_max_connections: int = 100
    #: log line format: "json" (production default) or "text"
    log_format: str = "text"
    #: Redis broker: seconds before a dead worker's unacked message is delivered again.
    #: No task waits in the broker (waits are in the delayed set), so an unacked
    #: message is at most one task run old: 5 minutes is far above task_time_limit
    broker_visibility_timeout: int = 300
    #: a sync with no progress (and nothing parked) for this long is stalled: its
    #: pending pages are sent again (``sync.recovery``)
    stall_seconds: float = 60.0
    #: how often the scheduler process sweeps for stalled syncs
    sweep_interval: float = 15.0
    #: recoveries without progress before a stalled sync ends ``failed``
    max_recoveries: int = 3
    #: a page delivered more often than this (its worker died each time) is
    #: dead-lettered and its sync ends ``failed`` (``poison_page``)
    max_deliveries: int = 5
    #: where the embedded servers keep their files
    var_dir: Path = Path("var")
    #: PostgreSQL holding the networks and the change feed (None: the embedded one)
    database_url: str | None = None
    #: connections per process in the PostgreSQL pool
    database_pool_size: int = 8
    #: change-feed entries older than this are pruned (``flask db prune``)
    changes_retention_days: float = 30.0
    #: provider quotas and queue-class shares (``QUOTA_<PROVIDER>``, ``QUOTA_SHARES*``)
    quota: QuotaConfig = field(default_factory=lambda: QuotaConfig.from_env({}))

    @property
    def callback_keys(self) -> tuple[bytes, ...]:
        """The HMAC keys of ``callback_secrets`` (the base64 after ``whsec_``)."""
        return tuple(callback_secret_bytes(secret) for secret in self.callback_secrets)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def api_url(self, provider: str) -> str:
        return self.api_urls[provider].rstrip("/")


def load_settings(environ=None) -> Settings:
    """Build Settings from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    mode = env.get("NETSYNC_ENV", "development")
    redis_url = env.get("REDIS_URL") or None
    settings = Settings(
        env=mode,
        redis_url=redis_url,
        redis_cluster=_bool(env, "REDIS_CLUSTER"),
        broker_url=env.get("CELERY_BROKER_URL") or None,
        key_prefix=env.get("NETSYNC_KEY_PREFIX", "netsync"),
        webhook_secrets=tuple(_csv(env.get("WEBHOOK_SECRETS"))) or (DEV_WEBHOOK_SECRET,),
        api_tokens=tuple(_csv(env.get("INTERNAL_API_TOKENS"))) or (DEV_API_TOKEN,),
        encryption_keys=tuple(_csv(env.get("TOKEN_ENCRYPTION_KEY"))) or (DEV_ENCRYPTION_KEY,),
        callback_url=env.get("CALLBACK_URL") or None,
        sentry_dsn=env.get("SENTRY_DSN") or None,
        whale_threshold=_int(env, "WHALE_THRESHOLD", 10_000),
        freshness_seconds=_int(env, "FRESHNESS_SECONDS", 900),
        api_urls={p: env.get(f"{p.upper()}_API_URL") or REAL_API_URLS[p] for p in PROVIDERS},
        provider_regions=_regions(env.get("PROVIDER_REGIONS")),
        port=_int(env, "PORT", 8000),
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        http_connect_timeout=_float(env, "HTTP_CONNECT_TIMEOUT", 3.05),
        http_read_timeout=_float(env, "HTTP_READ_TIMEOUT", 10.0),
        task_soft_time_limit=_int(env, "TASK_SOFT_TIME_LIMIT", 30),
        max_backoff_attempts=_int(env, "MAX_BACKOFF_ATTEMPTS", 5),
        backoff_base_seconds=_float(env, "BACKOFF_BASE_SECONDS", 1.0),
        backoff_cap_seconds=_float(env, "BACKOFF_CAP_SECONDS", 60.0),
        retry_budget_seconds=_float(env, "RETRY_BUDGET_SECONDS", 300.0),
        breaker_threshold=_int(env, "BREAKER_THRESHOLD", 5),
        breaker_cooldown_seconds=_float(env, "BREAKER_COOLDOWN_SECONDS", 5.0),
        breaker_max_cooldown_seconds=_float(env, "BREAKER_MAX_COOLDOWN_SECONDS", 60.0),
        oauth_clients={
            p: env[f"{p.upper()}_OAUTH_CLIENT"]
            for p in PROVIDERS
            if env.get(f"{p.upper()}_OAUTH_CLIENT")
        },
        broker_visibility_timeout=_int(env, "BROKER_VISIBILITY_TIMEOUT", 300),
        stall_seconds=_float(env, "STALL_SECONDS", 60.0),
        sweep_interval=_float(env, "SWEEP_INTERVAL_SECONDS", 15.0),
        max_recoveries=_int(env, "MAX_RECOVERIES", 3),
        max_deliveries=_int(env, "MAX_DELIVERIES", 5),
        var_dir=Path(env.get("NETSYNC_VAR_DIR") or "var"),
        database_url=env.get("DATABASE_URL") or None,
        database_pool_size=_int(env, "DATABASE_POOL_SIZE", 8),
        changes_retention_days=_float(env, "CHANGES_RETENTION_DAYS", 30.0),
        callback_secrets=tuple(_csv(env.get("CALLBACK_SECRET"))) or (DEV_CALLBACK_SECRET,),
        callback_max_attempts=_int(env, "CALLBACK_MAX_ATTEMPTS", 8),
        callback_backoff_base_seconds=_float(env, "CALLBACK_BACKOFF_BASE_SECONDS", 2.0),
        callback_backoff_cap_seconds=_float(env, "CALLBACK_BACKOFF_CAP_SECONDS", 3600.0),
        live_max_connections=_int(env, "LIVE_MAX_CONNECTIONS", 100),
        log_format=(env.get("LOG_FORMAT") or ("json" if mode == "production" else "text")).lower(),
        quota=_quota(env),
    )
    validate(settings)
    return settings


def _quota(env) -> QuotaConfig:
    try:
        return QuotaConfig.from_env(env)
    except QuotaSpecError as exc:
        raise ConfigError(str(exc)) from None


def validate(settings: Settings) -> None:
    """Refuse settings a production service must not run with."""
    if settings.http_read_timeout + settings.http_connect_timeout >= settings.task_soft_time_limit:
        raise ConfigError("HTTP timeouts must stay below TASK_SOFT_TIME_LIMIT")
    for secret in settings.callback_secrets:
        callback_secret_bytes(secret)
    if settings.log_format not in ("json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text, got {settings.log_format!r}")
    if settings.callback_max_attempts < 1 or settings.live_max_connections < 1:
        raise ConfigError("CALLBACK_MAX_ATTEMPTS and LIVE_MAX_CONNECTIONS must be at least 1")
    if settings.redis_cluster:
        import queues

        if not settings.redis_url:
            raise ConfigError(
                "REDIS_CLUSTER needs REDIS_URL (a node of the cluster): "
                "there is no embedded cluster"
            )
        if not settings.broker_url or queues.is_redis_broker(settings.broker_url):
            # kombu's Redis transport speaks to one server (BRPOP over several lists,
            # its unacked hash and the restore script are multi-key, across slots)
            raise ConfigError(
                "REDIS_CLUSTER needs a CELERY_BROKER_URL that is not Redis "
                "(RabbitMQ): kombu's Redis transport cannot use a cluster"
            )
    if not settings.is_production:
        return
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
