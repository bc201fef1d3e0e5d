"""``GET /openapi.json``: the OpenAPI 3.1 description of every netsync endpoint.

Written by hand, next to nothing else, so that reading it is reading the
contract; ``tests/integration/test_http_triggers.py`` checks that every
route the app serves is described here.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

import providers
from service import openapi_networks
from service.config import PROVIDERS
from state.store import FINAL

bp = Blueprint("openapi", __name__)

SYNC_STATUSES = ["queued", "running", *FINAL]
TICKET_STATUSES = ["queued", "running", "fresh"]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema_type: str, **extra) -> dict:
    return {"type": [schema_type, "null"], **extra}


def obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: dict | None = None, **extra) -> dict:
    response = {"description": description, **extra}
    if schema is not None:
        response["content"] = json_content(schema)
    return response


def error(description: str) -> dict:
    return answer(description, ref("Error"))


TIMESTAMP = nullable("string", format="date-time", description="ISO-8601, UTC")
PROVIDER = {"type": "string", "enum": list(PROVIDERS)}
USER_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.@:+-]{1,128}$"}

SCHEMAS = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {
                        "type": "string",
                        "description": "stable, machine-readable",
                        "examples": [
                            "malformed",
                            "bad_signature",
                            "unknown_provider",
                            "missing_field",
                            "no_credentials",
                            "not_found",
                            "instance_not_allowed",
                        ],
                    },
                    "message": {"type": "string", "description": "for people; never holds a token"},
                },
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "Account": obj(
        {
            "provider": PROVIDER,
            "account_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "access_token": {
                "type": "string",
                "minLength": 1,
                "maxLength": 8192,
                "writeOnly": True,
            },
            "refresh_token": nullable("string", maxLength=8192, writeOnly=True),
            "expires_at": nullable("number", minimum=0, description="epoch seconds"),
            "token_secret": nullable(
                "string", maxLength=8192, writeOnly=True, description="OAuth 1.0a (Twitter)"
            ),
            "instance": nullable(
                "string",
                maxLength=512,
                description="federated providers (mastodon, bluesky): the account's server, "
                "a base URL (`https://fosstodon.org`, a Bluesky PDS). It must be https and "
                "resolve only to public addresses (else 422 `instance_not_allowed`, nothing "
                "written); without it Mastodon uses MASTODON_API_URL and Bluesky the PDS of "
                "the account's DID document. Any other provider: 422.",
            ),
            "relations": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": "relations to sync, each a sync of its own "
                "(default: every one the provider offers)",
            },
        },
        ["provider", "account_id", "access_token"],
    ),
    "LoginWebhook": obj(
        {
            "user_id": USER_ID,
            "accounts": {
                "type": "array",
                "items": ref("Account"),
                "minItems": 1,
                "maxItems": 20,
                "description": "one per provider",
            },
        },
        ["user_id", "accounts"],
    ),
    # one alternative per provider: a relation is valid only for the provider offering it
    "SyncRequest": {
        "oneOf": [
            obj(
                {
                    "user_id": USER_ID,
                    "provider": {"type": "string", "const": name},
                    "force": {
                        "type": "boolean",
                        "default": False,
                        "description": "sync even within the freshness window",
                    },
                    "relation": nullable(
                        "string",
                        enum=[*cls.RELATIONS, None],
                        description="default (or null): the provider's first",
                    ),
                    "mode": {
                        "type": "string",
                        "enum": ["auto", "full", "incremental"],
                        "default": "auto",
                        "description": "full: read and verify the whole network (removals "
                        "included); incremental: pay only for what changed, record no "
                        "removal; auto: incremental unless the last full sync is older "
                        "than FULL_SYNC_EVERY, there is none, or the provider offers "
                        "nothing cheaper",
                    },
                },
                ["user_id", "provider"],
            )
            for name, cls in providers.provider_classes().items()
        ]
    },
    "SyncTicket": obj(
        {
            "sync_id": nullable("string"),
            "provider": PROVIDER,
            "relation": nullable("string"),
            "status": {
                "type": "string",
                "enum": TICKET_STATUSES,
                "description": "queued: started now; fresh: synced within the freshness window, "
                "nothing started (sync_id is the last sync); otherwise the status "
                "of the sync already in flight",
            },
            "queue": nullable("string", enum=["normal", "whale", "trickle", None]),
            "status_url": nullable("string", format="uri-reference"),
        },
        ["sync_id", "provider", "status", "queue", "status_url"],
    ),
    "LoginAccepted": obj({"syncs": {"type": "array", "items": ref("SyncTicket")}}, ["syncs"]),
    "SyncRecord": obj(
        {
            "sync_id": {"type": "string"},
            "user_id": {"type": "string"},
            "provider": PROVIDER,
            "relation": nullable("string"),
            "account_id": nullable("string"),
            "queue": nullable("string"),
            "trigger": nullable("string", enum=["webhook", "api", "cli", "stale", None]),
            "status": {"type": "string", "enum": SYNC_STATUSES},
            "pages_fetched": {"type": "integer"},
            "connections_fetched": {"type": "integer"},
            "expected_total": nullable("integer", description="size the provider reported"),
            "calls": {"type": "integer", "description": "provider API calls made"},
            "created_at": TIMESTAMP,
            "started_at": TIMESTAMP,
            "finished_at": TIMESTAMP,
            "error": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {"kind": nullable("string"), "message": nullable("string")},
                        ["kind", "message"],
                    ),
                ]
            },
            "partial_reason": nullable("string", description="why a partial sync stopped early"),
            "mode": nullable(
                "string",
                enum=["full", "incremental", None],
                description="how the sync reads the network (null until its first call "
                "decided: auto resolves to one of the two)",
            ),
            "mode_reason": nullable(
                "string", description="why that mode (requested, verification_due, …)"
            ),
            "rate_limit": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "limit": nullable("integer"),
                            "remaining": nullable("integer"),
                            "reset_at": TIMESTAMP,
                            "retry_after": nullable("number"),
                            "usage_percent": nullable("number"),
                        }
                    ),
                ],
                "description": "the provider's last quota report",
            },
            "waiting": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "reason": {
                                "type": "string",
                                "description": "provider_paused, quota, concurrency, "
                                "spend_budget, or the provider's rate-limit kind",
                            },
                            "until": TIMESTAMP,
                        }
                    ),
                ],
                "description": "why an active sync is parked right now",
            },
            "waiting_for": nullable(
                "string",
                description="why an active sync is parked right now (waiting.reason): quota "
                "(the provider's announced or the configured limit), concurrency (the "
                "provider's cap on calls in flight), spend_budget (BUDGET_<PROVIDER> is spent "
                "for the UTC day: until the next one), provider_paused, or the provider's "
                "rate-limit kind; null while it is not parked",
            ),
            "cost": obj(
                {
                    "calls": {"type": "integer", "description": "provider calls sent"},
                    "counted_calls": {
                        "type": "integer",
                        "description": "calls that used the provider's quota",
                    },
                    "not_modified": {
                        "type": "integer",
                        "description": "conditional answers (304) that did not",
                    },
                    "resources": {
                        "type": "integer",
                        "description": "items the provider bills for",
                    },
                    "usd": {
                        "type": "number",
                        "description": "resources at PRICE_<PROVIDER> (a call without an "
                        "answer at its worst case)",
                    },
                },
                ["calls", "counted_calls", "not_modified", "resources", "usd"],
            ),
        },
        [
            "sync_id",
            "user_id",
            "provider",
            "queue",
            "status",
            "pages_fetched",
            "connections_fetched",
            "expected_total",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "waiting_for",
            "cost",
        ],
    ),
    # One Server-Sent Event, modelled as the OpenAPI media type registry models SSE (an
    # object of the event's fields, all strings on the wire). OpenAPI 3.1 has no
    # `itemSchema`: a text/event-stream `schema` describes each event, as 3.2's
    # `itemSchema` does (and as schemathesis reads a 3.1 document). `data` is a string
    # holding JSON: contentMediaType/contentSchema say which.
    "SyncEvent": obj(
        {
            "event": {"type": "string", "enum": ["progress", "final"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref("SyncRecord"),
            },
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
        ["event", "data"],
    ),
    "Connection": obj({"id": {"type": "string"}, "handle": {"type": "string"}}, ["id", "handle"]),
    "Health": obj(
        {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        ["status"],
    ),
}

BAD_INPUT = {
    "400": error("malformed: not JSON, or a bad query parameter"),
    "413": error("the body is larger than the limit"),
    "415": error("the body is not declared as JSON"),
    "422": error(
        "valid JSON that breaks the schema (unknown provider, missing field), or an "
        "instance URL netsync may not call (`instance_not_allowed`)"
    ),
}
UNAUTHORIZED = {"401": error("missing or wrong bearer token")}
UNAVAILABLE = {"503": error("Redis or the broker is unreachable; retry later")}


def path_param(name: str, schema: dict, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def query_param(name: str, schema: dict, description: str, **extra) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


#: a web process holding LIVE_MAX_CONNECTIONS live connections already
LIVE_CAPACITY = {
    "503": error(
        "live_capacity: too many held connections on this web "
        "process; retry after the Retry-After header's seconds"
    )
}

NETWORK_PARAMS = [
    path_param("user_id", USER_ID, "the main app's user id"),
    path_param("provider", PROVIDER, "the provider"),
]

HTML = {"text/html": {"schema": {"type": "string"}}}
#: the operators' page: a bearer token, or the session cookie the login form sets
DASHBOARD_SECURITY = [{"bearerToken": []}, {"dashboardSession": []}]
DASHBOARD_PATHS = {
    "/dashboard": {
        "get": {
            "summary": "The operators' dashboard (HTML); the login form without a session",
            "operationId": "dashboard",
            "security": DASHBOARD_SECURITY,
            "responses": {
                "200": {"description": "the page", "content": HTML},
                "401": {"description": "the login form", "content": HTML},
            },
        }
    },
    "/dashboard/panel": {
        "get": {
            "summary": "The dashboard's live part (HTML fragment the page's script swaps in)",
            "operationId": "dashboardPanel",
            "security": DASHBOARD_SECURITY,
            "responses": {"200": {"description": "HTML fragment", "content": HTML}, **UNAUTHORIZED},
        }
    },
    "/dashboard/state.json": {
        "get": {
            "summary": "What the dashboard shows, as JSON",
            "operationId": "dashboardState",
            "security": DASHBOARD_SECURITY,
            "responses": {
                "200": answer("the dashboard's data", {"type": "object"}),
                **UNAUTHORIZED,
            },
        }
    },
    "/dashboard/login": {
        "post": {
            "summary": "Log a browser in with an API token (form field `token`): sets the session "
            "cookie (Secure, HttpOnly, SameSite=Strict; a digest of the token)",
            "operationId": "dashboardLogin",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": obj({"token": {"type": "string"}}, ["token"])
                    }
                },
            },
            "responses": {
                "303": {"description": "logged in: to /dashboard"},
                "401": {"description": "the form again, with the error", "content": HTML},
            },
        }
    },
    "/dashboard/syncs/{sync_id}/cancel": {
        "post": {
            "summary": "The page's Cancel button (form field `csrf` with a session)",
            "operationId": "dashboardCancel",
            "security": DASHBOARD_SECURITY,
            "parameters": [path_param("sync_id", {"type": "string"}, "the sync to cancel")],
            "responses": {
                "303": {"description": "done (or already final): to /dashboard"},
                **UNAUTHORIZED,
                "403": error("form token missing or wrong"),
            },
        }
    },
    "/dashboard/providers/{provider}/{action}": {
        "post": {
            "summary": "The page's Pause / Resume buttons (form field `csrf` with a session; "
            "`instance`: one instance of a federated provider)",
            "operationId": "dashboardProviderSwitch",
            "security": DASHBOARD_SECURITY,
            "parameters": [
                path_param("provider", PROVIDER, "the provider"),
                path_param("action", {"type": "string", "enum": ["pause", "resume"]}, "what to do"),
            ],
            "responses": {
                "303": {"description": "done: to /dashboard"},
                **UNAUTHORIZED,
                "403": error("form token missing or wrong"),
                "404": error("unknown provider or action"),
            },
        }
    },
    "/dashboard/logout": {
        "post": {
            "summary": "End the browser's session",
            "operationId": "dashboardLogout",
            "security": [],
            "responses": {"303": {"description": "logged out: to /dashboard"}},
        }
    },
}

PATHS = {
    "/webhooks/login": {
        "post": {
            "summary": "A user logged in: store their tokens and sync their networks",
            "operationId": "loginWebhook",
            "security": [{"webhookSignature": []}],
            "parameters": [
                {
                    "name": "X-Netsync-Delivery",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 200},
                    "description": "delivery id; a repeated id (24 h) gets the first answer "
                    "(with X-Netsync-Replayed: true) and starts nothing",
                }
            ],
            "requestBody": {"required": True, "content": json_content(ref("LoginWebhook"))},
            "responses": {
                "202": answer(
                    "one sync per account: started, in flight or fresh", ref("LoginAccepted")
                ),
                "401": error("missing, malformed, wrong, stale or future signature"),
                "409": error("the same delivery id is being processed right now"),
                **BAD_INPUT,
                **UNAVAILABLE,
            },
        }
    },
    "/v1/syncs": {
        "post": {
            "summary": "Start (or find) the sync of one user's network on one provider",
            "operationId": "createSync",
            "requestBody": {"required": True, "content": json_content(ref("SyncRequest"))},
            "responses": {
                "202": answer(
                    "the sync that now answers for this user and provider",
                    ref("SyncTicket"),
                    headers={
                        "Location": {"schema": {"type": "string"}, "description": "the status_url"}
                    },
                ),
                **UNAUTHORIZED,
                "409": error(
                    "no_credentials: no account of this provider is linked for the "
                    "user yet; it arrives with the next login webhook"
                ),
                **BAD_INPUT,
                **UNAVAILABLE,
            },
        }
    },
    "/v1/syncs/{sync_id}": {
        "get": {
            "summary": "A sync's status and progress (with wait=N: a long-poll)",
            "operationId": "getSync",
            "parameters": [
                path_param("sync_id", {"type": "string"}, "from a trigger's answer"),
                query_param(
                    "wait",
                    {"type": "integer", "minimum": 1, "maximum": 30},
                    "answer when the status or progress changes (at once if final), "
                    "or after this many seconds",
                ),
            ],
            "responses": {
                "200": answer("the sync", ref("SyncRecord")),
                **UNAUTHORIZED,
                "400": error("wait is not an integer"),
                "404": error("unknown sync id"),
                "422": error("wait out of range"),
                **LIVE_CAPACITY,
            },
        }
    },
    "/v1/syncs/{sync_id}/cancel": {
        "post": {
            "summary": "Cancel an active sync; the previous network stays",
            "operationId": "cancelSync",
            "parameters": [path_param("sync_id", {"type": "string"}, "from a trigger's answer")],
            "responses": {
                "202": answer("the sync, now cancelled", ref("SyncRecord")),
                **UNAUTHORIZED,
                "404": error("unknown sync id"),
                "409": error("already_final: the sync had already ended"),
            },
        }
    },
    "/v1/syncs/{sync_id}/events": {
        "get": {
            "summary": "Server-Sent Events: `progress` (the SyncRecord) on every change, then "
            "`final`, then the stream closes",
            "operationId": "syncEvents",
            "parameters": [path_param("sync_id", {"type": "string"}, "from a trigger's answer")],
            "responses": {
                "200": {
                    "description": "text/event-stream: a `retry:` line, then events whose "
                    "`data` is a SyncRecord as JSON text, and `: keepalive` comments",
                    "content": {"text/event-stream": {"schema": ref("SyncEvent")}},
                },
                **UNAUTHORIZED,
                "404": error("unknown sync id"),
                **LIVE_CAPACITY,
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "The process is up",
            "operationId": "healthz",
            "security": [],
            "responses": {"200": answer("up", ref("Health"))},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Redis, PostgreSQL and the broker are reachable, and the database's "
            "schema is not behind this code's migrations",
            "operationId": "readyz",
            "security": [],
            "responses": {
                "200": answer("ready", ref("Health")),
                "503": answer(
                    "not ready; checks says which part and why (unreachable, or the database "
                    "not migrated or its schema behind)",
                    {"allOf": [ref("Error"), ref("Health")]},
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics: trigger and sync counters, queue lengths",
            "operationId": "metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "security": [],
            "responses": {"200": answer("OpenAPI 3.1", {"type": "object"})},
        }
    },
    **DASHBOARD_PATHS,
}

NETWORK_SCHEMAS, NETWORK_PATHS = openapi_networks.build(
    ref,
    nullable,
    obj,
    answer,
    error,
    path_param,
    query_param,
    NETWORK_PARAMS,
    TIMESTAMP,
    UNAUTHORIZED,
)
SCHEMAS.update(NETWORK_SCHEMAS)
PATHS.update(NETWORK_PATHS)

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "netsync",
        "version": "1.0.0",
        "description": "Keeps users' social networks in sync from Twitter/X, Facebook, "
        "LinkedIn, GitHub and Mastodon. Every error is "
        '{"error": {"code", "message"}}; bad input is never a 500.',
    },
    "security": [{"bearerToken": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "one of INTERNAL_API_TOKENS",
            },
            "dashboardSession": {
                "type": "apiKey",
                "in": "cookie",
                "name": "netsync_dashboard",
                "description": "set by POST /dashboard/login",
            },
            "webhookSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Netsync-Signature",
                "description": 't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw '
                'body>")>; several v1= during a secret rotation; refused '
                "beyond 300 s either way",
            },
        },
    },
}


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(DOCUMENT)
