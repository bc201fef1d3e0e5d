"""Quota shorthands for the tests: a token's bucket name, and a grant's wait alone.

The engine takes a whole ``QuotaDecision`` (``QuotaGate.decide``: its tickets
are settled after the call); most quota tests only ask how long to wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from state.quota import Prefetched, QuotaGate


def fingerprint(token: str) -> str:
    """A valid ``scopes["token"]`` key for ``token`` (hex, as the engine's credential
    fingerprints are)."""
    return hashlib.blake2b(token.encode(), digest_size=12, person=b"netsync-quota").hexdigest()


def acquire(
    gate: QuotaGate,
    provider: str,
    scopes: Mapping[str, str],
    queue_class: str,
    cost: int = 1,
    first: Prefetched | None = None,
) -> float:
    """0.0 when the call may go now (quota taken), else seconds to park it."""
    return gate.decide(provider, scopes, queue_class, cost, first).wait_s
