"""Every HTTP error netsync answers is JSON: ``{"error": {"code", "message"}}``.

Views raise ``ApiError`` for what they detect themselves; werkzeug's own
errors (404 routing, 405, 413 body too large, ...) are reshaped into the
same JSON; an outage of Redis, the broker or PostgreSQL is a 503; anything else is a
500 that names no internals (the traceback goes to the log and Sentry).
Bad input must never reach that last handler: it is a bug when it does.
"""

from __future__ import annotations

import json
import logging

import kombu.exceptions
import psycopg
import redis
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: the ``code`` of an error that has no more specific one, per HTTP status
DEFAULT_CODES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}

#: headers of a werkzeug error worth keeping on the JSON answer
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")

#: outages of the parts we depend on: the request was fine, try again later
UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
    # PostgreSQL: a connection lost or not to be had (the pool's timeout is one)
    psycopg.OperationalError,
)


class ApiError(Exception):
    """An error answer a view decided on: HTTP status, a stable code, a safe message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code or DEFAULT_CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}

    def payload(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def error_response(status: int, code: str, message: str, headers=None):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def read_body() -> bytes:
    """The raw request body, 413 past ``MAX_CONTENT_LENGTH``, also when it comes chunked.

    With a Content-Length werkzeug refuses an oversized body itself; a chunked
    body has none, and werkzeug then cuts it at the limit without a word (the
    cut body would be answered 401 or 400 instead of 413). So a chunked body is
    read here, one byte past the limit to tell "exactly the limit" from "more".
    """
    if request.content_length is not None or "wsgi.input" not in request.environ:
        return request.get_data(cache=True)
    if "netsync.body" in request.environ:
        return request.environ["netsync.body"]
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes")
    body = request.environ["netsync.body"] = b"".join(chunks)
    return body


class DuplicateKey(Exception):
    """A JSON object names one key twice: parsers disagree on which one wins."""


def _refuse_duplicate_keys(pairs: list) -> dict:
    document = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(key)
        document[key] = value
    return document


def read_json_object(body: bytes, is_json: bool) -> dict:
    """The JSON object in a request body: 415 if not declared JSON, 400 if not JSON,
    422 if JSON but not an object."""
    if not is_json:
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        document = json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
    except DuplicateKey as exc:
        raise ApiError(400, f"the body repeats the key {str(exc)[:64]!r}") from None
    except (ValueError, RecursionError):  # RecursionError: absurdly nested input
        # ValueError also covers non-UTF-8 bytes and integers past Python's digit limit
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(422, "the body must be a JSON object")
    return document


def _handle_api_error(error: ApiError):
    return error_response(error.status, error.code, error.message, error.headers)


def _handle_http_exception(error: HTTPException):
    status = error.code or 500
    kept = {name: value for name, value in error.get_headers() if name in _KEPT_HEADERS}
    message = (error.description or error.name).strip()
    return error_response(status, DEFAULT_CODES.get(status, "error"), message, kept)


def _handle_unavailable(error: Exception):
    log.warning("dependency unavailable", extra={"error_type": type(error).__name__})
    return error_response(
        503, "unavailable", "a backing service is unavailable; retry later", {"Retry-After": "5"}
    )


def _handle_unexpected(error: Exception):
    log.exception("unhandled error", extra={"error_type": type(error).__name__})
    return error_response(500, "internal", "internal error")


def init_app(app: Flask) -> None:
    """Register the JSON handlers (idempotent: several blueprints ask for them)."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    for error_type in UNAVAILABLE:
        app.register_error_handler(error_type, _handle_unavailable)
    app.register_error_handler(Exception, _handle_unexpected)
