"""What operators see of netsync: logs, Sentry, shared counters, metrics, health.

- Logs: one line per event, ``key=value``; anything token-like is redacted
  from every log record of the process, whoever logs it.
- Sentry (``SENTRY_DSN``): no request bodies, no local variables, no PII;
  tokens scrubbed from every event; expected provider errors (rate limits,
  revoked tokens: ``exc.expected is True``) are not crashes and not sent.
- Counters: ``count(name, **labels)`` adds one to a field of the Redis hash
  ``<prefix>:metrics``, so web, workers and CLI all add to the same numbers.
- ``bp``: ``/healthz``, ``/readyz``; ``/metrics`` is ``service.metrics``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys

import redis
from flask import Blueprint, Flask, current_app, jsonify
from pythonjsonlogger.json import JsonFormatter

from service.extensions import services
from state import migrate
from state.credentials import SECRETS_IN_USE
from sync.telemetry import SyncLogContext

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)

# -- redaction ----------------------------------------------------------------
REDACTED = "[redacted]"
_SECRET_NAMES = (
    r"access_token|refresh_token|token_secret|oauth_token_secret|oauth_token"
    r"|oauth_signature|client_secret|password|api_key"
)
_SECRET_ASSIGNMENT = re.compile(
    rf"(?i)(\b(?:{_SECRET_NAMES})\b[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;)}}\]]+"
)
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization\b[\"']?\s*[=:]\s*[\"']?)(?:(?:bearer|basic|oauth|token)\s+)?[^\s\"',}]+"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
#: keys whose values are secrets wherever they appear (log extras, Sentry events)
SENSITIVE_KEY = re.compile(
    r"(?i)token|secret|password|passw|authorization|cookie|signature"
    r"|api[_-]?key|credential"
)


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
    except Exception:  # noqa: BLE001 - a broken format string is logging's to report, not ours
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
    "message",
    "asctime",
    "taskName",
}


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
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
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


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line (production): python-json-logger, with our redaction.

    The message was redacted when the record was made (``install_redaction``);
    extras whose name says secret are replaced, the others redacted like text.
    """

    def process_log_record(self, log_data: dict) -> dict:
        for key, value in list(log_data.items()):
            if key in ("message", "ts", "level", "logger"):
                continue
            if SENSITIVE_KEY.search(key):
                log_data[key] = REDACTED
            elif isinstance(value, str):
                log_data[key] = redact(value)
        return log_data


def line_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLineFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    return KeyValueFormatter()


