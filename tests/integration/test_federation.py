"""Federated providers end to end: Mastodon instances and Bluesky PDSes, real processes.

The session stack's simulator serves instances under ``/mastodon/<name>/…``
and ``/bluesky/<name>/…`` and a PLC directory; the dev stack names the
simulator's ``host:port`` in ``OUTBOUND_ALLOW_PRIVATE`` (a loopback address a
login may name) and ``BLUESKY_PLC_URL``. Every login here names its
instance by URL, as the main app would.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from devtools.devstack import ROOT
from state.control import PAUSE_PROPAGATION_S
from tests.integration.conftest import new_user
from tests.integration.provider_helpers import calls, client, login

PREFIX = "netsync"


def instance_name() -> str:
    return f"i{secrets.token_hex(3)}.example"


def mastodon_account(stack, instance: str, size: int) -> dict:
    account = stack.add_account(
        "mastodon", size, id=str(10**9 + secrets.randbelow(10**9)), instance=instance
    )
    return {**account, "instance_url": f"{stack.sim}/mastodon/{instance}"}


def instance_key(stack, provider: str, name: str) -> str:
    """The instance's name as netsync keys it: host:port/path of its base URL."""
    return f"{stack.sim.removeprefix('http://')}/{provider}/{name}"


def truth(stack, provider: str, account: dict) -> set[str]:
    response = requests.get(
        f"{stack.sim}/_sim/truth/{provider}/{account['id']}",
        params={"instance": account["instance"]} if account.get("instance") else {},
        timeout=30,
    )
    response.raise_for_status()
    return set(response.json()["ids"])


def assert_exact(stack, user: str, account: dict, record: dict) -> None:
    assert record["status"] == "succeeded", record
    ids = stack.network_ids(user, account["provider"])
    assert len(ids) == len(set(ids))
    assert set(ids) == truth(stack, account["provider"], account)


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "service", *args],
        cwd=ROOT,
        env=stack.dev.base_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


# -- the instance travels with the account ---------------------------------------------
def test_users_on_two_instances_are_synced_exactly_each_on_its_own(stack):
    a, b = instance_name(), instance_name()
    first, second = mastodon_account(stack, a, 170), mastodon_account(stack, b, 90)
    users = new_user(), new_user()
    syncs = [login(stack, u, acct)["sync_id"] for u, acct in zip(users, (first, second))]
    for user, account, sync_id in zip(users, (first, second), syncs):
        assert_exact(stack, user, account, stack.wait_final(sync_id, timeout=90))
    # every call went to the account's own instance, with its own token only
    for account, instance in ((first, a), (second, b)):
        made = calls(stack, "mastodon", token=account["token"])
        assert made and all(c["path"].startswith(f"/mastodon/{instance}/") for c in made)
    usage = stack.stats()["usage"]["mastodon"]["instances"]
    assert usage[a]["calls"] >= 4 and usage[b]["calls"] >= 3


def test_an_account_without_instance_stays_on_mastodon_api_url(stack):
    account = stack.add_account("mastodon", 20, id=str(10**9 + secrets.randbelow(10**9)))
    user = new_user()
    record = stack.wait_final(login(stack, user, account)["sync_id"], timeout=60)
    assert_exact(stack, user, account, record)
    made = calls(stack, "mastodon", token=account["token"])
    assert all(c["path"].startswith("/mastodon/api/") for c in made)


def test_a_token_follows_its_instance_when_the_account_moves(stack):
    """A re-login names a new instance: the next sync calls only there."""
    old, new = instance_name(), instance_name()
    account = mastodon_account(stack, old, 30)
    user = new_user()
    assert_exact(stack, user, account, stack.wait_final(login(stack, user, account)["sync_id"]))
    moved = stack.add_account(
        "mastodon", 45, id=account["id"], token=f"tok-{secrets.token_hex(6)}", instance=new
    )
    moved = {**moved, "instance_url": f"{stack.sim}/mastodon/{new}"}
    assert login(stack, user, moved)["status"] == "fresh"  # stored; synced a moment ago
    record = stack.wait_final(stack.resync(user, "mastodon")["sync_id"])
    assert_exact(stack, user, moved, record)
    made = calls(stack, "mastodon", token=moved["token"])
    assert made and all(c["path"].startswith(f"/mastodon/{new}/") for c in made)


