"""A RabbitMQ server of a test's own, so that a fault test can kill it.

The machine's RabbitMQ (``AMQP_URL``) is shared by every run on it and is never
restarted by a test. This starts the installed ``rabbitmq-server`` once more
under its own node name, AMQP and distribution ports, and with its database,
logs, config and Erlang cookie under a directory the test owns; it runs as the
calling user (no ``su`` to ``rabbitmq``: Debian's ``/usr/sbin`` wrapper does that
when root, so its real script in ``/usr/lib/rabbitmq/bin`` is used instead).

A restart on the same port with the same database keeps the durable queues and
the persistent messages the server had written; what a SIGKILL cut short is lost,
as in production.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kombu import Connection

from devtools.devstack import free_port

#: Debian/Ubuntu install the real script here and a root-only ``su`` wrapper on PATH
DEBIAN_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: a start took 2.5 to 4 s on an idle 2-core machine; a loaded one gets far more
START_TIMEOUT_S = 90.0


def server_script() -> str | None:
    if DEBIAN_SCRIPT.exists():
        return str(DEBIAN_SCRIPT)
    return shutil.which("rabbitmq-server")


class PrivateRabbitMQ:
    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self.node = f"netsync-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict:
        home = self.directory
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            # the test's disk is small and shared: do not block publishers on it
            "disk_free_limit.absolute = 1MB\n"
        )
        (home / "enabled_plugins").write_text("[].\n")  # no management listener on 15672
        (home / "rabbitmq-env.conf").write_text("")  # not the system's (it names the node)
        return {
            **os.environ,
            "HOME": str(home),  # the Erlang cookie of this node's own
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start the server (again: same node, port and database) and wait until it
        accepts an AMQP connection; returns the seconds it took."""
        script = server_script()
        if script is None:
            raise RuntimeError("no rabbitmq-server installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.directory / f"server-{self.starts}.out", "ab")  # noqa: SIM115 - the child process writes to it after we return
        began = time.monotonic()
        self.process = subprocess.Popen(
            [script],
            cwd=self.directory,
            env=self._env(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.process.returncode}; "
                    f"see {self.directory}/server-{self.starts}.out"
                )
            if self.answers():
                return time.monotonic() - began
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"rabbitmq-server did not accept connections within {timeout} s")

    def answers(self) -> bool:
        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def kill(self) -> None:
        """SIGKILL the whole server (the Erlang VM and its helpers)."""
        self._signal(signal.SIGKILL, wait=30)

    def stop(self) -> None:
        """A clean stop (SIGTERM: RabbitMQ shuts down in order), SIGKILL if it hangs."""
        if not self._signal(signal.SIGTERM, wait=60):
            self.kill()

    def _signal(self, signum: int, wait: float) -> bool:
        if self.process is None:
            return True
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
        # the VM may outlive its shell script for a moment: wait for the group to go
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            return False
        self.process = None
        return True

    def __enter__(self) -> PrivateRabbitMQ:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
