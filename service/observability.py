"""What operators see of netsync: logs, Sentry, shared counters, metrics, health.

- Logs: one line per event, ``key=value``; anything token-like is redacted
  from every log record of the process, whoever logs it.
- Sentry (``SENTRY_DSN``): no request bodies, no local variables, no PII;
  tokens scrubbed from every event; expected provider errors (rate limits,
  revoked tokens: ``exc.expected is True``) are not crashes and not sent.
- Counters: ``count(name, **labels)`` adds one to a field of the Redis hash
  ``<prefix>:metrics``, so web, workers and CLI all add to the same numbers.
- ``bp``: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus text).
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import sys

import redis
from flask import Blueprint, Flask, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from service.extensions import services
from state.credentials import SECRETS_IN_USE

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)

# -- redaction ----------------------------------------------------------------
REDACTED = "[redacted]"
_SECRET_NAMES = (r"access_token|refresh_token|token_secret|oauth_token_secret|oauth_token"
                 r"|oauth_signature|client_secret|password|api_key")
_SECRET_ASSIGNMENT = re.compile(
    rf"(?i)(\b(?:{_SECRET_NAMES})\b[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;)}}\]]+")
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization\b[\"']?\s*[=:]\s*[\"']?)(?:(?:bearer|basic|oauth|token)\s+)?[^\s\"',}]+")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
#: keys whose values are secrets wherever they appear (log extras, Sentry events)
SENSITIVE_KEY = re.compile(r"(?i)token|secret|password|passw|authorization|cookie|signature"
                           r"|api[_-]?key|credential")


def redact(text: str) -> str:
    """``text`` with token-like values replaced (query strings, headers, JSON, reprs),
    and every secret value this process handles (``SECRETS_IN_USE``) wherever it is."""
    text = SECRETS_IN_USE.scrub(text, REDACTED)
    text = _SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", text)
    text = _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)
    return _AUTHORIZATION.sub(rf"\1{REDACTED}", text)


def _redact_record(record: logging.LogRecord) -> None:
    """Rewrite a record's message only when it holds a secret (keeps Sentry's grouping)."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string is logging's to report, not ours
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


def install_redaction() -> None:
    """Redact every record this process creates, whichever handler ends up with it."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "netsync_redacting", False):
        return

    def redacting_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        _redact_record(record)
        return record

    redacting_factory.netsync_redacting = True
    logging.setLogRecordFactory(redacting_factory)


# -- log lines ----------------------------------------------------------------
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


def _value(value) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"`` plus the record's extras, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                fields[key] = REDACTED if SENSITIVE_KEY.search(key) else redact(str(value))
        if record.exc_info:
            fields["exc"] = record.exc_text or redact(self.formatException(record.exc_info))
        return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


#: libraries that log credentials at DEBUG (oauthlib: the signing key, the collected
#: OAuth parameters; requests-oauthlib: the signed headers): never below INFO
CHATTY_SECRET_LOGGERS = ("oauthlib", "requests_oauthlib")


def configure_logging(level: str = "INFO") -> None:
    """Install redaction, and our line format unless the host already set up logging."""
    install_redaction()
    numeric = logging.getLevelName(str(level).upper())
    floor = max(logging.INFO, numeric if isinstance(numeric, int) else logging.INFO)
    for name in CHATTY_SECRET_LOGGERS:
        logging.getLogger(name).setLevel(floor)
    root = logging.getLogger()
    if root.handlers:  # gunicorn, pytest, an embedding app: theirs stays
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level)


# -- Sentry -------------------------------------------------------------------
def scrub(value):
    """A copy of a Sentry event (or any part of it) with every token-like value removed."""
    if isinstance(value, dict):
        return {key: REDACTED if isinstance(key, str) and SENSITIVE_KEY.search(key)
                else scrub(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


def before_send(event: dict, hint: dict) -> dict | None:
    """Drop expected provider errors; scrub the rest."""
    exc_info = hint.get("exc_info") if hint else None
    if exc_info and getattr(exc_info[1], "expected", False) is True:
        return None
    return scrub(event)


def init_sentry(settings) -> bool:
    """Start Sentry once per process when ``SENTRY_DSN`` is set; True if it runs."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    if sentry_sdk.get_client().is_active():
        return True
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.env,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals may hold a token
        max_request_body_size="never",  # the login webhook's body carries tokens
        before_send=before_send,
    )
    return True


# -- shared counters ------------------------------------------------------------
_FIELD = re.compile(r'^(\w+)\{(.*)\}$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')

#: help text of the counters netsync increments (others get a generic one)
COUNTER_HELP = {
    "triggers": "Sync triggers by kind (webhook, api, cli, stale) and outcome "
                "(queued, inflight, fresh, no_credentials, invalid)",
    "syncs_finished": "Syncs that reached a final status, by provider and status",
    "webhook_deliveries": "Login webhook deliveries by outcome (accepted, replayed, "
                          "bad_signature, invalid)",
    "api_auth_failures": "Requests to /v1 refused for a wrong bearer token",
}


