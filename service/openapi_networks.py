"""The OpenAPI description of the network reads (``service.network_api``): networks per
relation, members, per-network changes and the change feed. Merged into
``service.openapi``'s document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from providers.provider import RELATION_NAMES

RELATION = {"type": "string", "enum": list(RELATION_NAMES)}
#: every per-network path starts here
NETWORK_BASE = "/v1/users/{user_id}/networks/{provider}"


@dataclass(frozen=True)
class Style:
    """``service.openapi``'s own helpers, so the whole document is written one way."""

    ref: Callable
    nullable: Callable
    obj: Callable
    answer: Callable
    error: Callable
    path_param: Callable
    query_param: Callable
    network_params: list
    timestamp: dict
    unauthorized: dict


def build(
    ref,
    nullable,
    obj,
    answer,
    error,
    path_param,
    query_param,
    network_params,
    timestamp,
    unauthorized,
) -> tuple[dict, dict]:
    """(schemas, paths), from openapi's own helpers (one style for the whole document)."""
    style = Style(
        ref,
        nullable,
        obj,
        answer,
        error,
        path_param,
        query_param,
        network_params,
        timestamp,
        unauthorized,
    )
    return schemas(style), paths(style)


# -- schemas ----------------------------------------------------------------------------
def schemas(s: Style) -> dict:
    return {
        "NetworkPage": network_page(s),
        "NetworkChanges": network_changes(s),
        "Member": member(s),
        "Members": members(s),
        "Change": change(s),
        "ChangeFeed": change_feed(s),
    }


def network_page(s: Style) -> dict:
    return s.obj(
        {
            "count": {"type": "integer", "description": "size of the whole network"},
            "synced_at": s.timestamp,
            "verified_at": {
                **s.timestamp,
                "description": "the last full (verifying) sync; null: never verified",
            },
            "updated_at": {
                **s.timestamp,
                "description": "the last change from a sync (or a stream)",
            },
            "sync_id": {"type": "string"},
            "relation": RELATION,
            "connections": {"type": "array", "items": s.ref("Connection")},
            "next_cursor": s.nullable("string", description="pass as ?cursor= for the next page"),
        },
        [
            "count",
            "synced_at",
            "verified_at",
            "updated_at",
            "sync_id",
            "connections",
            "next_cursor",
        ],
    )


def network_changes(s: Style) -> dict:
    return s.obj(
        {
            "sync_id": {"type": "string"},
            "initial": {
                "type": "boolean",
                "description": "a first sync: added is the whole network",
            },
            "added": {"type": "array", "items": {"type": "string"}},
            "removed": {"type": "array", "items": {"type": "string"}},
            "next_cursor": s.nullable("string"),
        },
        ["sync_id", "added", "removed"],
    )


def member(s: Style) -> dict:
    return s.obj(
        {
            "id": {"type": "string"},
            "handle": {"type": "string"},
            "user_id": {"type": "string", "description": "the main app's user who linked it"},
        },
        ["id", "handle", "user_id"],
    )


def members(s: Style) -> dict:
    return s.obj(
        {
            "members": {"type": "array", "items": s.ref("Member")},
            "next_cursor": s.nullable("string"),
        },
        ["members", "next_cursor"],
    )


def change(s: Style) -> dict:
    """One entry of the change feed; every field is always present."""
    fields = {
        "cursor": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "kind": {"type": "string", "enum": ["synced", "added", "removed", "member_joined"]},
        "user_id": {"type": "string"},
        "provider": {"type": "string"},
        "relation": RELATION,
        "sync_id": s.nullable("string"),
        "connection": {"oneOf": [{"type": "null"}, s.ref("Connection")]},
        "member_user_id": s.nullable("string"),
        "initial": {
            "type": "boolean",
            "description": "of a network's first sync (no added entries are written for it)",
        },
        "counts": {"oneOf": [{"type": "null"}, sync_counts(s)]},
        "source": {
            "type": "string",
            "description": "where the change came from: sync (a sync's finalization)",
        },
    }
    return s.obj(fields, list(fields))


def sync_counts(s: Style) -> dict:
    """A ``synced`` entry's figures."""
    return s.obj(
        {
            "count": {"type": "integer"},
            "added": {"type": "integer"},
            "removed": {"type": "integer"},
            "mode": {"type": "string", "enum": ["full", "incremental"]},
            "cost": s.obj(
                {
                    "calls": {"type": "integer"},
                    "counted_calls": {"type": "integer"},
                    "not_modified": {"type": "integer"},
                    "resources": {"type": "integer"},
                    "usd": {"type": "number"},
                }
            ),
        }
    )