# -- per instance: breakers, pauses, quotas ----------------------------------------------
def test_one_instance_in_an_outage_does_not_hold_back_the_others(stack):
    down, up = instance_name(), instance_name()
    stack.add_faults({"kind": "outage", "provider": "mastodon", "instance": down})
    dead = mastodon_account(stack, down, 200)
    alive = [mastodon_account(stack, up, 170) for _ in range(3)]
    dead_user, users = new_user(), [new_user() for _ in alive]
    dead_sync = login(stack, dead_user, dead)["sync_id"]
    syncs = [login(stack, u, a)["sync_id"] for u, a in zip(users, alive)]
    for user, account, sync_id in zip(users, alive, syncs):
        assert_exact(stack, user, account, stack.wait_final(sync_id, timeout=90))
    failed = stack.wait_final(dead_sync, timeout=90)
    assert failed["status"] == "failed", failed
    r = client(stack)
    down_breaker = r.hgetall(
        f"{PREFIX}:{{breaker:mastodon@{instance_key(stack, 'mastodon', down)}}}"
    )
    assert down_breaker.get(b"state") in (b"open", b"half_open"), down_breaker
    up_breaker = r.hgetall(f"{PREFIX}:{{breaker:mastodon@{instance_key(stack, 'mastodon', up)}}}")
    assert up_breaker.get(b"state", b"closed") == b"closed"


def test_pausing_one_instance_parks_its_calls_only(stack):
    paused, other = instance_name(), instance_name()
    name = instance_key(stack, "mastodon", paused)
    cli(stack, "providers", "pause", "mastodon", "--instance", name, "--reason", "test")
    try:
        time.sleep(PAUSE_PROPAGATION_S)  # the documented bound for a pause to reach workers
        held, free = mastodon_account(stack, paused, 100), mastodon_account(stack, other, 100)
        held_user, free_user = new_user(), new_user()
        held_sync = login(stack, held_user, held)["sync_id"]
        free_sync = login(stack, free_user, free)["sync_id"]
        assert_exact(stack, free_user, free, stack.wait_final(free_sync, timeout=60))
        view = stack.sync(held_sync)
        assert view["status"] in ("queued", "running") and not calls(
            stack, "mastodon", token=held["token"]
        )
        listed = cli(stack, "providers", "list").stdout
        assert f"mastodon@{name} paused" in listed
    finally:
        cli(stack, "providers", "resume", "mastodon", "--instance", name)
    assert_exact(stack, held_user, held, stack.wait_final(held_sync, timeout=60))


def test_each_instance_announces_its_own_limits_and_gets_its_own_buckets(stack):
    """Two instances announce different limits: each account's bucket holds its own
    instance's figures, and no call is refused."""
    small, large = instance_name(), instance_name()
    response = requests.post(
        f"{stack.sim}/_sim/faults",
        json={"add": [
            {"kind": "rate_limit", "provider": "mastodon", "instance": small,
             "limit": 250, "window_s": 300, "scope": "user", "align": True},
            {"kind": "rate_limit", "provider": "mastodon", "instance": large,
             "limit": 900, "window_s": 300, "scope": "user", "align": True},
        ]},
        timeout=10,
    )  # fmt: skip
    response.raise_for_status()
    accounts = [mastodon_account(stack, small, 170), mastodon_account(stack, large, 170)]
    users = [new_user() for _ in accounts]
    syncs = [login(stack, u, a)["sync_id"] for u, a in zip(users, accounts)]
    for user, account, sync_id in zip(users, accounts, syncs):
        assert_exact(stack, user, account, stack.wait_final(sync_id, timeout=60))
    r = client(stack)
    for account, instance, limit in ((accounts[0], small, 250), (accounts[1], large, 900)):
        host = instance_key(stack, "mastodon", instance)
        keys = list(r.scan_iter(match=f"{PREFIX}:ann:{{mastodon:account:{host}|*", count=1000))
        assert keys, f"no announced bucket for {host}"
        fields = {k: v for key in keys for k, v in r.hgetall(key).items()}
        assert any(str(limit).encode() in k + v for k, v in fields.items()), fields
        refused = [c for c in calls(stack, "mastodon", token=account["token"]) if c["rate_limited"]]
        assert not refused


