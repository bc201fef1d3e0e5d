"""``POST /webhooks/login``: the main app tells us a user logged in, with fresh tokens.

Order matters, and each step guards the next:

1. the raw body is read (413 beyond ``MAX_CONTENT_LENGTH``) and its
   signature checked before anything parses it (401);
2. the delivery id is claimed (``SET NX``): a delivery seen before is
   answered with its first answer and starts nothing;
3. the whole body is validated (415, 400, 422) before any sync starts, so a
   bad second account changes nothing;
4. each account's credential is stored and its syncs started or found (202),
   all of them together, step by step (``service.syncs.start_syncs``: a
   handful of round trips whatever the number of accounts).

Tokens are never logged and never echoed, not even in a validation message.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, Flask, Response, jsonify, request

import providers
from service import http_errors
from service.api import ticket_view, trigger_outcome
from service.config import PROVIDERS
from service.extensions import services
from service.http_errors import ApiError
from service.observability import count
from service.syncs import SyncRequest, relations_of, start_syncs
from state.batch import Batch
from state.credentials import Credential
from state.keys import Keys
from state.store import USER_ID_RE
from sync import egress
from sync.signatures import DELIVERY_HEADER, SIGNATURE_HEADER, SignatureError, verify

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

MAX_ACCOUNTS = 20
MAX_ID_LENGTH = 256
MAX_TOKEN_LENGTH = 8192
MAX_INSTANCE_LENGTH = 512
MAX_DELIVERY_ID_LENGTH = 200
#: an expiry beyond this is not a timestamp (it would overflow float/datetime)
MAX_EXPIRES_AT = 2**40


# -- replay protection --------------------------------------------------------------
class DeliveryLog:
    """The first answer to each delivery id, kept ``delivery_ttl`` seconds.

    A claim is a short-lived ``pending`` marker set with ``SET NX``: if the
    process dies mid-request, the sender's retry is processed after
    ``claim_ttl`` instead of being refused for a day.
    """

    PENDING = b"pending"

    def __init__(
        self, redis_client, prefix: str, ttl: int, claim_ttl: int = 60, wait_s: float = 5.0
    ):
        self.redis, self.prefix, self.ttl = redis_client, prefix, ttl
        self.claim_ttl, self.wait_s = claim_ttl, wait_s

    def key(self, delivery_id: str) -> str:
        return Keys(self.prefix).delivery(delivery_id)

    def claim(self, delivery_id: str) -> tuple[int, dict] | None:
        """None if this request owns the delivery; else the first answer (status, body)."""
        key = self.key(delivery_id)
        if self.redis.set(key, self.PENDING, nx=True, ex=self.claim_ttl):
            return None
        deadline = time.monotonic() + self.wait_s
        while True:  # a concurrent duplicate: wait for the first one's answer
            stored = self.redis.get(key)
            if stored is None:
                return self.claim(delivery_id)  # its claim expired: ours now
            if stored != self.PENDING:
                answer = json.loads(stored)
                return answer["status"], answer["body"]
            if time.monotonic() >= deadline:
                return 409, ApiError(
                    409, "this delivery is still being processed", code="delivery_in_progress"
                ).payload()
            time.sleep(0.05)

    def record(self, delivery_id: str, status: int, body: dict, batch=None) -> None:
        """Keep the first answer; with ``batch``, queued there (``state.batch``)."""
        answer = json.dumps({"status": status, "body": body}, separators=(",", ":"))
        key, ttl = self.key(delivery_id), self.ttl
        if batch is None:
            self.redis.set(key, answer, ex=ttl)
        else:
            batch.add(lambda pipe: pipe.set(key, answer, ex=ttl))

    def release(self, delivery_id: str) -> None:
        """Forget a claim whose processing failed on our side (the sender will retry)."""
        self.redis.delete(self.key(delivery_id))


# -- validation -----------------------------------------------------------------------
def _invalid(message: str, code: str = "invalid"):
    raise ApiError(422, message, code=code)


def _string(
    obj: dict, name: str, where: str, *, required: bool, max_length: int, secret: bool = False
) -> str | None:
    """A string field; messages name the field, never a secret's value."""
    value = obj.get(name)
    if value is None:
        if required:
            _invalid(f"{where}{name} is required", code="missing_field")
        return None
    if not isinstance(value, str) or (required and not value):
        _invalid(f"{where}{name} must be a {'non-empty ' if required else ''}string")
    if len(value) > max_length:
        _invalid(f"{where}{name} is longer than {max_length} characters")
    if secret and any(c.isspace() for c in value):
        _invalid(f"{where}{name} must not contain whitespace")
    if secret and not (value.isascii() and value.isprintable()):
        # OAuth tokens are printable ASCII (RFC 6750's b64token); anything else
        # could not be sent in a header anyway
        _invalid(f"{where}{name} must be printable ASCII")
    return value or None  # an empty optional token is no token


