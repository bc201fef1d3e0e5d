"""The public-address guard (``sync.egress``): at validation and at every connection."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from sync import egress
from sync.egress import InstanceNotAllowed, check_instance_url, is_public_address


def resolver(*addresses):
    def resolve(host, port, type=None):
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, 1, 6, "", (a, port))
            for a in addresses
        ]

    return resolve


PUBLIC = resolver("93.184.216.34")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.0.1", "172.31.255.255", "192.168.1.1",
        "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.1",
        "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.1", "192.0.2.1",
        "198.18.0.1", "198.51.100.1", "203.0.113.1", "::", "::1", "::ffff:127.0.0.1",
        "::ffff:8.8.8.8", "fd00::1", "fc00::1", "fe80::1", "ff02::1", "2002:7f00:1::",
        "2002:a00:5::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b::a00:5",
        "2001:db8::1", "100::1",
    ],
)  # fmt: skip
def test_non_public_addresses(address):
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2002:808:808::1",
                "64:ff9b::808:808"],
)  # fmt: skip
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org",  # not https
        "ftp://example.org",
        "https://2130706433",
        "https://0177.0.0.1",
        "https://0x7f.1",
        "https://127.1",
        "https://0x7f000001",
        "https://127.000.000.001",
        "https://1.2.3.04",
        "https://localhost",
        "https://LocalHost.",
        "https://a.b.localhost",
        "https://user:pw@example.org",
        "https://example.org?x=1",
        "https://example.org#frag",
        "https://exa mple.org",
        "https://ex\u0430mple.org",  # non-ASCII (a Cyrillic a)
        "https://[fe80::1%25eth0]",
        "https://[::1",
        "https://example.org:99999",
        "https://example.org/a/../b",
        "https://-bad-.org",
        "",
        None,
    ],
)
def test_refused_without_resolving(url):
    def fail(*args, **kwargs):
        raise AssertionError("resolved a URL that should be refused first")

    with pytest.raises(InstanceNotAllowed):
        check_instance_url(url, resolve=fail)


def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public():
    with pytest.raises(InstanceNotAllowed):
        check_instance_url("https://rebind.example", resolve=resolver("93.184.216.34", "10.0.0.5"))
    with pytest.raises(InstanceNotAllowed):
        check_instance_url("https://rebind.example", resolve=resolver())  # does not resolve


def test_a_public_instance_is_normalized_with_its_path_kept():
    checked = check_instance_url("HTTPS://Fosstodon.ORG/social/", resolve=PUBLIC)
    assert checked.base_url == "https://fosstodon.org/social"
    assert checked.name == "fosstodon.org/social" and not checked.private_allowed


def test_outbound_allow_private_names_exact_host_ports():
    allow = ("127.0.0.1:8900", "[::1]:8901")
    checked = check_instance_url("http://127.0.0.1:8900/mastodon/a.example", allow)
    assert (
        checked.private_allowed and checked.base_url == "http://127.0.0.1:8900/mastodon/a.example"
    )
    assert check_instance_url("http://[::1]:8901/x", allow).private_allowed
    for other in ("http://127.0.0.1:8901", "https://127.0.0.1", "http://localhost:8900"):
        with pytest.raises(InstanceNotAllowed):
            check_instance_url(other, allow)


# -- at connect time -------------------------------------------------------------------------
class Listener:
    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    running = Listener()
    yield running
    running.close()


@pytest.fixture
def rebinding(monkeypatch):
    """Names resolve as the test says at connect time (a DNS answer that changed)."""
    answers = {}

    def resolve(host, port, type=None):
        return resolver(*answers[host])(host, port, type)

    monkeypatch.setattr(egress._GuardedConnectionMixin, "resolve", staticmethod(resolve))
    return answers


def guarded(allow=()):
    session = requests.Session()
    session.trust_env = False
    adapter = egress.GuardedAdapter(allow, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_a_name_that_rebinds_to_loopback_is_refused_at_connect_time(listener, rebinding):
    rebinding["rebind.example"] = ["93.184.216.34"]
    url = f"http://rebind.example:{listener.port}/"
    check_instance_url(url.replace("http", "https"), resolve=resolver("93.184.216.34"))
    rebinding["rebind.example"] = ["127.0.0.1"]  # the answer changed after the check
    with pytest.raises(requests.ConnectionError) as refused:
        guarded().get(url, timeout=2)
    assert egress.refused_by_guard(refused.value)
    assert listener.accepted == 0


def test_a_literal_private_address_is_refused_at_connect_time(listener):
    with pytest.raises(requests.ConnectionError) as refused:
        guarded().get(f"http://127.0.0.1:{listener.port}/", timeout=2)
    assert egress.refused_by_guard(refused.value) and listener.accepted == 0


def test_an_allowed_host_port_connects_to_the_checked_address(listener, rebinding):
    rebinding["sim.test"] = ["127.0.0.1"]
    answer = guarded({f"sim.test:{listener.port}"}).get(
        f"http://sim.test:{listener.port}/", timeout=2
    )
    assert answer.status_code == 204 and listener.accepted == 1


def test_guarded_calls_never_go_through_a_proxy(listener):
    session = guarded({f"127.0.0.1:{listener.port}"})
    with pytest.raises(requests.ConnectionError) as refused:
        session.get(
            f"http://127.0.0.1:{listener.port}/",
            proxies={"http": f"http://127.0.0.1:{listener.port}"},
            timeout=2,
        )
    assert egress.refused_by_guard(refused.value) and listener.accepted == 0
