"""One provider call as the simulator sees it, and the bounded log of them.

The log backs ``GET /_sim/calls`` (share and fairness tests read who called
what, when) and keeps only the last ``limit`` entries so a long soak run
cannot grow the simulator without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any


class Call:
    """A provider request in flight: who, what kind, which account, outcome."""

    __slots__ = (
        "seq",
        "t",
        "provider",
        "kind",
        "path",
        "remote",
        "token",
        "scheme",
        "account_id",
        "account",
        "relation",
        "request",
        "form",
        "status",
        "fault_id",
        "injected",
        "rate_limited",
        "endpoint",
        "paging",
        "authenticated",
        "owner",
        "instance",
        "counted",
        "resources",
    )

    def __init__(
        self, t: float, provider: str, kind: str, path: str, remote: str, request: Any = None
    ) -> None:
        self.seq = 0
        self.t = t
        self.provider = provider
        self.kind = kind
        self.path = path
        self.remote = remote
        self.request = request
        self.token: str | None = None
        self.scheme: str | None = None
        self.account_id: str | None = None
        self.account = None
        self.relation: str | None = None
        self.form = None
        self.status = 0
        self.fault_id: str | None = None
        self.injected: str | None = None  # kind of the fault that shaped the answer
        self.rate_limited = False
        #: the route as rules name it (``/2/users/:id/followers``), for per-endpoint limits
        self.endpoint: str | None = None
        #: the call pages (``ProviderSim.PAGING_PARAMS``): Mastodon's paging throttle
        self.paging = False
        #: the call carries a token the provider accepts, owned by account ``owner``
        self.authenticated = False
        self.owner: str | None = None
        #: the instance of a federated provider that serves the call (None: the default)
        self.instance: str | None = None
        #: it used quota (not a free 304, not refused, not an injected fault)
        self.counted = False
        #: resources it is billed for (``ProviderSim.PRICE_USD``: X's users returned)
        self.resources = 0


_FIELDS = (
    "seq",
    "t",
    "provider",
    "account",
    "token",
    "kind",
    "status",
    "path",
    "remote",
    "fault",
    "rate_limited",
)


class CallLog:
    """The last ``limit`` calls, oldest first, as compact tuples."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._entries: deque[tuple] = deque(maxlen=limit)
        self.next_seq = 1
        self.dropped = 0

    def append(self, call: Call) -> None:
        call.seq = self.next_seq
        self.next_seq += 1
        if len(self._entries) == self.limit:
            self.dropped += 1
        # path only (request.path): query strings may carry access tokens
        self._entries.append(
            (
                call.seq,
                call.t,
                call.provider,
                call.account_id,
                call.token,
                call.kind,
                call.status,
                call.path,
                call.remote,
                call.fault_id,
                call.rate_limited,
            )
        )

    def clear(self) -> None:
        self._entries.clear()
        self.dropped = 0

    def query(
        self,
        provider: str | None = None,
        since: float | None = None,
        since_seq: int | None = None,
        token: str | None = None,
        account: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict]:
        """Entries matching every given filter (``since``: strictly later timestamps)."""
        count = 0
        for entry in self._entries:
            if since_seq is not None and entry[0] <= since_seq:
                continue
            if since is not None and entry[1] <= since:
                continue
            if provider is not None and entry[2] != provider:
                continue
            if account is not None and entry[3] != account:
                continue
            if token is not None and entry[4] != token:
                continue
            yield dict(zip(_FIELDS, entry))
            count += 1
            if limit is not None and count >= limit:
                return

    def __len__(self) -> int:
        return len(self._entries)