#: libraries that log credentials at DEBUG (oauthlib: the signing key, the collected
#: OAuth parameters; requests-oauthlib: the signed headers): never below INFO
CHATTY_SECRET_LOGGERS = ("oauthlib", "requests_oauthlib")


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Redaction and the sync context everywhere; our line format unless the host has its own.

    Under gunicorn or pytest the host's handlers stay, and get the sync
    context filter; elsewhere (workers, scheduler, CLI) one stderr handler
    writes JSON lines (``LOG_FORMAT=json``, production's default) or
    ``key=value`` lines.
    """
    install_redaction()
    numeric = logging.getLevelName(str(level).upper())
    floor = max(logging.INFO, numeric if isinstance(numeric, int) else logging.INFO)
    for name in CHATTY_SECRET_LOGGERS:
        logging.getLogger(name).setLevel(floor)
    root = logging.getLogger()
    if root.handlers:  # gunicorn, pytest, an embedding app: theirs stays
        for handler in root.handlers:
            if not any(isinstance(f, SyncLogContext) for f in handler.filters):
                handler.addFilter(SyncLogContext())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(line_formatter(log_format))
    handler.addFilter(SyncLogContext())
    root.addHandler(handler)
    root.setLevel(level)


# -- Sentry -------------------------------------------------------------------
#: what else is a secret in a Sentry event: an OAuth authorization code, its verifier
_SENTRY_ONLY_KEYS = re.compile(r"(?i)^(code|oauth_verifier|verifier)$")
#: Sentry's own scrubber's deny list, extended with ours (it matches whole keys)
SENTRY_DENYLIST = sorted(
    {
        "access_token",
        "refresh_token",
        "token_secret",
        "oauth_token_secret",
        "client_secret",
        "code",
        "oauth_verifier",
        "signature",
        "x-netsync-signature",
        "webhook-signature",
        "cookie",
        "cookies",
        "set-cookie",
        "authorization",
        "password",
        "secret",
        "token",
    }
)


def _sensitive(key) -> bool:
    return isinstance(key, str) and bool(SENSITIVE_KEY.search(key) or _SENTRY_ONLY_KEYS.match(key))


def scrub(value):
    """A copy of a Sentry event (or any part of it) with every token-like value removed.

    Recursive: a secret-named key is replaced wherever it is nested, and
    every string is redacted like a log line (tokens in URLs, headers, reprs).
    Request bodies are dropped whole (the login webhook's carries tokens).
    """
    if isinstance(value, dict):
        cleaned = {key: REDACTED if _sensitive(key) else scrub(item) for key, item in value.items()}
        request = cleaned.get("request")
        if isinstance(request, dict) and "data" in request:
            request["data"] = REDACTED
        return cleaned
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
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

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
        event_scrubber=EventScrubber(
            denylist=[*DEFAULT_DENYLIST, *SENTRY_DENYLIST], recursive=True
        ),
    )
    return True


# -- shared counters ------------------------------------------------------------
def count(name: str, batch=None, **labels) -> None:
    """Add one to a shared counter (``state.metrics``); never fails the caller.

    ``batch``: queued in that ``state.batch.Batch`` (sent with the caller's next round trip)."""
    try:
        services().metrics.count_many([(name, labels)], batch=batch)
    except RuntimeError:  # outside an app context: nobody to count for
        log.debug("counter not counted", extra={"counter": name})


# -- endpoints -----------------------------------------------------------------------
@bp.get("/healthz")
def healthz():
    """The process is up and serving (no dependency is checked)."""
    return jsonify(status="ok")


def _broker_check(app: Flask) -> None:
    celery_app = app.extensions["celery"]
    with celery_app.connection_for_write(connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)


@bp.get("/readyz")
def readyz():
    """Ready to take triggers: the state store, the database and the broker all answer,
    and the database's schema is at this code's migrations (not behind them)."""
    app = current_app._get_current_object()
    checks = {}
    try:
        services().redis.ping()
        checks["redis"] = "ok"
    except (redis.RedisError, OSError) as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
    try:
        behind = migrate.lag(services().networks.schema_revisions())
        checks["database"] = behind or "ok"
    except Exception as exc:  # noqa: BLE001 - psycopg / pool errors: a connection that cannot be had
        checks["database"] = f"unreachable ({type(exc).__name__})"
    try:
        _broker_check(app)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - kombu raises transport-specific errors
        checks["broker"] = f"unreachable ({type(exc).__name__})"
    if all(state == "ok" for state in checks.values()):
        return jsonify(status="ready", checks=checks)
    failing = "; ".join(f"{name} {state}" for name, state in checks.items() if state != "ok")
    body = {
        "error": {"code": "unavailable", "message": f"not ready: {failing}"},
        "status": "unavailable",
        "checks": checks,
    }
    return jsonify(body), 503


def init_app(app: Flask) -> None:
    settings = app.config["NETSYNC_SETTINGS"]
    # the settings' own secrets are redacted by value too, wherever a library logs them
    SECRETS_IN_USE.add(
        *settings.webhook_secrets,
        *settings.api_tokens,
        *settings.encryption_keys,
        *settings.callback_secrets,
        *(client.partition(":")[2] for client in settings.oauth_clients.values()),
    )
    configure_logging(app.config.get("LOG_LEVEL", settings.log_level), settings.log_format)
    init_sentry(app.config["NETSYNC_SETTINGS"])
    app.register_blueprint(bp)
