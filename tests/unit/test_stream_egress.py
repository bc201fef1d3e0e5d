"""The streams role's aiohttp guard (``sync.streams.guarded``): every connection to a
user-supplied host reaches public addresses only, whatever DNS answers at connect time."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver

from sync.streams.guarded import guarded_session, refused_by_guard
from tests.unit.test_egress import listener  # noqa: F401 (the fixture)


class ScriptedResolver(AbstractResolver):
    """Names resolve as the test says (a DNS answer that changed since the login's check)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.answers[host]
        ]

    async def close(self):
        pass


def fetch(url: str, allow=(), answers=None) -> int:
    async def go():
        async with guarded_session(allow, ScriptedResolver(answers or {})) as session:
            timeout = aiohttp.ClientTimeout(total=5)
            async with session.get(url, allow_redirects=False, timeout=timeout) as response:
                return response.status

    return asyncio.run(go())


def test_a_name_that_resolves_to_loopback_is_refused_and_nothing_connects(listener):  # noqa: F811
    with pytest.raises(aiohttp.ClientConnectionError) as refused:
        fetch(f"http://rebind.example:{listener.port}/", answers={"rebind.example": ["127.0.0.1"]})
    assert refused_by_guard(refused.value) and listener.accepted == 0


def test_a_name_with_any_non_public_address_is_refused(listener):  # noqa: F811
    with pytest.raises(aiohttp.ClientConnectionError) as refused:
        fetch(
            f"http://mixed.example:{listener.port}/",
            answers={"mixed.example": ["93.184.216.34", "127.0.0.1"]},
        )
    assert refused_by_guard(refused.value) and listener.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]"])
def test_a_literal_private_address_is_refused_without_a_connection(listener, host):  # noqa: F811
    with pytest.raises(aiohttp.ClientConnectionError) as refused:
        fetch(f"http://{host}:{listener.port}/")
    assert refused_by_guard(refused.value) and listener.accepted == 0


def test_an_allowed_host_port_connects(listener):  # noqa: F811
    allow = {f"sim.test:{listener.port}"}
    answers = {"sim.test": ["127.0.0.1"]}
    assert fetch(f"http://sim.test:{listener.port}/", allow, answers) == 204
    assert listener.accepted == 1


def test_an_allowed_literal_connects_and_only_on_its_port(listener):  # noqa: F811
    assert fetch(f"http://127.0.0.1:{listener.port}/", {f"127.0.0.1:{listener.port}"}) == 204
    with pytest.raises(aiohttp.ClientConnectionError):
        fetch(f"http://127.0.0.1:{listener.port}/", {"127.0.0.1:1"})
    assert listener.accepted == 1
