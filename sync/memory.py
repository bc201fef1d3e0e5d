"""What a worker process remembers from one task to the next: ``WorkerMemory``, bounded.

A Celery task object serves every request of its kind, so it keeps no state
of its own (what one run knows is its ``sync.context.SyncContext``). A few
things are worth keeping across runs in one process, and they are kept
here, each in a ``BoundedCache`` that evicts the least recently used entry:

- the quota hint of a sync: the scopes and queue class of its last call in
  this process, so its next task here sends the take of the first quota
  bucket with its first round trip (``sync.context.load``);
- the caller hint of a sync: who its last call here counted against
  (``state.announced.Caller``) and its queue class, so its next task here
  sends the gate's lease and announced take with its first round trip;
- whether a provider's breaker said "wait" at this process' last look (no
  take is sent ahead while it does);
- one ``Provider`` per class and base URL (it holds no per-request state).

Forgetting costs little: a sync whose hint was evicted makes one round trip
more on its next page. One ``WorkerMemory`` per process, on its ``Services``
(``sync.runtime``); a forked pool child has its own copy. The caches lock,
so the threads of a threads or gevent pool may share them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from providers.provider import Provider

#: syncs whose quota hint a process keeps (a few hundred bytes each)
MAX_SYNCS = 10_000
#: providers × base URLs (and breaker verdicts) a process keeps
MAX_PROVIDERS = 256

_MISSING = object()


class BoundedCache:
    """A mapping of at most ``capacity`` entries; adding one more evicts the least recently used."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a BoundedCache holds at least one entry")
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._entries.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def pop(self, key, default=None):
        with self._lock:
            return self._entries.pop(key, default)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries


class QuotaHint(NamedTuple):
    """What a sync's last call in this process took quota under."""

    scopes: dict
    queue_class: str


class CallerHint(NamedTuple):
    """Who a sync's last call in this process counted against."""

    caller: object  # state.announced.Caller
    queue_class: str


class WorkerMemory:
    """The per-process memory of the engine (see the module docstring)."""

    def __init__(self, max_syncs: int = MAX_SYNCS, max_providers: int = MAX_PROVIDERS):
        #: sync id → ``QuotaHint`` of its last call here
        self.quota_hints = BoundedCache(max_syncs)
        #: sync id → ``CallerHint`` of its last call here
        self.caller_hints = BoundedCache(max_syncs)
        #: provider name → whether its breaker said "wait" at the last look here
        self.breaker_waiting = BoundedCache(max_providers)
        #: (provider class, base URL, user supplied) → its ``Provider``
        self.providers = BoundedCache(max_providers)
        #: sync id → the ``Provider`` of its account's instance (federated providers)
        self.sync_providers = BoundedCache(max_syncs)

    def provider(
        self, provider_class: type[Provider], url: str, user_supplied: bool = False
    ) -> Provider:
        key = (provider_class, url, user_supplied)
        found = self.providers.get(key)
        if found is None:
            found = provider_class(url, user_supplied)
            self.providers.put(key, found)
        return found

    def quota_hint(self, sync_id: str) -> QuotaHint | None:
        return self.quota_hints.get(sync_id)

    def remember_quota(self, sync_id: str, scopes: dict, queue_class: str) -> None:
        self.quota_hints.put(sync_id, QuotaHint(scopes, queue_class))

    def caller_hint(self, sync_id: str) -> CallerHint | None:
        return self.caller_hints.get(sync_id)

    def remember_caller(self, sync_id: str, caller, queue_class: str) -> None:
        self.caller_hints.put(sync_id, CallerHint(caller, queue_class))

    def requeue(self, sync_id: str, queue_class: str) -> None:
        """The sync moved to another queue class: its next take here is for that class."""
        for hints in (self.quota_hints, self.caller_hints):
            hint = hints.get(sync_id)
            if hint is not None:
                hints.put(sync_id, hint._replace(queue_class=queue_class))

    def forget(self, sync_id: str) -> None:
        """The sync finished: nothing of it is worth keeping."""
        self.quota_hints.pop(sync_id)
        self.caller_hints.pop(sync_id)
        self.sync_providers.pop(sync_id)

    def sync_provider(self, sync_id: str) -> Provider | None:
        """The instance's provider a federated sync called last in this process."""
        return self.sync_providers.get(sync_id)

    def remember_sync_provider(self, sync_id: str, provider: Provider) -> None:
        self.sync_providers.put(sync_id, provider)

    def breaker_said_wait(self, provider: str) -> bool:
        return bool(self.breaker_waiting.get(provider))

    def note_breaker(self, provider: str, waiting: bool) -> None:
        self.breaker_waiting.put(provider, waiting)