def count(name: str, **labels) -> None:
    """Add one to a shared counter (``state.metrics``); never fails the caller."""
    try:
        services().metrics.count(name, **labels)
    except RuntimeError:  # outside an app context: nobody to count for
        log.debug("counter not counted", extra={"counter": name})


def counter_families(raw: dict) -> list[CounterMetricFamily]:
    """Prometheus counters from the metrics hash (fields as written by ``count``)."""
    series: dict[str, list[tuple[dict, float]]] = {}
    for field, value in raw.items():
        match = _FIELD.match(field.decode())
        if match:
            labels = dict(_LABEL.findall(match.group(2)))
            series.setdefault(match.group(1), []).append((labels, float(value)))
    families = []
    for name, points in sorted(series.items()):
        label_names = sorted({key for labels, _ in points for key in labels})
        family = CounterMetricFamily(f"netsync_{name}", COUNTER_HELP.get(name, name),
                                     labels=label_names)
        for labels, value in points:
            family.add_metric([labels.get(key, "") for key in label_names], value)
        families.append(family)
    return families


# -- broker gauges ----------------------------------------------------------------
def _broker_redis(app: Flask, svc) -> redis.Redis | None:
    """A client for the broker when it is Redis (the state store's own when shared)."""
    url = app.extensions["celery"].conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    if url == svc.redis_url:
        return svc.redis
    client = app.extensions.get("netsync_broker_redis")
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        app.extensions["netsync_broker_redis"] = client
    return client


def queue_lengths(app: Flask, svc) -> dict[str, int]:
    """Messages waiting per queue on a Redis broker (kombu keeps one list per priority)."""
    import queues

    client = _broker_redis(app, svc)
    if client is None:
        return {}
    options = app.extensions["celery"].conf.broker_transport_options or {}
    sep = options.get("sep", "\x06\x16")  # kombu's defaults
    steps = options.get("priority_steps", [0, 3, 6, 9])
    names = queues.all_queue_names(svc.settings.provider_regions)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for step in steps:
                pipe.llen(f"{name}{sep}{step}" if step else name)
        lengths = pipe.execute()
    per_queue = len(steps)
    return {name: sum(lengths[i * per_queue:(i + 1) * per_queue]) for i, name in enumerate(names)}


def delayed_size(svc) -> int | None:
    """Tasks parked in the delayed set (rate-limit waits, backoff), if it can say."""
    size = getattr(svc.delayed, "size", None)
    return int(size()) if callable(size) else None


class NetsyncCollector:
    """Reads the shared counters and broker gauges at scrape time."""

    def __init__(self, app: Flask, svc):
        self.app, self.svc = app, svc

    def collect(self):
        up = GaugeMetricFamily("netsync_redis_up", "1 if the state store answered this scrape")
        try:
            raw = self.svc.metrics.raw()
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from counter_families(raw)
        try:
            lengths = queue_lengths(self.app, self.svc)
            delayed = delayed_size(self.svc)
        except (redis.RedisError, OSError):
            return
        queue_gauge = GaugeMetricFamily("netsync_queue_length",
                                        "Messages waiting in a broker queue", labels=["queue"])
        for name, length in lengths.items():
            queue_gauge.add_metric([name], length)
        yield queue_gauge
        if delayed is not None:
            yield GaugeMetricFamily("netsync_delayed_tasks",
                                    "Tasks parked in the delayed set until due", value=delayed)


# -- endpoints -----------------------------------------------------------------------
@bp.get("/healthz")
def healthz():
    """The process is up and serving (no dependency is checked)."""
    return jsonify(status="ok")


def _broker_check(app: Flask) -> None:
    celery_app = app.extensions["celery"]
    with celery_app.connection_for_write(connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                     timeout=3)


@bp.get("/readyz")
def readyz():
    """Ready to take triggers: the state store and the broker both answer."""
    app = current_app._get_current_object()
    checks = {}
    try:
        services().redis.ping()
        checks["redis"] = "ok"
    except (redis.RedisError, OSError) as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
    try:
        _broker_check(app)
        checks["broker"] = "ok"
    except Exception as exc:  # kombu raises transport-specific errors
        checks["broker"] = f"unreachable ({type(exc).__name__})"
    if all(state == "ok" for state in checks.values()):
        return jsonify(status="ready", checks=checks)
    failing = ", ".join(name for name, state in checks.items() if state != "ok")
    body = {"error": {"code": "unavailable", "message": f"not ready: {failing} unreachable"},
            "status": "unavailable", "checks": checks}
    return jsonify(body), 503


@bp.get("/metrics")
def metrics():
    """Prometheus text: shared counters, queue lengths, delayed-set size."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NetsyncCollector(current_app._get_current_object(), services()))
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}


def init_app(app: Flask) -> None:
    settings = app.config["NETSYNC_SETTINGS"]
    # the settings' own secrets are redacted by value too, wherever a library logs them
    SECRETS_IN_USE.add(*settings.webhook_secrets, *settings.api_tokens, *settings.encryption_keys,
                       *(client.partition(":")[2] for client in settings.oauth_clients.values()))
    configure_logging(app.config.get("LOG_LEVEL", settings.log_level))
    init_sentry(app.config["NETSYNC_SETTINGS"])
    app.register_blueprint(bp)
