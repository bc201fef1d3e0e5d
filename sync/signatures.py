"""Signed requests: the login webhook (inbound) and completion callbacks (outbound).

One scheme both ways (CONTRACT "Signatures")::

    X-Netsync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

Secrets rotate: the first secret signs, every secret verifies, and a sender
in the middle of a rotation may send several ``v1=`` values. Every candidate
is compared in constant time (``hmac.compare_digest``). The timestamp bounds
replays: a signature more than ``tolerance`` seconds away from our clock,
in either direction, is refused. ``now`` is the injectable clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Netsync-Signature"
DELIVERY_HEADER = "X-Netsync-Delivery"
DEFAULT_TOLERANCE = 300

#: bounds the work an attacker can ask of us with one header
MAX_HEADER_LENGTH = 2048
MAX_SIGNATURES = 8


class SignatureError(ValueError):
    """A signature that does not authenticate its body.

    ``reason`` is one of ``missing``, ``malformed``, ``mismatch``, ``stale``,
    ``future``: short enough for a metric label, and never carries a secret.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def compute(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``v1`` value: hex HMAC-SHA256 of ``"<t>.<body>"``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: float | None = None) -> str:
    """The ``X-Netsync-Signature`` header value for ``body`` (default timestamp: now)."""
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={compute(secret, body, t)}"


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """(timestamp, v1 candidates) of a header; unknown schemes are ignored."""
    if not header or not header.strip():
        raise SignatureError("missing", "signature header is missing")
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("malformed", "signature header is too long")
    timestamps, candidates = [], []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed", "signature header items must be key=value")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value.lower())
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise SignatureError("malformed", "signature header needs exactly one integer t=")
    if not candidates:
        raise SignatureError("malformed", "signature header has no v1= value")
    if len(candidates) > MAX_SIGNATURES:
        raise SignatureError("malformed", "signature header has too many v1= values")
    return int(timestamps[0]), candidates


def verify(
    header: str | None,
    body: bytes,
    secrets: Iterable[str | bytes],
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> int:
    """Check ``header`` against ``body``; return its timestamp or raise SignatureError.

    Every (secret, candidate) pair is compared, without stopping at the first
    match, so the time taken says nothing about which secret or value matched.
    """
    timestamp, candidates = parse_header(header)
    now = time.time() if now is None else now
    # The cheap check first: junk with an old timestamp costs no HMAC.
    if timestamp < now - tolerance:
        raise SignatureError("stale", f"signature timestamp is more than {tolerance}s old")
    if timestamp > now + tolerance:
        raise SignatureError("future", f"signature timestamp is more than {tolerance}s ahead")
    matched = False
    for secret in secrets:
        expected = compute(secret, body, timestamp)
        for candidate in candidates:
            # compare_digest refuses non-ASCII str; bytes compare any candidate
            matched |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("mismatch", "no signature matches the body")
    return timestamp


# -- Standard Webhooks (outbound callbacks) ----------------------------------------------
def standard_webhook_headers(
    keys: bytes | Iterable[bytes], message_id: str, body: bytes, timestamp: float | None = None
) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers.

    Per the Standard Webhooks specification: ``v1,<base64 HMAC-SHA256(key,
    "<id>.<timestamp>.<body>")>``, where ``key`` is the base64-decoded part of
    a ``whsec_…`` secret, so a receiver can verify with an off-the-shelf library.
    Several keys (a rotation) give several space-separated signatures; a
    receiver holding either secret verifies.
    """
    t = str(int(time.time() if timestamp is None else timestamp))
    signed = message_id.encode() + b"." + t.encode() + b"." + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in ([keys] if isinstance(keys, bytes) else keys)
    )
    return {"webhook-id": message_id, "webhook-timestamp": t, "webhook-signature": signatures}
