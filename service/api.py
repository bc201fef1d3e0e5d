"""The internal REST API under ``/v1``: start a sync, read its status, read networks.

Every route needs ``Authorization: Bearer <token>`` with one of
``INTERNAL_API_TOKENS`` (compared in constant time). Answers are shaped here
once (``ticket_view``, ``sync_view``) and reused by the webhook and the CLI.
The OpenAPI document describing all of it is served from ``service.openapi``.
"""

from __future__ import annotations

import datetime
import hmac
import time

from flask import Blueprint, Flask, current_app, jsonify, request, url_for

from service import http_errors, live, network_api, openapi, operations
from service.extensions import services
from service.http_errors import ApiError
from service.observability import count
from service.syncs import SyncRequestError, start_sync, validate_target
from state.admission import CallCost
from state.control import PAUSED_REASON
from state.store import SyncTicket
from sync.modes import AUTO, MODES

bp = Blueprint("api", __name__, url_prefix="/v1")

MAX_SYNC_ID_LENGTH = 64

#: how a refused trigger answers: no credentials is a state the caller can fix
#: (the user logs in again), so 409 rather than 404, which means "no such id"
_REFUSALS = {"no_credentials": 409, "invalid": 422}


# -- answers ----------------------------------------------------------------------
def iso(timestamp) -> str | None:
    """An epoch-seconds field of the store as ISO-8601 UTC (None if unset or garbled)."""
    try:
        moment = datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _int(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def ticket_view(ticket: SyncTicket) -> dict:
    """One trigger's answer: which sync now answers for this user and provider."""
    sync_id = ticket.sync_id or None
    return {
        "sync_id": sync_id,
        "provider": ticket.provider,
        "relation": ticket.relation or None,
        "status": ticket.status,
        "queue": ticket.queue or None,
        "status_url": url_for("api.get_sync", sync_id=sync_id) if sync_id else None,
    }


def trigger_outcome(ticket: SyncTicket) -> str:
    """How a trigger ended, for the counters: queued (started now), inflight, or fresh."""
    if ticket.created:
        return "queued"
    return "fresh" if ticket.status == "fresh" else "inflight"


def _rate_limit_view(record: dict) -> dict | None:
    """The provider's last quota report (``rate_*`` fields), if it sent one."""
    if not any(key.startswith("rate_") for key in record):
        return None
    return {
        "limit": _int(record.get("rate_limit")),
        "remaining": _int(record.get("rate_remaining")),
        "reset_at": iso(record.get("rate_reset_at")),
        "retry_after": _float(record.get("rate_retry_after")),
        "usage_percent": _float(record.get("rate_usage_percent")),
    }


def waiting_view(record: dict, provider_paused: bool, now: float | None = None) -> dict | None:
    """Why an active sync is not moving right now, if it is parked: ``{"reason", "until"}``.

    A paused provider says so whatever the sync last parked for; otherwise the
    last park (quota, a provider's rate limit, a backoff) while it lasts.
    """
    if record.get("status") not in ("queued", "running"):
        return None
    if provider_paused:
        return {"reason": PAUSED_REASON, "until": None}
    until = _float(record.get("wait_until"))
    if until is None or until <= (time.time() if now is None else now):
        return None
    return {"reason": record.get("wait_reason"), "until": iso(until)}


def sync_view(record: dict, provider_paused: bool = False) -> dict:
    """A sync record from the store, typed: ints, ISO-8601 times, a structured error."""
    error = None
    if record.get("error_kind") or record.get("error_message"):
        error = {"kind": record.get("error_kind"), "message": record.get("error_message")}
    waiting = waiting_view(record, provider_paused)
    return {
        "sync_id": record.get("sync_id"),
        "user_id": record.get("user_id"),
        "provider": record.get("provider"),
        "relation": record.get("relation"),
        "account_id": record.get("account_id"),
        "queue": record.get("queue"),
        "trigger": record.get("trigger"),
        "status": record.get("status"),
        "pages_fetched": _int(record.get("pages_fetched")) or 0,
        "connections_fetched": _int(record.get("connections_fetched")) or 0,
        "expected_total": _int(record.get("expected_total")),
        "calls": _int(record.get("calls")) or 0,
        "created_at": iso(record.get("created_at")),
        "started_at": iso(record.get("started_at")),
        "finished_at": iso(record.get("finished_at")),
        "error": error,
        "partial_reason": record.get("partial_reason"),
        # CONTRACT: how it reads the network, once its first call decided ("auto" resolved)
        "mode": record.get("mode") or None,
        "mode_reason": record.get("mode_reason") or None,
        "rate_limit": _rate_limit_view(record),
        "waiting": waiting,
        # CONTRACT: why a running sync is not moving (quota, concurrency, spend_budget, …)
        "waiting_for": waiting["reason"] if waiting else None,
        "cost": CallCost.from_record(record).as_view(),
    }


def current_view(svc, record: dict) -> dict:
    """``sync_view`` with the live facts the record does not hold (a paused provider)."""
    return sync_view(record, svc.switches.is_paused(record.get("provider", "")))


# -- auth -------------------------------------------------------------------------
def _token_matches(presented: str, tokens) -> bool:
    """Constant-time comparison against every configured token."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented.encode(), token.encode())
    return matched


@bp.before_request
def require_bearer_token():
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="netsync"'}
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401, "an Authorization: Bearer <token> header is required", headers=challenge
        )
    if not _token_matches(presented.strip(), services().settings.api_tokens):
        count("api_auth_failures")
        raise ApiError(401, "the bearer token is not valid", headers=challenge)


# -- routes -----------------------------------------------------------------------
def _sync_request(document: dict) -> tuple[str, str, bool, str, str]:
    missing = [name for name in ("user_id", "provider") if name not in document]
    if missing:
        raise ApiError(422, f"missing field(s): {', '.join(missing)}", code="missing_field")
    force = document.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(422, "force must be true or false")
    mode = document.get("mode", AUTO)
    if not isinstance(mode, str) or mode not in MODES:
        raise ApiError(422, f"mode must be one of {', '.join(MODES)}", code="invalid_mode")
    relation = document.get("relation")
    if relation is not None and not isinstance(relation, str):
        raise ApiError(422, "relation must be a string")
    try:
        relation = validate_target(document["user_id"], document["provider"], relation)
    except SyncRequestError as exc:
        raise ApiError(422, str(exc)) from None
    return document["user_id"], document["provider"], force, relation, mode


@bp.post("/syncs")
def create_sync():
    """Start (or find) the sync of one user's network on one provider."""
    document = http_errors.read_json_object(http_errors.read_body(), request.is_json)
    user_id, provider, force, relation, mode = _sync_request(document)
    try:
        ticket = start_sync(
            services(),
            user_id=user_id,
            provider=provider,
            trigger="api",
            force=force,
            relation=relation,
            mode=mode,
        )
    except SyncRequestError as exc:
        count("triggers", kind="api", outcome=exc.code)
        raise ApiError(_REFUSALS.get(exc.code, 422), str(exc), code=exc.code) from None
    count("triggers", kind="api", outcome=trigger_outcome(ticket))
    answer = ticket_view(ticket)
    headers = {"Location": answer["status_url"]} if answer["status_url"] else {}
    return jsonify(answer), 202, headers


def find_sync(sync_id: str) -> dict:
    """The sync's record, or a 404."""
    record = services().store.get_sync(sync_id) if len(sync_id) <= MAX_SYNC_ID_LENGTH else None
    if record is None:
        raise ApiError(404, f"no sync {sync_id[:MAX_SYNC_ID_LENGTH]!r}")
    return record


@bp.get("/syncs/<sync_id>")
def get_sync(sync_id: str):
    record = find_sync(sync_id)
    if request.args.get("wait") is not None:
        return live.long_poll(
            services(), record, request.args["wait"], lambda rec: current_view(services(), rec)
        )
    return jsonify(current_view(services(), record))


@bp.post("/syncs/<sync_id>/cancel")
def cancel_sync(sync_id: str):
    """Cancel an active sync (its previous network stays); 409 when it is already final."""
    find_sync(sync_id)
    result = operations.cancel_sync(services(), current_app.extensions["celery"], sync_id)
    if result.outcome == "final":
        status = (result.record or {}).get("status")
        raise ApiError(409, f"sync {sync_id} is already final ({status})", code="already_final")
    count("cancels", via="api")
    return jsonify(current_view(services(), result.record)), 202


@bp.get("/syncs/<sync_id>/events")
def sync_events(sync_id: str):
    """Server-Sent Events: ``progress`` on every change, then ``final``."""
    svc = services()
    return live.event_stream(svc, find_sync(sync_id), lambda rec: current_view(svc, rec))


def init_app(app: Flask) -> None:
    http_errors.init_app(app)
    app.register_blueprint(bp)
    network_api.init_app(app)
    app.register_blueprint(openapi.bp)
