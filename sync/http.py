"""The one way netsync talks to a provider: pooled sessions, hard timeouts.

Every call has a connect and a read timeout (an open socket would otherwise
block Celery's soft time limit); transport failures become the taxonomy's
``transport_error`` (BACKOFF). Sessions are per thread so the threads and
gevent pools can share a process without sharing a connection pool.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass

import orjson
import requests
from requests.adapters import HTTPAdapter

from providers.errors import TRANSPORT_ERROR, Action, ErrorRule, ProviderCallError, ProviderError
from sync import egress

#: a user-supplied instance that resolved to a non-public address when the call
#: connected (DNS changed since it was checked): never called, the sync fails
ADDRESS_REFUSED = ErrorRule(Action.FAIL, egress.NOT_ALLOWED)

_local = threading.local()


def _environment_proxies() -> dict:
    from urllib.request import getproxies

    return {k: v for k, v in getproxies().items() if k in ("http", "https")}


def session(guard: frozenset | None = None) -> requests.Session:
    """This thread's pooled session; with ``guard`` (``OUTBOUND_ALLOW_PRIVATE``), the one
    whose connections pass ``sync.egress``'s public-address check, for URLs a user gave."""
    if guard is not None:
        return guarded_session(guard)
    sess = getattr(_local, "session", None)
    if sess is None:
        sess = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
        sess.mount("http://", adapter)
        sess.mount("https://", adapter)
        sess.headers["User-Agent"] = "netsync/1.0"
        # requests re-reads proxy variables and ~/.netrc on every call when
        # trust_env is on (over 1 ms a call in the pipeline profile); read the
        # proxy settings once instead.
        sess.trust_env = False
        sess.proxies.update(_environment_proxies())
        _local.session = sess
    return sess


def guarded_session(allow_private: frozenset) -> requests.Session:
    sessions = getattr(_local, "guarded", None)
    if sessions is None:
        sessions = _local.guarded = {}
    sess = sessions.get(allow_private)
    if sess is None:
        sess = requests.Session()
        adapter = egress.GuardedAdapter(
            allow_private, pool_connections=8, pool_maxsize=32, max_retries=0
        )
        sess.mount("http://", adapter)
        sess.mount("https://", adapter)
        sess.headers["User-Agent"] = "netsync/1.0"
        sess.trust_env = False  # and no proxy: the guard checks the peer it reaches
        sessions[allow_private] = sess
    return sess


@dataclass(frozen=True)
class Answer:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    body: object  # parsed JSON, or None when the body is not JSON


def send(
    method: str,
    url: str,
    *,
    params=None,
    headers=None,
    timeout: tuple[float, float],
    http: requests.Session | None = None,
) -> Answer:
    """Send one request; raise ProviderCallError(transport_error) if no answer came."""
    try:
        response = (http or session()).request(
            method, url, params=params, headers=headers, timeout=timeout, allow_redirects=False
        )
    except (requests.Timeout, requests.ConnectionError) as exc:
        if egress.refused_by_guard(exc):
            message = "the instance resolves to a non-public address: not called"
            raise ProviderCallError(ProviderError(ADDRESS_REFUSED, 0, message)) from None
        raise ProviderCallError(ProviderError(TRANSPORT_ERROR, 0, type(exc).__name__)) from None
    return Answer(response.status_code, response.headers, decode_body(response.content))


def decode_body(content: bytes):
    """The parsed JSON body, or None when there is none or it is not JSON.

    orjson straight from the bytes: no charset detection and no str copy of the
    body (a 100-follower GitHub page: 1.6 ms -> 0.4 ms, bench/hotpath.py). What
    orjson refuses but the standard library reads (UTF-16/32 bodies) goes to
    the standard library. orjson reads an integer past 64 bits as a float:
    every provider's 64-bit-and-larger ids are strings (docs/providers.md).
    """
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(content)
    except ValueError:
        return None


class UnparseableAnswer(Exception):
    """The provider's answer did not have the shape its documentation gives."""


@contextlib.contextmanager
def parsing(what: str):
    """Treat a failure to read a provider's answer as the provider's fault.

    Only the parsing of an answer goes in here: everything else a task does
    is our code, and its exceptions surface with their traceback.
    """
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UnparseableAnswer(f"unexpected {what} ({type(exc).__name__})") from exc