def _expires_at(obj: dict, where: str) -> float | None:
    value = obj.get("expires_at")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value < MAX_EXPIRES_AT
    ):
        _invalid(f"{where}expires_at must be epoch seconds (a number) or null")
    return value


def _relations(account: dict, provider: str, where: str) -> tuple[str, ...]:
    """The relations to sync (default: every one the provider offers)."""
    offered = relations_of(provider)
    raw = account.get("relations")
    if raw is None:
        return offered
    if not isinstance(raw, list) or not raw or not all(isinstance(r, str) for r in raw):
        _invalid(f"{where}relations must be a non-empty list of relation names")
    unknown = [r for r in raw if r not in offered]
    if unknown:
        _invalid(
            f"{where}relations: {provider} has no {', '.join(map(repr, unknown))}; "
            f"one of {', '.join(offered)}",
            code="unknown_relation",
        )
    return tuple(dict.fromkeys(raw))


def parse_account(account, index: int) -> tuple[str, Credential, tuple[str, ...]]:
    """(provider, Credential, relations) of one ``accounts[]`` entry, or a 422."""
    where = f"accounts[{index}]."
    if not isinstance(account, dict):
        _invalid(f"accounts[{index}] must be an object")
    provider = _string(account, "provider", where, required=True, max_length=32)
    if provider not in PROVIDERS:
        _invalid(
            f"{where}provider {provider!r} is unknown; one of {', '.join(PROVIDERS)}",
            code="unknown_provider",
        )
    account_id = _string(account, "account_id", where, required=True, max_length=MAX_ID_LENGTH)
    provider_class = providers.provider_classes()[provider]
    if not provider_class.valid_account_id(account_id):
        _invalid(
            f"{where}account_id is not a {provider} account id (allowed: "
            f"{provider_class.ACCOUNT_ID_PATTERN})",
            code="invalid_account_id",
        )
    credential = Credential(
        account_id=account_id,
        access_token=_string(
            account, "access_token", where, required=True, max_length=MAX_TOKEN_LENGTH, secret=True
        ),
        refresh_token=_string(
            account,
            "refresh_token",
            where,
            required=False,
            max_length=MAX_TOKEN_LENGTH,
            secret=True,
        ),
        expires_at=_expires_at(account, where),
        token_secret=_string(
            account, "token_secret", where, required=False, max_length=MAX_TOKEN_LENGTH, secret=True
        ),
        instance=_instance(account, provider_class, where),
    )
    return provider, credential, _relations(account, provider, where)


def _instance(account: dict, provider_class, where: str) -> str | None:
    """A federated account's server, checked as ``sync.egress`` requires (a 422
    ``instance_not_allowed`` otherwise, before anything is written)."""
    raw = _string(account, "instance", where, required=False, max_length=MAX_INSTANCE_LENGTH)
    if raw is None:
        return None
    if not provider_class.FEDERATED:
        _invalid(f"{where}instance is only for federated providers (mastodon, bluesky)")
    try:
        checked = egress.check_instance_url(
            raw, services().settings.outbound_allow_private, what=f"{where}instance"
        )
    except egress.InstanceNotAllowed as exc:
        raise ApiError(422, str(exc), code=egress.NOT_ALLOWED) from None
    return checked.base_url


