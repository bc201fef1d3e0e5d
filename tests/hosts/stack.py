"""netsync's roles on hosts of their own: a DevStack whose processes run in network namespaces.

The *services host* is the root namespace, on the bridge's first address: the
stack's Redis (state and, by default, broker), the simulator, and relays
(``tests/hosts/relay.py``) to the session's PostgreSQL and, for
``broker="amqp"``, to the machine's RabbitMQ (both listen on loopback only, so
another namespace reaches them only through a relay, which is also where
PostgreSQL alone can be cut). Every other process runs on the host its
``placement`` names: ``ip netns exec <namespace> …``, with that host's
environment overrides (``host_env``: a far site reaches Redis through a
delaying relay of its own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from devtools.devstack import ROOT, DevStack, stop_process
from tests.hosts.netns import Network

#: the machine's RabbitMQ (``TEST_AMQP_URL``'s host and port)
AMQP_TARGET = "127.0.0.1:5672"


@dataclass
class HostStack(DevStack):
    network: Network | None = None
    #: process name → host name; absent: the services host (the root namespace)
    placement: dict = field(default_factory=dict)
    #: host name → environment overrides for every process on it
    host_env: dict = field(default_factory=dict)
    #: "redis" (the stack's Redis) or "amqp" (the machine's RabbitMQ, through a relay)
    broker: str = "redis"
    #: one scheduler per host named here (the first is ``scheduler``, then
    #: ``scheduler-<host>``); none on the services host
    scheduler_hosts: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        self.relays: dict[str, tuple[subprocess.Popen, str]] = {}

    # -- where things run --------------------------------------------------------------
    def start_worker(self, spec, index: int = 0):
        proc = super().start_worker(spec, index)
        if spec.wrap is not None:  # a node name of the test's own (``same_node_name``)
            cmd = spec.wrap(["-n", "x"])
            self.node_names[spec.name] = cmd[1].split("@", 1)[0]
        return proc

    def host_of(self, name: str) -> str | None:
        return self.placement.get(name)

    def command_prefix(self, name: str) -> list[str]:
        return self.network.exec_prefix(self.host_of(name))

    def process_env(self, name: str) -> dict:
        return {**self.base_env, **self.host_env.get(self.host_of(name), {})}

    def bind_address(self, name: str) -> str:
        # on a host of its own, every interface of its namespace; on the services host,
        # the bridge's address only (not the machine's real interfaces)
        return "0.0.0.0" if self.host_of(name) else self.network.services_address

    def reach_address(self, name: str) -> str:
        host = self.host_of(name)
        if host is None:
            return self.network.services_address
        placed = self.network.hosts[host]
        return placed.front_address or placed.address

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> HostStack:
        try:
            self.embedded_redis = True
            self.redis_broker = self.broker == "redis"
            if self.broker == "amqp":
                self.env["CELERY_BROKER_URL"] = "amqp://guest:guest@{}//".format(
                    self.start_relay("rabbitmq", AMQP_TARGET)
                )
                self.queue_region = self.queue_region or "h" + os.urandom(4).hex()
        except BaseException:
            self.stop()
            raise
        super().start()
        try:
            for index, host in enumerate(self.scheduler_hosts):
                name = "scheduler" if index == 0 else f"scheduler-{host}"
                self.placement[name] = host
                self.start_scheduler(name)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_database(self) -> None:
        super()._start_database()
        self.direct_database_url = self.base_env["DATABASE_URL"]
        relayed = self.start_relay("postgres", postgres_target(self.direct_database_url))
        self.base_env["DATABASE_URL"] = relay_database_url(self.direct_database_url, relayed)

    def stop(self) -> None:
        if self.network is not None:
            for host in list(self.network.hosts):
                if self.network.is_cut(host):
                    self.network.heal(host)  # so its processes can shut down cleanly
        super().stop()
        for proc, _ in self.relays.values():
            stop_process(proc, timeout=5)
        self.relays.clear()

    # -- relays -------------------------------------------------------------------------
    def start_relay(
        self, name: str, target: str, host: str | None = None, delay_ms: float = 0.0
    ) -> str:
        """A relay on ``host`` (None: the services host) to ``target``; where to reach it."""
        listen = "127.0.0.1" if host else self.network.services_address
        cmd = self.network.exec_prefix(host) + [
            sys.executable,
            "-m",
            "tests.hosts.relay",
            "--listen",
            f"{listen}:0",
            "--to",
            target,
            "--delay-ms",
            str(delay_ms),
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        line = proc.stdout.readline().decode()
        if "relay listening on" not in line:
            stop_process(proc)
            raise RuntimeError(f"relay {name} did not start: {line!r}")
        address = line.strip().rsplit(" ", 1)[1]
        self.relays[name] = (proc, address)
        return address

    def cut_relay(self, name: str) -> None:
        self.relays[name][0].send_signal(signal.SIGUSR1)

    def heal_relay(self, name: str) -> None:
        self.relays[name][0].send_signal(signal.SIGUSR2)

    # -- processes on hosts ---------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL a process group (a host's processes, when the host is gone for good)."""
        proc = self.processes.pop(name, None)
        self.node_names.pop(name, None)  # not a worker the stack waits for any more
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout} s; see {self.var_dir}")
            time.sleep(0.1)


def postgres_target(url: str) -> str:
    """The relay target of a PostgreSQL URL: host:port, or the embedded server's socket."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    host, port = info.get("host") or "/tmp", info.get("port") or "5432"
    if host.startswith("/"):
        return f"unix:{host}/.s.PGSQL.{port}"
    return f"{host}:{port}"


def relay_database_url(url: str, relay: str) -> str:
    """``url`` with its server replaced by the relay's address."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    user = quote(info.get("user") or "postgres")
    password = info.get("password")
    auth = f"{user}:{quote(password)}" if password else user
    return f"postgresql://{auth}@{relay}/{info.get('dbname') or 'postgres'}"