# -- Bluesky: the PDS from the login, or from the DID document --------------------------
def bluesky_account(stack, pds: str, size: int, **extra) -> dict:
    return stack.add_account(
        "bluesky", size, id=f"u{secrets.token_hex(4)}.{pds}", instance=pds, **extra
    )


def test_bluesky_pds_from_the_login(stack):
    pds = instance_name()
    account = bluesky_account(stack, pds, 230)
    account["instance_url"] = f"{stack.sim}/bluesky/{pds}"
    user = new_user()
    assert_exact(stack, user, account, stack.wait_final(login(stack, user, account)["sync_id"]))
    made = calls(stack, "bluesky", token=account["token"])
    assert made and all(c["path"].startswith(f"/bluesky/{pds}/xrpc/") for c in made)


def test_bluesky_pds_from_the_plc_did_document(stack):
    """No instance in the login: the handle resolves to its DID, the PLC directory names
    the PDS, and every call with the token goes there."""
    pds = instance_name()
    account = bluesky_account(stack, pds, 150)
    user = new_user()
    assert_exact(stack, user, account, stack.wait_final(login(stack, user, account)["sync_id"]))
    made = calls(stack, "bluesky", token=account["token"])
    assert made and all(c["path"].startswith(f"/bluesky/{pds}/xrpc/") for c in made)
    cached = client(stack).get(f"{PREFIX}:pds:{account['id']}")
    assert cached.decode() == f"{stack.sim}/bluesky/{pds}"


def test_a_bluesky_account_that_moved_pds_is_found_again(stack):
    """The cached PDS answers as if the account were not there: the DID document is read
    again, names the new PDS, and the sync goes on there."""
    old, new = instance_name(), instance_name()
    account = bluesky_account(stack, old, 120)
    user = new_user()
    assert_exact(stack, user, account, stack.wait_final(login(stack, user, account)["sync_id"]))
    moved = stack.add_account(
        "bluesky", 140, id=account["id"], token=account["token"], instance=new
    )
    record = stack.wait_final(stack.resync(user, "bluesky")["sync_id"], timeout=60)
    assert_exact(stack, user, moved, record)
    cached = client(stack).get(f"{PREFIX}:pds:{account['id']}")
    assert cached.decode() == f"{stack.sim}/bluesky/{new}"
    made = calls(stack, "bluesky", token=account["token"])
    at_old = [c for c in made if c["path"].startswith(f"/bluesky/{old}/")]
    at_new = [c for c in made if c["path"].startswith(f"/bluesky/{new}/")]
    assert at_new and len(at_old) + len(at_new) == len(made)


