"""The public-address guard (``sync.egress``) for the streams role's aiohttp calls.

A Mastodon account on its own instance makes the streams role call URLs no
operator chose: the instance from the login, and the streaming URL that
instance announces. ``sync.egress.check_instance_url`` checks such a URL
before it is called; this session checks again at every connection, so a name
that resolved to a public address then and rebinds to an internal one now
(DNS rebinding) is never reached:

- ``PublicOnlyResolver`` (aiohttp's ``AbstractResolver``, given to the
  ``TCPConnector``): resolves a name and refuses it unless every address is
  public, or the name's ``host:port`` is in ``OUTBOUND_ALLOW_PRIVATE``;
- the connector's ``socket_factory`` sees every address a connection is about
  to be opened to, IP literals included (aiohttp does not resolve those), and
  refuses a non-public one unless the allow-list named it (directly, or by a
  name that resolved to it).

Redirects are not followed by the callers (``allow_redirects=False``), and the
session reads no proxy settings from the environment (a proxy would be the peer).
"""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from sync.egress import allowed_private, is_public_address


class AddressRefused(OSError):
    """A guarded connection refused to open: the address is not public (never a token)."""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PublicOnlyResolver(AbstractResolver):
    """Resolves with aiohttp's threaded resolver; refuses names with a non-public address."""

    def __init__(self, allow_private=(), resolver: AbstractResolver | None = None):
        self.allow_private = frozenset(allow_private)
        self._resolver = resolver
        #: (address, port) an allow-listed name resolved to: the socket factory lets them by
        self.allowed_addresses: set[tuple[str, int]] = set()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._resolver is None:
            self._resolver = ThreadedResolver()
        results = await self._resolver.resolve(host, port, family)
        if allowed_private(self.allow_private, host, port, _host_port(host, port)):
            self.allowed_addresses.update((r["host"], r["port"]) for r in results)
            return results
        if not results or not all(is_public_address(r["host"]) for r in results):
            raise AddressRefused(f"{host} resolves to a non-public address: not called")
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()

    def socket_for(self, addr_info) -> socket.socket:
        """The connector's ``socket_factory``: a socket only towards an allowed address."""
        family, type_, proto, _, sockaddr = addr_info
        address, port = sockaddr[0].split("%")[0], sockaddr[1]
        allowed = (
            is_public_address(address)
            or (address, port) in self.allowed_addresses
            or allowed_private(self.allow_private, address, port, _host_port(address, port))
        )
        if not allowed:
            raise AddressRefused(f"{address} is not a public address: not connected")
        return socket.socket(family=family, type=type_, proto=proto)


def guarded_session(allow_private=(), resolver: AbstractResolver | None = None):
    """An aiohttp session for user-supplied hosts: every connection passes the guard."""
    guard = PublicOnlyResolver(allow_private, resolver)
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, resolver=guard, socket_factory=guard.socket_for
    )
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=10),
        connector=connector,
        trust_env=False,
    )


def refused_by_guard(exc: BaseException) -> bool:
    """Whether an aiohttp connection error is this guard's refusal."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, AddressRefused):
            return True
        os_error = getattr(exc, "os_error", None)
        exc = os_error if isinstance(os_error, BaseException) else exc.__cause__
    return False
