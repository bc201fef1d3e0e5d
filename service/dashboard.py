"""The operators' page at ``/dashboard``: what is syncing, stuck, queued and parked.

Access needs one of ``INTERNAL_API_TOKENS``: as for ``/v1``, an
``Authorization: Bearer`` header, or, for a browser, the login form, which
sets a session cookie (signed, ``Secure``, ``HttpOnly``, ``SameSite=Strict``)
holding a digest of the token, never the token itself. The token never
travels in a URL. Server-rendered HTML; a small script re-fetches the
server-rendered panel every ``REFRESH_MS`` (a short poll: the page is one
connection's worth of reads, and no event stream slot is held per viewer).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

import providers
from service import dashboard_data, operations
from service.api import _token_matches
from service.config import PROVIDERS
from service.extensions import services
from service.observability import count
from state.control import instance_switch

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

REFRESH_MS = 1000
SESSION_FIELD = "dashboard_token"
SESSION_HOURS = 12


def token_digest(token: str) -> str:
    """What the session keeps of a token: enough to check it, useless as a token."""
    return hashlib.sha256(b"netsync-dashboard:" + token.encode()).hexdigest()


def _session_valid() -> bool:
    kept = session.get(SESSION_FIELD)
    if not isinstance(kept, str):
        return False
    matched = False
    for token in services().settings.api_tokens:
        matched |= hmac.compare_digest(kept, token_digest(token))
    return matched


def authorized() -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented.strip():
        return _token_matches(presented.strip(), services().settings.api_tokens)
    return _session_valid()


def csrf_token() -> str:
    """A form token bound to this browser's session (empty for bearer-token callers)."""
    kept = session.get(SESSION_FIELD)
    if not isinstance(kept, str):
        return ""
    return hmac.new(
        current_app.secret_key
        if isinstance(current_app.secret_key, bytes)
        else current_app.secret_key.encode(),
        b"csrf:" + kept.encode(),
        hashlib.sha256,
    ).hexdigest()


def _form_allowed() -> bool:
    """A state-changing form post: a bearer caller, or the session's own form token."""
    scheme, _, _ = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return True
    expected = csrf_token()
    return bool(expected) and hmac.compare_digest(request.form.get("csrf", ""), expected)


@bp.before_request
def require_login():
    if request.endpoint in ("dashboard.login", "dashboard.logout"):
        return None
    if authorized():
        if request.method == "POST" and not _form_allowed():
            return jsonify(
                error={
                    "code": "forbidden",
                    "message": "form token missing or wrong; reload the dashboard",
                }
            ), 403
        return None
    if request.endpoint == "dashboard.page":
        return render_template("dashboard/login.html", error=None), 401
    return jsonify(
        error={"code": "unauthorized", "message": "log in at /dashboard or send a bearer token"}
    ), 401


@bp.after_request
def no_caching(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    return response


@bp.post("/login")
def login():
    token = (request.form.get("token") or "").strip()
    if not token or not _token_matches(token, services().settings.api_tokens):
        return render_template("dashboard/login.html", error="That token is not valid."), 401
    session.clear()
    session.permanent = True
    session[SESSION_FIELD] = token_digest(token)
    return redirect(url_for("dashboard.page"), code=303)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.page"), code=303)


def _snapshot() -> dict:
    return dashboard_data.snapshot(current_app._get_current_object(), services())


@bp.get("")
def page():
    return render_template(
        "dashboard/page.html",
        data=_snapshot(),
        refresh_ms=REFRESH_MS,
        session_login=SESSION_FIELD in session,
        csrf=csrf_token(),
    )


@bp.get("/panel")
def panel():
    """The page's live part, server-rendered; the script swaps it in."""
    return render_template("dashboard/panel.html", data=_snapshot(), csrf=csrf_token())


@bp.post("/syncs/<sync_id>/cancel")
def cancel(sync_id: str):
    result = operations.cancel_sync(
        services(), current_app.extensions["celery"], sync_id[:64], "from the dashboard"
    )
    if result.outcome == "cancelled":
        count("cancels", via="dashboard")
    return redirect(url_for("dashboard.page"), code=303)


def _switch(provider: str, instance: str | None) -> str | None:
    """The switch to turn: a provider's, or (form field ``instance``) one instance's of a
    federated provider (``mastodon@fosstodon.org``); None when there is no such switch."""
    if provider not in PROVIDERS:
        return None
    if instance is None:
        return provider
    if (
        not providers.provider_class(provider).FEDERATED
        or not 0 < len(instance) <= 300
        or not instance.isprintable()
        or any(c.isspace() for c in instance)
    ):
        return None
    return instance_switch(provider, instance)


@bp.post("/providers/<provider>/<action>")
def provider_switch(provider: str, action: str):
    provider = _switch(provider, request.form.get("instance"))
    if provider is None or action not in ("pause", "resume"):
        return jsonify(error={"code": "not_found", "message": "no such provider or action"}), 404
    if action == "pause":
        operations.pause_provider(services(), provider, "from the dashboard")
    else:
        operations.resume_provider(services(), provider)
    return redirect(url_for("dashboard.page"), code=303)


@bp.get("/state.json")
def state():
    return jsonify(_snapshot())


def session_secret(settings) -> bytes:
    """The session cookie's signing key, derived from the first API token.

    Rotating the tokens (``INTERNAL_API_TOKENS``) therefore also ends every
    dashboard session, which is what a rotation is for.
    """
    return hmac.new(
        settings.api_tokens[0].encode(), b"netsync-dashboard-session", hashlib.sha256
    ).digest()


def init_app(app: Flask) -> None:
    settings = app.config["NETSYNC_SETTINGS"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = session_secret(settings)
    app.config.update(
        SESSION_COOKIE_NAME="netsync_dashboard",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/dashboard",
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(hours=SESSION_HOURS),
    )
    app.register_blueprint(bp)