def parse_login(document: dict) -> tuple[str, list[tuple[str, Credential, tuple]]]:
    """The user and their accounts, all validated before anything starts."""
    user_id = _string(document, "user_id", "", required=True, max_length=128)
    if not USER_ID_RE.match(user_id):
        _invalid("user_id must be 1-128 characters of [A-Za-z0-9_.@:+-]")
    accounts = document.get("accounts")
    if accounts is None:
        _invalid("accounts is required", code="missing_field")
    if not isinstance(accounts, list) or not 1 <= len(accounts) <= MAX_ACCOUNTS:
        _invalid(f"accounts must be a list of 1 to {MAX_ACCOUNTS} objects")
    parsed = [parse_account(account, index) for index, account in enumerate(accounts)]
    providers = [provider for provider, _, _ in parsed]
    if len(set(providers)) != len(providers):
        _invalid("accounts lists the same provider twice")
    return user_id, parsed


# -- the endpoint -------------------------------------------------------------------------
def _verify_signature(body: bytes) -> None:
    settings = services().settings
    try:
        verify(
            request.headers.get(SIGNATURE_HEADER),
            body,
            settings.webhook_secrets,
            tolerance=settings.signature_tolerance,
        )
    except SignatureError as exc:
        count("webhook_deliveries", outcome="bad_signature")
        log.warning("login webhook refused", extra={"reason": exc.reason})
        raise ApiError(401, str(exc), code="bad_signature") from None


def _delivery_id() -> str | None:
    delivery_id = request.headers.get(DELIVERY_HEADER)
    if delivery_id is None:
        return None
    if not 1 <= len(delivery_id) <= MAX_DELIVERY_ID_LENGTH or not delivery_id.isprintable():
        raise ApiError(
            400, f"{DELIVERY_HEADER} must be 1-{MAX_DELIVERY_ID_LENGTH} printable characters"
        )
    return delivery_id


def process_login(body: bytes, after=None) -> tuple[int, dict]:
    """Validate the whole login, then start (or find) one sync per account and relation.

    ``after``: the ``state.batch.Batch`` the request sends last (its counters go there)."""
    svc = services()
    document = http_errors.read_json_object(body, request.is_json)
    user_id, accounts = parse_login(document)
    # each relation is a sync of its own; all of them start together (service.syncs)
    tickets = start_syncs(
        svc,
        user_id=user_id,
        trigger="webhook",
        requests=[
            SyncRequest(provider, relation, credential)
            for provider, credential, relations in accounts
            for relation in relations
        ],
    )
    syncs = []
    for ticket in tickets:
        count("triggers", batch=after, kind="webhook", outcome=trigger_outcome(ticket))
        syncs.append(ticket_view(ticket))
    log.info(
        "login webhook accepted",
        extra={
            "user_id": user_id,
            "syncs": " ".join(
                f"{s['provider']}:{s['relation']}:{s['sync_id']}:{s['status']}" for s in syncs
            ),
        },
    )
    return 202, {"syncs": syncs}


def _answer(status: int, body: dict, replayed: bool = False) -> Response:
    response = jsonify(body)
    response.status_code = status
    if replayed:
        response.headers["X-Netsync-Replayed"] = "true"
    return response


@bp.post("/login")
def login():
    body = http_errors.read_body()  # 413 past MAX_CONTENT_LENGTH, chunked or not
    _verify_signature(body)
    delivery_id = _delivery_id()
    svc = services()
    deliveries = DeliveryLog(svc.redis, svc.settings.key_prefix, svc.settings.delivery_ttl)
    if delivery_id is not None:
        first = deliveries.claim(delivery_id)
        if first is not None:
            count("webhook_deliveries", outcome="replayed")
            return _answer(*first, replayed=True)
    after = Batch(svc.redis)  # the counters and the delivery's answer: one round trip
    try:
        status, answer = process_login(body, after)
    except ApiError as exc:
        log.info("login webhook invalid", extra={"status": exc.status, "code": exc.code})
        status, answer = exc.status, exc.payload()
    except BaseException:
        if delivery_id is not None:
            deliveries.release(delivery_id)
        raise
    count("webhook_deliveries", batch=after, outcome="accepted" if status < 300 else "invalid")
    if delivery_id is not None:
        deliveries.record(delivery_id, status, answer, batch=after)
    after.execute()
    return _answer(status, answer)


def init_app(app: Flask) -> None:
    http_errors.init_app(app)
    app.register_blueprint(bp)
