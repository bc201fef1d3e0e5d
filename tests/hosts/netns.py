"""Hosts on one machine: each a Linux network namespace with its own address on a bridge.

``Network`` builds, in the root namespace, a bridge with an address of its
own (the *services host*: Redis, the simulator and the relays to PostgreSQL
and RabbitMQ listen there) and, per ``add_host``, a namespace joined to the
bridge by a veth pair. A process started with ``exec_prefix(host)`` sees only
that host's interfaces: what it reaches of the others, it reaches over the
bridge, through the kernel's real TCP.

Faults are what a real network does:

- ``cut(host)`` disables the host's bridge port (``bridge link set … state
  0``): frames are dropped both ways, nothing is refused or reset, so TCP
  retransmits into the void and the peers notice only by their own timeouts;
  ``heal`` sets the port forwarding again and the retransmissions get through.
- a host with ``front=True`` also gets a second link on a *front* bridge
  (what a load balancer would reach it by), so the test can still talk to a
  web host whose back link is cut.

Delay needs ``tc netem``, which this kernel lacks: ``tests/hosts/relay.py``
delays at the TCP level instead. Names carry a random part, so two runs on
one machine never meet; everything is removed by ``close``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass


class NetworkUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ``ip``, a sandbox): say why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable_reason() -> str | None:
    """None if network namespaces, veth pairs and bridges can be made here; else why not."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "network namespaces, veth pairs and bridges need root"
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (iproute2)"
    probe = "nsprobe-" + secrets.token_hex(3)
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        link = "vp" + secrets.token_hex(3)
        veth = ip(
            "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", probe, check=False
        )
        if veth.returncode != 0:
            return f"`ip link add … type veth` failed: {veth.stderr.strip()}"
        bridge = "bp" + secrets.token_hex(3)
        made_bridge = ip("link", "add", bridge, "type", "bridge", check=False)
        if made_bridge.returncode != 0:
            return f"`ip link add … type bridge` failed: {made_bridge.stderr.strip()}"
        ip("link", "del", bridge, check=False)
        ip("link", "del", link, check=False)
    finally:
        ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    #: the host's side of its bridge port, in the root namespace (what ``cut`` disables)
    port: str
    front_address: str | None = None


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no interface of this machine is on."""
    import re

    shown = ip("-4", "-o", "addr", "show").stdout
    used = [ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", shown)]
    for _ in range(200):
        net = ipaddress.ip_network(
            f"10.{secrets.randbelow(150) + 100}.{secrets.randbelow(256)}.0/24"
        )
        if not any(net.overlaps(other) for other in used):
            return net
    raise NetworkUnavailable("no free 10.x.y.0/24 subnet for the bridge")


class Network:
    """A bridge (the services host's address on it) and the namespaced hosts on it."""

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise NetworkUnavailable(reason)
        self.tag = secrets.token_hex(3)
        self.hosts: dict[str, Host] = {}
        self._links: list[str] = []
        self._bridges: list[str] = []
        self.subnet = _free_subnet()
        self.front_subnet = _free_subnet()
        self.bridge = self._make_bridge(f"nsb{self.tag}", self.subnet)
        self.front_bridge = self._make_bridge(f"nsf{self.tag}", self.front_subnet)
        #: where the root namespace (the services host, the test itself) is on the bridge
        self.services_address = str(self.subnet.network_address + 1)
        self.front_services_address = str(self.front_subnet.network_address + 1)

    def _make_bridge(self, name: str, subnet) -> str:
        ip("link", "add", name, "type", "bridge")
        self._bridges.append(name)
        ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", name)
        ip("link", "set", name, "up")
        return name

    def add_host(self, name: str, front: bool = False) -> Host:
        index = len(self.hosts) + 2
        namespace = f"ns-{self.tag}-{name}"
        ip("netns", "add", namespace)
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        address = str(self.subnet.network_address + index)
        port = self._join(
            namespace, f"v{self.tag}{index:02d}", "eth0", self.bridge, address, self.subnet
        )
        host = Host(name, namespace, address, port)
        if front:
            host.front_address = str(self.front_subnet.network_address + index)
            self._join(
                namespace,
                f"f{self.tag}{index:02d}",
                "front0",
                self.front_bridge,
                host.front_address,
                self.front_subnet,
            )
        self.hosts[name] = host
        return host

    def _join(self, namespace, outer, inner, bridge, address, subnet) -> str:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        self._links.append(outer)
        ip("link", "set", outer, "master", bridge, "up")
        ip(
            "netns",
            "exec",
            namespace,
            "ip",
            "addr",
            "add",
            f"{address}/{subnet.prefixlen}",
            "dev",
            inner,
        )
        ip("netns", "exec", namespace, "ip", "link", "set", inner, "up")
        return outer

    def exec_prefix(self, host: str | None) -> list[str]:
        """The command prefix that runs a process on ``host`` (None: the services host)."""
        if host is None:
            return []
        return ["ip", "netns", "exec", self.hosts[host].namespace]

    def cut(self, host: str) -> None:
        """The host's link goes dark both ways (a partition, or the host lost)."""
        subprocess.run(
            ["bridge", "link", "set", "dev", self.hosts[host].port, "state", "0"], check=True
        )

    def heal(self, host: str) -> None:
        subprocess.run(
            ["bridge", "link", "set", "dev", self.hosts[host].port, "state", "3"], check=True
        )

    def is_cut(self, host: str) -> bool:
        shown = subprocess.run(
            ["bridge", "link", "show", "dev", self.hosts[host].port], capture_output=True, text=True
        ).stdout
        return "state disabled" in shown

    def close(self) -> None:
        for host in self.hosts.values():
            ip("netns", "del", host.namespace, check=False)
        for link in self._links:
            ip("link", "del", link, check=False)
        for bridge in self._bridges:
            ip("link", "del", bridge, check=False)
        self.hosts.clear()