def change_feed(s: Style) -> dict:
    return s.obj(
        {
            "changes": {"type": "array", "items": s.ref("Change")},
            "next_cursor": {"type": "string", "description": "pass as ?after= to resume"},
        },
        ["changes", "next_cursor"],
    )


# -- paths ------------------------------------------------------------------------------
def paths(s: Style) -> dict:
    return {
        **network_paths(s),
        **network_change_paths(s),
        **member_paths(s),
        "/v1/changes": change_feed_path(s),
    }


def network_paths(s: Style) -> dict:
    """The last complete network, paged: the provider's first relation, or a named one."""
    return {
        NETWORK_BASE: network_read(
            s,
            "One page of the last complete network (the provider's first relation)",
            "getNetwork",
            "NetworkPage",
            [*s.network_params, *paging(s)],
            "a page of connections",
        ),
        NETWORK_BASE + "/{relation}": network_read(
            s,
            "One page of the last complete network of a relation",
            "getRelationNetwork",
            "NetworkPage",
            [*with_relation(s), *paging(s)],
            "a page of connections",
        ),
    }


def network_change_paths(s: Style) -> dict:
    """What the last completed sync added and removed, paged."""
    return {
        NETWORK_BASE + "/changes": network_read(
            s,
            "What the last completed sync added and removed, paged",
            "getNetworkChanges",
            "NetworkChanges",
            [*s.network_params, *paging(s)],
            "ids added and removed",
        ),
        NETWORK_BASE + "/{relation}/changes": network_read(
            s,
            "What the last completed sync of a relation added and removed, paged",
            "getRelationNetworkChanges",
            "NetworkChanges",
            [*with_relation(s), *paging(s)],
            "ids added and removed",
        ),
    }


def member_paths(s: Style) -> dict:
    return {
        NETWORK_BASE + "/{relation}/members": network_read(
            s,
            "The connections that are linked accounts of the main app's users "
            "(matched on the provider's stable account id)",
            "getMembers",
            "Members",
            [*with_relation(s), *paging(s)],
            "a page of members",
        ),
    }


def change_feed_path(s: Style) -> dict:
    return {
        "get": {
            "summary": "What changed across all users, oldest first; a sync's entries "
            "appear all at once",
            "operationId": "getChanges",
            "parameters": [
                s.query_param(
                    "after",
                    {"type": "string", "pattern": r"^\d{1,19}$"},
                    "next_cursor of the previous answer; omitted or empty: the oldest kept",
                    allowEmptyValue=True,
                ),
                limit_param(s),
            ],
            "responses": {
                "200": s.answer("a page of the change feed", s.ref("ChangeFeed")),
                **s.unauthorized,
                "400": s.error("after or limit is malformed"),
                "422": s.error("limit out of range"),
                "503": database_unreachable(s),
            },
        }
    }


def network_read(s: Style, summary, operation, schema, params, description) -> dict:
    """A paged GET of one user's network on one provider."""
    return {
        "get": {
            "summary": summary,
            "operationId": operation,
            "parameters": params,
            "responses": {
                "200": s.answer(description, s.ref(schema)),
                **s.unauthorized,
                "400": s.error("limit is not an integer"),
                "422": s.error("limit out of range or cursor too long"),
                "404": s.error("never synced, unknown provider or relation, or malformed user id"),
                "503": database_unreachable(s),
            },
        }
    }


# -- parameters -------------------------------------------------------------------------
def with_relation(s: Style) -> list:
    """The user and provider, and the relation."""
    return [
        *s.network_params,
        s.path_param(
            "relation",
            RELATION,
            "followers / following (GitHub, "
            "Twitter/X, Mastodon, Bluesky), friends (Facebook), "
            "connections (LinkedIn); omitted: the provider's first",
        ),
    ]


def paging(s: Style) -> list:
    """?cursor= and ?limit=."""
    cursor = s.query_param(
        "cursor",
        {"type": "string", "maxLength": 512, "pattern": r"^[^\x00]*$"},
        "next_cursor of the previous page (no NUL)",
    )
    return [cursor, limit_param(s)]


def limit_param(s: Style) -> dict:
    return s.query_param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "items per page (omitted or empty: 100)",
        allowEmptyValue=True,
    )


def database_unreachable(s: Style) -> dict:
    return s.error("PostgreSQL is unreachable; retry after the Retry-After header's seconds")