# -- no way to point netsync at an internal address -------------------------------------
class Listener:
    """A TCP listener that counts the connections it is offered."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stopping = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener():
    running = Listener()
    yield running
    running.close()


def hostile_forms(port: int) -> list[str]:
    """At least 30 ways to name an address netsync must not call (the listener's port
    where a port can matter)."""
    p = port
    return [
        f"http://127.0.0.1:{p}",  # plain http, loopback
        f"https://127.0.0.1:{p}",  # loopback
        f"https://localhost:{p}",
        f"https://LOCALHOST.:{p}",
        f"https://anything.localhost:{p}",
        f"https://ip6-localhost:{p}",
        f"https://2130706433:{p}",  # decimal 127.0.0.1
        f"https://0177.0.0.1:{p}",  # octal
        f"https://0x7f.1:{p}",  # hex, short
        f"https://0x7f000001:{p}",  # hex
        f"https://127.1:{p}",  # short
        f"https://017700000001:{p}",  # octal, whole
        f"https://127.000.000.001:{p}",  # zero-padded
        f"https://0:{p}",  # 0.0.0.0 shorthand
        f"https://0.0.0.0:{p}",  # unspecified
        f"https://[::]:{p}",
        f"https://[::1]:{p}",
        f"https://[::ffff:127.0.0.1]:{p}",  # IPv4-mapped
        f"https://[::ffff:7f00:1]:{p}",
        f"https://[::127.0.0.1]:{p}",  # IPv4-compatible (deprecated)
        f"https://[2002:7f00:1::]:{p}",  # 6to4 of 127.0.0.1
        f"https://[2002:a00:5::1]:{p}",  # 6to4 of 10.0.0.5
        f"https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]:{p}",  # Teredo
        f"https://[64:ff9b::7f00:1]:{p}",  # NAT64 of 127.0.0.1
        f"https://[fd00::1]:{p}",  # unique local
        f"https://[fe80::1]:{p}",  # link-local
        f"https://[fe80::1%25lo]:{p}",  # with a zone
        "http://169.254.169.254/",  # cloud metadata
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5:6379/",  # private (Redis)
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",  # CGNAT
        "https://198.18.0.1/",  # benchmarking
        "https://224.0.0.1/",  # multicast
        "https://240.0.0.1/",  # reserved
        "https://255.255.255.255/",  # broadcast
        f"https://user@127.0.0.1:{p}",  # user info
        f"https://fosstodon.org@127.0.0.1:{p}",
        f"https://127.0.0.1:{p}#@fosstodon.org",  # fragment trick
        f"https://127.0.0.1:{p}\\@fosstodon.org",  # backslash trick
        f"https://%31%32%37.0.0.1:{p}",  # percent-encoded host
        f"https://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{p}",  # full-width digits
        f"gopher://127.0.0.1:{p}/_INFO",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{p}",
        f"https://127.0.0.1:{p}/?next=https://fosstodon.org",  # query
        f"http://fosstodon.org:{p}",  # a public name, but plain http
    ]


def test_hostile_instance_urls_are_refused_before_anything_is_written(stack, listener):
    r = client(stack)
    forms = hostile_forms(listener.port)
    assert len(forms) >= 30
    answers = {}
    for form in forms:
        user = new_user()
        account = {"provider": "mastodon", "id": "4242", "token": f"tok-{secrets.token_hex(6)}"}
        response = stack.login(user, {**account, "instance_url": form})
        answers[form] = (response.status_code, response.json().get("error", {}).get("code"))
        # nothing written: no credential, no sync for this user
        assert not list(r.scan_iter(match=f"{PREFIX}:{{mastodon:{user}}}*", count=1000)), form
    refused = {f: a for f, a in answers.items() if a != (422, "instance_not_allowed")}
    assert not refused, refused
    assert listener.accepted == 0
    # a Bluesky PDS and an instance on a provider that has none are refused too
    user = new_user()
    bluesky = {"provider": "bluesky", "id": "x.bsky.social", "token": "t-123456789"}
    response = stack.login(user, {**bluesky, "instance_url": f"https://127.1:{listener.port}"})
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "instance_not_allowed",
    )
    github = {"provider": "github", "id": "octocat", "token": "t-123456789"}
    response = stack.login(user, {**github, "instance_url": "https://github.example"})
    assert response.status_code == 422
    assert listener.accepted == 0


def test_the_simulator_port_alone_is_allowed(stack, listener):
    """``OUTBOUND_ALLOW_PRIVATE`` names the simulator's host:port exactly: the same host on
    another port is still refused."""
    sim_host = stack.sim.removeprefix("http://").rsplit(":", 1)[0]
    response = stack.login(
        new_user(),
        {
            "provider": "mastodon",
            "id": "4243",
            "token": "t-123456789",
            "instance_url": f"http://{sim_host}:{listener.port}/mastodon/x.example",
        },
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "instance_not_allowed",
    )
    assert listener.accepted == 0


def test_metrics_and_the_dashboard_show_instances(stack):
    name = instance_name()
    account = mastodon_account(stack, name, 90)
    user = new_user()
    assert_exact(stack, user, account, stack.wait_final(login(stack, user, account)["sync_id"]))
    label = instance_key(stack, "mastodon", name).replace("/", "_")
    text = stack.http.get(f"{stack.web}/metrics", timeout=30).text
    series = [line for line in text.splitlines() if line.startswith("netsync_instance_answers")]
    assert any(f'instance="{label}"' in line for line in series) or any(
        'instance="other"' in line for line in series
    ), series
    rows = stack.http.get(f"{stack.web}/dashboard/state.json", timeout=30).json()["providers"]
    names = [row["provider"] for row in rows]
    assert names[:6] == ["github", "twitter", "facebook", "linkedin", "mastodon", "bluesky"]
    assert all(n.partition("@")[0] in ("mastodon", "bluesky") for n in names[6:])
