"""The service's shared parts, built once per process from Settings.

``app.extensions["netsync"]`` holds a ``Services``: the Redis client and
everything built on it. Flask views, CLI commands and Celery tasks (which run
inside the app context) all reach them the same way: ``services()``.
"""

from __future__ import annotations

import atexit

from flask import Flask, current_app

from service.config import Settings
from state.admission import CallGate
from state.breaker import BreakerConfig, CircuitBreaker
from state.connection import connect
from state.control import PAUSE_PROPAGATION_S, ProviderSwitches
from state.credentials import CredentialStore
from state.delayed import DelayedSet
from state.metrics import Metrics
from state.networks import NetworkStore
from state.outbox import CallbackOutbox
from state.progress import SyncProgress
from state.quota import QuotaGate
from state.spend import SpendLedger
from state.store import SyncStore
from sync.runtime import Services


def resolve_redis_url(settings: Settings) -> str:
    """``REDIS_URL``, else the embedded server of this run (started if none is)."""
    if settings.redis_url:
        return settings.redis_url
    from state import embedded_redis

    url = embedded_redis.running_url(settings.var_dir)
    if url:
        return url
    server = embedded_redis.EmbeddedRedis(settings.var_dir)
    url = server.start()
    atexit.register(server.stop)
    return url


def resolve_database_url(settings: Settings) -> str:
    """``DATABASE_URL``, else the embedded PostgreSQL of this run (started if none is)."""
    if settings.database_url:
        return settings.database_url
    from state import embedded_postgres

    return embedded_postgres.start(settings.var_dir)


def build_services(settings: Settings) -> Services:
    url = resolve_redis_url(settings)
    database_url = resolve_database_url(settings)
    client = connect(
        url,
        cluster=settings.redis_cluster,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    networks = NetworkStore(database_url, settings.database_pool_size)
    ledger = SpendLedger.of(networks)
    return Services(
        settings=settings,
        redis_url=url,
        redis=client,
        store=SyncStore(client, settings.key_prefix),
        credentials=CredentialStore(client, settings.key_prefix, settings.encryption_keys),
        quota=QuotaGate(
            client,
            settings.key_prefix,
            settings.quota,
            max_margin_s=settings.http_connect_timeout + settings.http_read_timeout,
        ),
        delayed=DelayedSet(client, settings.key_prefix),
        metrics=Metrics(client, settings.key_prefix),
        # a pause reaches every worker within a second; the call path reads Redis once a second
        switches=ProviderSwitches(client, settings.key_prefix, cache_s=PAUSE_PROPAGATION_S),
        outbox=CallbackOutbox(client, settings.key_prefix),
        progress=SyncProgress(client, settings.key_prefix),
        breaker=CircuitBreaker(
            client,
            settings.key_prefix,
            BreakerConfig(
                threshold=settings.breaker_threshold,
                cooldown_s=settings.breaker_cooldown_seconds,
                max_cooldown_s=settings.breaker_max_cooldown_seconds,
                probe_lease_s=settings.http_connect_timeout + settings.http_read_timeout + 5,
            ),
        ),
        networks=networks,
        gate=call_gate(client, settings, ledger),
        ledger=ledger,
        database_url=database_url,
    )


def call_gate(client, settings: Settings, ledger: SpendLedger | None = None) -> CallGate:
    """The gate every outbound call passes (``state.admission``), from the settings."""
    return CallGate(
        client,
        settings.key_prefix,
        settings.spend,
        ledger=ledger,
        shares=settings.quota.shares,
        max_margin_s=settings.http_connect_timeout + settings.http_read_timeout,
        windows=settings.quota.windows(),
    )


def init_app(app: Flask) -> None:
    app.extensions["netsync"] = build_services(app.config["NETSYNC_SETTINGS"])


def services() -> Services:
    return current_app.extensions["netsync"]
