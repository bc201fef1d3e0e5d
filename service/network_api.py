"""The network reads under ``/v1``: networks per relation, their members, their
changes, and the change feed across all users (all from PostgreSQL).

A path without a relation means the provider's first (``Provider.RELATIONS``),
so the paths from before relations existed keep working.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, jsonify, request

from service.extensions import services
from service.http_errors import ApiError
from service.syncs import SyncRequestError, validate_target

bp = Blueprint("networks", __name__, url_prefix="/v1")

DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_CURSOR_LENGTH = 512
#: an optional minus and 1-10 ASCII digits (``int()`` alone would also take "+5", " 5", "1_0");
#: a zero fraction too: JSON Schema counts 2.0 as an integer, so the document admits "2.0"
_INTEGER = re.compile(r"(-?[0-9]{1,10})(?:\.0{1,10})?")


def _target(user_id: str, provider: str, relation: str | None) -> str:
    """The relation a path names; a path naming no possible network is a 404."""
    try:
        return validate_target(user_id, provider, relation)
    except SyncRequestError as exc:
        raise ApiError(404, str(exc)) from None


def _limit(name: str = "limit") -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return DEFAULT_PAGE_LIMIT
    # one minus at most: "--5" passed an lstrip("-") check and int() raised (a 500)
    match = _INTEGER.fullmatch(raw)
    if not match:
        raise ApiError(400, f"{name} must be an integer")
    limit = int(match.group(1))
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ApiError(422, f"{name} must be between 1 and {MAX_PAGE_LIMIT}")
    return limit


def _cursor(name: str = "cursor") -> str | None:
    cursor = request.args.get(name) or None
    if cursor is not None and (len(cursor) > MAX_CURSOR_LENGTH or "\x00" in cursor):
        raise ApiError(422, f"{name} must be at most {MAX_CURSOR_LENGTH} characters, no NUL")
    return cursor


def _never_synced(provider: str, relation: str, user_id: str):
    return ApiError(404, f"no {provider} {relation} network has been synced for {user_id}")


def _iso(epoch: float) -> str:
    from service.api import iso

    return iso(epoch)


@bp.get("/users/<user_id>/networks/<provider>")
@bp.get("/users/<user_id>/networks/<provider>/<relation>")
def get_network(user_id: str, provider: str, relation: str | None = None):
    """One page of the last complete network, in a stable id order."""
    relation = _target(user_id, provider, relation)
    limit, cursor = _limit(), _cursor()
    page = services().networks.network_page(user_id, provider, relation, cursor, limit)
    if page is None:
        raise _never_synced(provider, relation, user_id)
    meta, connections, next_cursor = page
    return jsonify(
        count=meta["count"],
        synced_at=_iso(meta["synced_at"]),
        verified_at=_iso(meta["verified_at"]) if meta["verified_at"] is not None else None,
        updated_at=_iso(meta["updated_at"]) if meta["updated_at"] is not None else None,
        sync_id=meta["sync_id"],
        relation=relation,
        connections=connections,
        next_cursor=next_cursor,
    )


@bp.get("/users/<user_id>/networks/<provider>/changes")
@bp.get("/users/<user_id>/networks/<provider>/<relation>/changes")
def get_network_changes(user_id: str, provider: str, relation: str | None = None):
    """What the last completed sync added and removed, paged (``initial``: a first sync,
    whose "added" is the whole network)."""
    relation = _target(user_id, provider, relation)
    changes = services().networks.sync_changes_page(
        user_id, provider, relation, _cursor(), _limit()
    )
    if changes is None:
        raise _never_synced(provider, relation, user_id)
    return jsonify(changes)


@bp.get("/users/<user_id>/networks/<provider>/<relation>/members")
def get_members(user_id: str, provider: str, relation: str):
    """The connections that are linked accounts of the main app's users."""
    relation = _target(user_id, provider, relation)
    page = services().networks.members_page(user_id, provider, relation, _cursor(), _limit())
    if page is None:
        raise _never_synced(provider, relation, user_id)
    members, next_cursor = page
    return jsonify(members=members, next_cursor=next_cursor)


@bp.get("/changes")
def get_change_feed():
    """Everything that changed across all users, oldest first, from ``after``."""
    raw = request.args.get("after") or "0"
    # a cursor is a PostgreSQL bigint: 19 digits may still be past its range
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > 2**63 - 1:
        raise ApiError(400, "after must be a cursor from an earlier answer")
    entries, next_cursor = services().networks.feed(int(raw), _limit())
    return jsonify(changes=entries, next_cursor=str(next_cursor))


@bp.before_request
def require_bearer_token():
    from service.api import require_bearer_token as the_api_check  # one check for all of /v1

    return the_api_check()


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
