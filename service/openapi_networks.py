"""The OpenAPI description of the network reads (``service.network_api``): networks per
relation, members, per-network changes and the change feed. Merged into
``service.openapi``'s document."""

from __future__ import annotations

from providers.provider import RELATION_NAMES


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
    relation = {"type": "string", "enum": list(RELATION_NAMES)}
    relation_param = path_param(
        "relation",
        relation,
        "followers / following (GitHub, "
        "Twitter/X, Mastodon, Bluesky), friends (Facebook), "
        "connections (LinkedIn); omitted: the provider's first",
    )
    cursor = query_param(
        "cursor",
        {"type": "string", "maxLength": 512, "pattern": r"^[^\x00]*$"},
        "next_cursor of the previous page (no NUL)",
    )
    limit = query_param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "items per page (omitted or empty: 100)",
        allowEmptyValue=True,
    )
    paging_errors = {
        "400": error("limit is not an integer"),
        "422": error("limit out of range or cursor too long"),
        "404": error("never synced, unknown provider or relation, or malformed user id"),
        "503": error("PostgreSQL is unreachable; retry after the Retry-After header's seconds"),
    }
    schemas = {
        "NetworkPage": obj(
            {
                "count": {"type": "integer", "description": "size of the whole network"},
                "synced_at": timestamp,
                "sync_id": {"type": "string"},
                "relation": relation,
                "connections": {"type": "array", "items": ref("Connection")},
                "next_cursor": nullable("string", description="pass as ?cursor= for the next page"),
            },
            ["count", "synced_at", "sync_id", "connections", "next_cursor"],
        ),
        "NetworkChanges": obj(
            {
                "sync_id": {"type": "string"},
                "initial": {
                    "type": "boolean",
                    "description": "a first sync: added is the whole network",
                },
                "added": {"type": "array", "items": {"type": "string"}},
                "removed": {"type": "array", "items": {"type": "string"}},
                "next_cursor": nullable("string"),
            },
            ["sync_id", "added", "removed"],
        ),
        "Member": obj(
            {
                "id": {"type": "string"},
                "handle": {"type": "string"},
                "user_id": {"type": "string", "description": "the main app's user who linked it"},
            },
            ["id", "handle", "user_id"],
        ),
        "Members": obj(
            {
                "members": {"type": "array", "items": ref("Member")},
                "next_cursor": nullable("string"),
            },
            ["members", "next_cursor"],
        ),
        "Change": obj(
            {
                "cursor": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "kind": {"type": "string", "enum": ["synced", "added", "removed", "member_joined"]},
                "user_id": {"type": "string"},
                "provider": {"type": "string"},
                "relation": relation,
                "sync_id": nullable("string"),
                "connection": {"oneOf": [{"type": "null"}, ref("Connection")]},
                "member_user_id": nullable("string"),
                "initial": {
                    "type": "boolean",
                    "description": "of a network's first sync "
                    "(no added entries are written for it)",
                },
                "counts": {
                    "oneOf": [
                        {"type": "null"},
                        obj(
                            {
                                "count": {"type": "integer"},
                                "added": {"type": "integer"},
                                "removed": {"type": "integer"},
                            }
                        ),
                    ]
                },
            },
            [
                "cursor",
                "at",
                "kind",
                "user_id",
                "provider",
                "relation",
                "sync_id",
                "connection",
                "member_user_id",
                "initial",
                "counts",
            ],
        ),
        "ChangeFeed": obj(
            {
                "changes": {"type": "array", "items": ref("Change")},
                "next_cursor": {"type": "string", "description": "pass as ?after= to resume"},
            },
            ["changes", "next_cursor"],
        ),
    }

    def network(summary, operation, schema, params, description):
        return {
            "get": {
                "summary": summary,
                "operationId": operation,
                "parameters": params,
                "responses": {
                    "200": answer(description, ref(schema)),
                    **unauthorized,
                    **paging_errors,
                },
            }
        }

    base = "/v1/users/{user_id}/networks/{provider}"
    with_relation = [*network_params, relation_param]
    paths = {
        base: network(
            "One page of the last complete network (the provider's first relation)",
            "getNetwork",
            "NetworkPage",
            [*network_params, cursor, limit],
            "a page of connections",
        ),
        base + "/{relation}": network(
            "One page of the last complete network of a relation",
            "getRelationNetwork",
            "NetworkPage",
            [*with_relation, cursor, limit],
            "a page of connections",
        ),
        base + "/changes": network(
            "What the last completed sync added and removed, paged",
            "getNetworkChanges",
            "NetworkChanges",
            [*network_params, cursor, limit],
            "ids added and removed",
        ),
        base + "/{relation}/changes": network(
            "What the last completed sync of a relation added and removed, paged",
            "getRelationNetworkChanges",
            "NetworkChanges",
            [*with_relation, cursor, limit],
            "ids added and removed",
        ),
        base + "/{relation}/members": network(
            "The connections that are linked accounts of the main app's users "
            "(matched on the provider's stable account id)",
            "getMembers",
            "Members",
            [*with_relation, cursor, limit],
            "a page of members",
        ),
        "/v1/changes": {
            "get": {
                "summary": "What changed across all users, oldest first; a sync's entries "
                "appear all at once",
                "operationId": "getChanges",
                "parameters": [
                    query_param(
                        "after",
                        {"type": "string", "pattern": r"^\d{1,19}$"},
                        "next_cursor of the previous answer; omitted or empty: the oldest kept",
                        allowEmptyValue=True,
                    ),
                    limit,
                ],
                "responses": {
                    "200": answer("a page of the change feed", ref("ChangeFeed")),
                    **unauthorized,
                    "400": error("after or limit is malformed"),
                    "422": error("limit out of range"),
                    "503": paging_errors["503"],
                },
            }
        },
    }
    return schemas, paths
