"""Where netsync may call for a URL a user gave it: public addresses only.

A federated account (a Mastodon instance, a Bluesky PDS) names its server in
the login, and a Bluesky DID document names its PDS: URLs nobody on our side
chose. Calling them as they are is the classic server-side request forgery
opening (``http://169.254.169.254/``, ``http://10.0.0.5:6379/``, a name that
resolves to one of them). So such a URL passes two checks:

1. **When it arrives** (``check_instance_url``): ``https`` only, no user info,
   a host that is a DNS name or a canonical IP literal (never the numeric
   shorthands that C resolvers still read: ``2130706433``, ``0177.0.0.1``,
   ``0x7f.1``, ``127.1``), and every address the name resolves to public
   (``is_public_address``).
2. **When a connection opens** (``guarded_adapter``): the connection resolves
   the name itself, refuses it unless every address is public, connects to
   the checked address (the TLS server name and ``Host`` stay the URL's
   name), and checks the peer it reached. No DNS answer can change between
   the check and the call (rebinding), and a redirect is never followed
   (``sync.http.send``: ``allow_redirects=False``), so it needs no check of
   its own.

``OUTBOUND_ALLOW_PRIVATE`` names exact ``host:port``s (as the URL writes them)
that may be private and ``http`` (tests and the demo's simulator). URLs an
operator configured (``<PROVIDER>_API_URL``) do not come through here.

Libraries considered: ``advocate`` does the same for requests but was last
released in 2020 against urllib3 1.x internals; this module is the part of it
netsync needs, on the standard library's ``ipaddress``, which knows the IANA
special-purpose registries.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.util import connection as urllib3_connection

#: the error code a refused instance URL answers (CONTRACT: 422 instance_not_allowed)
NOT_ALLOWED = "instance_not_allowed"

#: RFC 6598 shared address space (carrier-grade NAT): not private to ``ipaddress``,
#: and not public either
CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: NAT64 well-known prefix (RFC 6052): the IPv4 address it embeds is what is reached
NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: a DNS label; a host name's last label may not be all digits (a numeric form)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
#: the only IPv4 literal accepted: four decimal octets without leading zeros
_DOTTED_QUAD = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\Z"
)
#: names that always mean this machine (RFC 6761), whatever a resolver says
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class InstanceNotAllowed(ValueError):
    """A user-supplied URL netsync will not call (the message says why, never a token)."""

    code = NOT_ALLOWED


class AddressRefused(NewConnectionError):
    """A guarded connection refused to open: its host resolved to a non-public address."""


def is_public_address(address) -> bool:
    """Whether ``address`` is a public unicast address netsync may call.

    ``ipaddress``'s ``is_global`` covers loopback, private, link-local, unique
    local, unspecified, reserved, documentation, benchmarking and CGNAT ranges;
    the rest is refused here by name: multicast, IPv4-mapped IPv6, and the
    IPv6 forms that carry an IPv4 address (6to4, Teredo, NAT64), whose
    embedded address is what the packet reaches.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        if ip.ipv4_mapped is not None or ip.teredo is not None:
            return False
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip in NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.version == 4 and ip in CGNAT:
        return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


@dataclass(frozen=True)
class InstanceURL:
    """A checked instance URL."""

    #: the base URL as netsync stores and calls it (scheme and host lower case,
    #: no trailing slash; a path is kept: the instance lives there)
    base_url: str
    #: the host as the URL writes it (IPv6 without brackets)
    host: str
    port: int
    #: ``OUTBOUND_ALLOW_PRIVATE`` named it
    private_allowed: bool

    @property
    def name(self) -> str:
        """The instance's name in keys, metrics and the CLI: host[:port][/path]."""
        parts = urlsplit(self.base_url)
        return f"{parts.netloc}{parts.path}"


def instance_name(base_url: str) -> str:
    """The name of an instance by its base URL (``InstanceURL.name``)."""
    parts = urlsplit(base_url)
    return f"{parts.netloc.lower()}{parts.path.rstrip('/')}"


def allowed_private(allow: frozenset[str] | tuple, host: str, port: int, netloc: str) -> bool:
    """Whether ``OUTBOUND_ALLOW_PRIVATE`` names this host and port."""
    bracketed = f"[{host}]" if ":" in host else host
    return netloc in allow or f"{bracketed}:{port}" in allow


