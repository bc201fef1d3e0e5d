"""One error taxonomy for every provider: what netsync does about an answer.

Each provider module maps what its API sends (HTTP status, error code,
subcode) to one of these actions in an ``ERRORS`` table; the shared task
classes in ``sync.tasks`` carry the actions out::

    provider answer
    ├── ok ─────────────── store the page, launch the next
    └── error
        ├── retry later (the sync goes on)
        │   ├── WAIT ──── quota exhausted: park until the provider's reset /
        │   │             retry-after; not a retry attempt, never a sleep
        │   ├── BACKOFF ─ transient (5xx, timeout, over capacity): park with
        │   │             exponential backoff + jitter, bounded attempts, then FAIL
        │   ├── REFRESH ─ access token expired: refresh it once (OAuth2), retry;
        │   │             a second refusal becomes REAUTH
        │   └── RESTART ─ paging cursor expired (Facebook code 100): start the
        │                 pagination over once; a second expiry becomes FAIL
        └── stop
            ├── REAUTH ── the user must log in again: sync ends needs_reauth,
            │             previous network kept, main app told
            ├── SKIP ──── target gone or hidden: finish with what there is (partial)
            └── FAIL ──── our request is wrong: sync ends failed, reported to Sentry
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    WAIT = "wait"
    BACKOFF = "backoff"
    REFRESH = "refresh"
    REAUTH = "reauth"
    SKIP = "skip"
    FAIL = "fail"
    #: Facebook code 100 on a paging call: an expired cursor. Restart the
    #: pagination once, then FAIL.
    RESTART = "restart"


@dataclass(frozen=True)
class ErrorRule:
    """One row of a provider's error table."""

    action: Action
    #: short machine-readable name kept on the sync record (``error.kind``)
    kind: str
    #: tell the user too (locked / checkpointed accounts), not only re-auth
    tell_user: bool = False


@dataclass(frozen=True)
class ProviderError:
    """A classified error answer: the rule, plus what the answer said."""

    rule: ErrorRule
    status: int
    message: str
    #: when the provider said we may call again (epoch seconds), if it did
    retry_at: float | None = None

    @property
    def action(self) -> Action:
        return self.rule.action


class ProviderCallError(Exception):
    """Raised inside a task to hand a classified error to the task's hooks.

    ``expected`` tells Sentry's filter not to report rate limits and revoked
    tokens as crashes.
    """

    def __init__(self, error: ProviderError):
        super().__init__(f"{error.rule.kind} (HTTP {error.status})")
        self.error = error
        self.expected = error.action is not Action.FAIL


TRANSPORT_ERROR = ErrorRule(Action.BACKOFF, "transport_error")
UNKNOWN_SERVER_ERROR = ErrorRule(Action.BACKOFF, "server_error")
UNKNOWN_CLIENT_ERROR = ErrorRule(Action.FAIL, "client_error")
UNPARSEABLE = ErrorRule(Action.BACKOFF, "unparseable_response")


#: the kind a 5xx without a table row of its own is kept as
SERVER_ERROR_KINDS = {502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}


def default_rule(status: int) -> ErrorRule:
    """What an answer no table row names means: retry servers, fail on our mistakes."""
    if status >= 500:
        kind = SERVER_ERROR_KINDS.get(status)
        return ErrorRule(Action.BACKOFF, kind) if kind else UNKNOWN_SERVER_ERROR
    if status == 429:
        return ErrorRule(Action.WAIT, "rate_limited")
    if status == 401:
        return ErrorRule(Action.REAUTH, "unauthorized")
    return UNKNOWN_CLIENT_ERROR