def check_instance_url(
    url, allow_private=(), resolve=socket.getaddrinfo, what: str = "instance"
) -> InstanceURL:
    """``url`` checked (see the module docstring); ``InstanceNotAllowed`` says why not."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InstanceNotAllowed(f"{what} must be a URL")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise InstanceNotAllowed(f"{what} must be a plain ASCII URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
        hostname = parts.hostname
    except ValueError:
        raise InstanceNotAllowed(f"{what} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InstanceNotAllowed(f"{what} must be an https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InstanceNotAllowed(f"{what} must not carry user info")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InstanceNotAllowed(f"{what} must be a base URL (no query or fragment)")
    port = parts.port or (443 if scheme == "https" else 80)
    host = (hostname or "").lower()
    path = parts.path.rstrip("/")
    if any(segment in (".", "..") for segment in path.split("/")) or "%2f" in path.lower():
        raise InstanceNotAllowed(f"{what} path must be plain")
    literal = _ip_literal(host, parts.netloc)
    if literal is None:
        _check_host_name(host, what)
    private_ok = allowed_private(frozenset(allow_private), host, port, parts.netloc.lower())
    if scheme != "https" and not private_ok:
        raise InstanceNotAllowed(f"{what} must be an https URL")
    if not private_ok:
        bare = host.rstrip(".")
        if bare in _LOCAL_NAMES or bare.endswith(".localhost"):
            raise InstanceNotAllowed(f"{what} names this machine")
        addresses = [literal] if literal is not None else resolve_addresses(host, port, resolve)
        if not addresses:
            raise InstanceNotAllowed(f"{what} host does not resolve")
        for address in addresses:
            if not is_public_address(address):
                raise InstanceNotAllowed(f"{what} host resolves to a non-public address")
    netloc = parts.netloc.lower()
    return InstanceURL(f"{scheme}://{netloc}{path}", host, port, private_ok)


def _ip_literal(host: str, netloc: str):
    """The IP address a host spells in canonical form, None for a host name; a numeric
    form that is not canonical (decimal, octal, hex, short) is refused by the caller."""
    if netloc.startswith("["):
        if "%" in host:
            raise InstanceNotAllowed("instance host must not carry an IPv6 zone")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise InstanceNotAllowed("instance host is not a valid IPv6 literal") from None
    if _DOTTED_QUAD.match(host):
        return ipaddress.IPv4Address(host)
    return None


def _check_host_name(host: str, what: str) -> None:
    """A DNS name of letters, digits and hyphens whose last label is not all digits
    (an all-numeric or hex label is what ``inet_aton`` reads as an address)."""
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InstanceNotAllowed(f"{what} host is not a valid host name")
    last = labels[-1]
    if last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last):
        raise InstanceNotAllowed(f"{what} host is a numeric address form")


def resolve_addresses(host: str, port: int, resolve=socket.getaddrinfo) -> list:
    """Every address ``host`` resolves to (empty when it does not)."""
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


# -- the connect-time check ----------------------------------------------------------
class _GuardedConnectionMixin:
    """Resolve, check every address, connect to a checked one, check the peer."""

    #: ``OUTBOUND_ALLOW_PRIVATE`` (set on the class made per allow list)
    allow_private: frozenset = frozenset()
    #: how names are resolved (``socket.getaddrinfo``; a test may replace it)
    resolve = staticmethod(socket.getaddrinfo)

    def _new_conn(self):
        host, port = self.host.strip("[]"), self.port
        bracketed = f"[{host}]" if ":" in host else host
        private_ok = allowed_private(self.allow_private, host, port, f"{bracketed}:{port}")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = (
            [literal] if literal is not None else resolve_addresses(host, port, self.resolve)
        )
        if not addresses:
            raise AddressRefused(self, f"{host} does not resolve")
        if not private_ok and not all(is_public_address(a) for a in addresses):
            raise AddressRefused(self, f"{host} resolves to a non-public address: not called")
        error = None
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (str(address), port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                error = exc
                continue
            peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
            if not private_ok and not is_public_address(peer):
                sock.close()
                raise AddressRefused(self, f"{host} connected to a non-public address")
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


@functools.cache
def _pool_classes(allow_private: frozenset) -> dict:
    attrs = {"allow_private": allow_private}
    http_conn = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
    https_conn = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    """A requests transport whose every new connection passes the public-address check."""

    def __init__(self, allow_private=(), **kwargs):
        self.allow_private = frozenset(allow_private)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.allow_private)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # through a proxy, the peer would be the proxy: user-supplied URLs go direct
        raise requests.ConnectionError(AddressRefused(None, "guarded calls take no proxy"))

    def __getstate__(self):
        state = super().__getstate__()
        state["allow_private"] = self.allow_private
        return state


def refused_by_guard(exc: BaseException) -> bool:
    """Whether a requests ``ConnectionError`` is the guard's refusal (not a network fault)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, AddressRefused):
            return True
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            exc = reason
            continue
        args = getattr(exc, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        exc = nested or exc.__cause__ or exc.__context__
    return False
