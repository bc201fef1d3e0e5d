"""Start the whole service as real processes on this machine, and stop it.

Used by ``make demo``, the integration tests and the benchmarks, so that all
three exercise what production runs: an (embedded, unless ``REDIS_URL`` is
set) Redis, or with ``redis_cluster`` an embedded Redis Cluster of three
masters (``REDIS_CLUSTER=1``; the broker is then ``CELERY_BROKER_URL``,
RabbitMQ), the simulator over real HTTP, the web app, Celery worker
processes per queue, and the scheduler. Nothing runs in-process or eagerly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from queues import all_queue_names, is_redis_broker
from service.config import PROVIDERS
from state.connection import connect
from state.embedded_redis import EmbeddedCluster, EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
#: how long a process may take to come up: generous, because on a loaded machine
#: (a CPU hog beside the suite) the web app took more than 30 s to import
STARTUP_TIMEOUT_S = 120.0
#: the broker for every stack that names none of its own and has no Redis of its own
#: (``make integration-amqp``). Not ``CELERY_BROKER_URL``: Celery lets that variable
#: override every app's configured broker, so the test process's own apps (the HTTP
#: tests' in-process app on Redis, the readiness probe of a Redis-broker stack)
#: would follow it too
SHARED_BROKER_VAR = "DEVSTACK_BROKER_URL"
#: oauthlib refuses a plain-HTTP OAuth 2.0 URL unless this is set in the process's
#: environment (``oauthlib.oauth2.rfc6749.utils.is_secure_transport``); the simulator
#: speaks http://
PLAIN_HTTP_OAUTH_VAR = "OAUTHLIB_INSECURE_TRANSPORT"


@dataclass
class WorkerSpec:
    queues: str  # comma-separated queue names
    pool: str = "prefork"
    concurrency: int = 2
    name: str = ""
    #: the Celery app module (tests may wrap the service's app)
    app: str = "service.make_celery"
    loglevel: str = "WARNING"
    #: run the worker under this command prefix (the benchmarks' profiler: bench/profiling.py)
    wrap: object = None


@dataclass
class DevStack:
    var_dir: Path
    workers: list = field(default_factory=lambda: [WorkerSpec("normal,whale,trickle")])
    scenario: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    web: bool = True
    scheduler: bool = True
    quiet: bool = True
    #: on a shared Redis (REDIS_URL set): the database number this stack owns,
    #: emptied when the stack stops
    redis_db: int | None = None
    #: a Redis of the stack's own even where REDIS_URL is set (fault tests kill it)
    embedded_redis: bool = False
    #: the embedded Redis keeps an append-only file (a restart keeps its data)
    redis_persist: bool = False
    #: the state in an embedded Redis Cluster of three masters of the stack's own
    #: (``REDIS_CLUSTER=1``); the broker must then be ``CELERY_BROKER_URL`` (not Redis)
    redis_cluster: bool = False
    #: the stack's queues and worker names get this prefix (``_isolate_queues``) and its
    #: queues are deleted when it stops: stacks sharing one RabbitMQ never see each
    #: other's messages (a random one is chosen on ``DEVSTACK_BROKER_URL``'s broker)
    queue_region: str | None = None
    #: the broker is the stack's Redis even where ``DEVSTACK_BROKER_URL`` names a shared
    #: one (tests that watch the Redis broker's lists)
    redis_broker: bool = False
    #: start the ``streams`` role (the providers' push channels, ``python -m sync.streams``)
    streams: bool = False
    #: "flask" (``flask run --with-threads``) or "gunicorn": the Procfile's web line
    #: (two gevent worker processes), for tests of what concurrent requests share
    web_server: str = "flask"

    def __post_init__(self):
        self.var_dir = Path(self.var_dir)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.redis: EmbeddedRedis | None = None
        self.cluster: EmbeddedCluster | None = None
        self.base_env: dict = {}
        #: on a shared broker: the prefix of every queue of this stack
        #: (``_isolate_queues``); None on Redis, whose database is the stack's own
        self.namespace: str | None = None
        #: on any AMQP broker: the prefix of this stack's worker names. RabbitMQ holds
        #: one exclusive control queue per worker name (``<name>@<host>.celery.pidbox``),
        #: so a second ``normal@host`` on the same broker (another stack, another run)
        #: dies with RESOURCE_LOCKED at start
        self.node_prefix: str | None = None
        #: process name -> the Celery node name (before ``@``) its worker was started with
        self.node_names: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> DevStack:
        try:
            self._start_redis()
            self._start_database()
            self._start_simulator()
            if self.web:
                self._start_web()
            for index, spec in enumerate(self.workers):
                self.start_worker(spec, index)
            if self.scheduler:
                self.start_scheduler()
            if self.streams:
                self.start_streams()
            self.wait_workers_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            stop_process(proc)
        self.processes.clear()
        if self.namespace:
            self._delete_queues()
        if (
            self.redis is None
            and self.cluster is None
            and self.redis_db is not None
            and self.base_env
        ):
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        if self.redis:
            self.redis.stop()
            self.redis = None
        if self.cluster:
            self.cluster.stop()
            self.cluster = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- where each process runs (tests/hosts places them on hosts of their own) ------
    def command_prefix(self, name: str) -> list[str]:
        """What runs process ``name`` where it belongs (here: this machine, as is)."""
        return []

    def process_env(self, name: str) -> dict:
        """The environment of process ``name``."""
        return self.base_env

    def bind_address(self, name: str) -> str:
        """Where process ``name`` (redis, simulator, web) listens."""
        return "127.0.0.1"

    def reach_address(self, name: str) -> str:
        """Where the others (and this process) reach process ``name``."""
        return self.bind_address(name)

    # -- pieces ------------------------------------------------------------------
    def _start_redis(self) -> None:
        env = dict(os.environ)
        if self.embedded_redis:
            env.pop("CELERY_BROKER_URL", None)
        env.update(self.env)
        if self.redis_cluster:
            broker = env.get("CELERY_BROKER_URL") or ""
            if not broker or is_redis_broker(broker):
                raise RuntimeError(
                    "a Redis Cluster stack needs CELERY_BROKER_URL (RabbitMQ): "
                    "kombu's Redis transport cannot use a cluster"
                )
            self.cluster = EmbeddedCluster(self.var_dir / "redis-cluster")
            url = self.cluster.start()
            env["REDIS_CLUSTER"] = "1"
        else:
            env.pop("REDIS_CLUSTER", None)
            url = (
                None
                if self.embedded_redis
                else (os.environ.get("REDIS_URL") or self.env.get("REDIS_URL"))
            )
            if url and self.redis_db is not None:
                url = (
                    url.rsplit("/", 1)[0] + f"/{self.redis_db}"
                    if url.count("/") > 2
                    else f"{url}/{self.redis_db}"
                )
            if not url:
                self.redis = EmbeddedRedis(
                    self.var_dir / "redis",
                    persist=self.redis_persist,
                    host=self.bind_address("redis"),
                )
                url = self.redis.start()
        env.update(
            {
                "REDIS_URL": url,
                "NETSYNC_VAR_DIR": str(self.var_dir),
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        shared_broker = os.environ.get(SHARED_BROKER_VAR)
        on_shared = bool(shared_broker) and not (
            self.embedded_redis or self.redis_broker or "CELERY_BROKER_URL" in self.env
        )
        if on_shared:
            env["CELERY_BROKER_URL"] = shared_broker
        elif self.redis_broker and "CELERY_BROKER_URL" not in self.env:
            env.pop("CELERY_BROKER_URL", None)
        env.setdefault("CELERY_BROKER_URL", url)
        self.base_env = env
        if self.queue_region or (on_shared and not is_redis_broker(shared_broker)):
            self._isolate_queues(self.queue_region)
        if not is_redis_broker(env["CELERY_BROKER_URL"]):
            import secrets

            self.node_prefix = self.namespace or "t" + secrets.token_hex(4)

    def _isolate_queues(self, namespace: str | None = None) -> None:
        """The broker of ``DEVSTACK_BROKER_URL`` (``make integration-amqp``) is shared:
        by every stack of the run (each with its own Redis, so each must get only its
        own messages) and by other runs. So every provider's work goes to a region of
        this stack's own (``PROVIDER_REGIONS``: ``<ns>`` or ``<ns>_<region>``), workers
        consume those queues and are named ``<ns>-<name>``, and the queues are deleted
        when the stack stops. ``queue_region`` asks for the same on any broker (the
        cluster stacks, each with RabbitMQ in its ``env``); a stack whose own ``env``
        names the broker otherwise isolates itself (tests/integration/test_rabbitmq.py)."""
        import secrets

        from service.config import load_settings

        self.namespace = namespace or "t" + secrets.token_hex(4)
        regions = load_settings(self.base_env).provider_regions
        self.base_env["PROVIDER_REGIONS"] = ",".join(
            f"{provider}:{self.namespace}_{regions[provider]}"
            if provider in regions
            else f"{provider}:{self.namespace}"
            for provider in PROVIDERS
        )

    def broker_queue(self, name: str) -> str:
        """The broker queue that a queue name (``normal``, ``eu.whale``) is in this stack."""
        if not self.namespace:
            return name
        region, dot, queue_class = name.rpartition(".")
        return (
            f"{self.namespace}_{region}.{queue_class}" if dot else f"{self.namespace}.{queue_class}"
        )

    def node_name(self, name: str) -> str:
        """The stem of the Celery worker name (``-n``) of the stack's process ``name``; each
        start adds a random part (``start_worker``), as the Procfile adds the pid and one."""
        return f"{self.node_prefix}-{name}" if self.node_prefix else name

    def _delete_queues(self) -> None:
        from service.config import load_settings

        regions = load_settings(self.base_env).provider_regions
        delete_broker_queues(
            self.broker_url,
            [name for name in all_queue_names(regions) if name.startswith(self.namespace)],
        )

    def redis_client(self, **options):
        """A client for the stack's state Redis (the cluster client on a cluster)."""
        return connect(self.redis_url, cluster=self.redis_cluster, **options)

    @property
    def broker_url(self) -> str:
        return self.base_env["CELERY_BROKER_URL"]

    def _start_database(self) -> None:
        """``DATABASE_URL`` (ours or the caller's environment), else an embedded
        PostgreSQL under ``var_dir``; migrated to the latest schema either way."""
        from state import migrate

        url = self.base_env.get("DATABASE_URL")
        if not url:
            from state import embedded_postgres

            url = embedded_postgres.start(self.var_dir)
        migrate.upgrade(url)
        self.base_env["DATABASE_URL"] = url

    @property
    def database_url(self) -> str:
        return self.base_env["DATABASE_URL"]

    @property
    def redis_url(self) -> str:
        return self.base_env["REDIS_URL"]

    def _start_simulator(self) -> None:
        scenario_file = self.var_dir / "scenario.json"
        scenario_file.write_text(json.dumps(self.scenario or {"accounts": []}))
        proc = self._spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "simulator",
                "--host",
                self.bind_address("simulator"),
                "--port",
                "0",
                "--scenario",
                str(scenario_file),
            ],
            capture=True,
        )
        line = _read_line(proc, "simulator listening on", timeout=STARTUP_TIMEOUT_S)
        port = line.strip().rsplit(":", 1)[1]
        self.simulator_url = f"http://{self.reach_address('simulator')}:{port}"
        _drain(proc, self.var_dir / "simulator.log")
        for provider in PROVIDERS:
            self.base_env.setdefault(
                f"{provider.upper()}_API_URL", f"{self.simulator_url}/{provider}"
            )
        # the push channels too (the simulator takes any bearer for X's Activity API)
        self.base_env.setdefault(
            "BLUESKY_JETSTREAM_URL",
            f"ws://{self.simulator_url.split('://', 1)[1]}/bluesky/jetstream/subscribe",
        )
        self.base_env.setdefault("TWITTER_ACTIVITY_TOKEN", "simulator-activity-token")
        # the simulator serves federated instances (/mastodon/<name>/…) and Bluesky's PLC
        # directory on a loopback address: the one private host:port a login may name
        self.base_env.setdefault("BLUESKY_PLC_URL", f"{self.simulator_url}/bluesky/plc")
        simulator = self.simulator_url.removeprefix("http://")
        allowed = self.base_env.get("OUTBOUND_ALLOW_PRIVATE")
        self.base_env["OUTBOUND_ALLOW_PRIVATE"] = f"{allowed},{simulator}" if allowed else simulator
        allow_plain_http_oauth(self.base_env)

    def _start_web(self) -> None:
        self.web_port = free_port()
        if self.web_server == "gunicorn":
            self._spawn(
                "web",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"{self.bind_address('web')}:{self.web_port}",
                    "--workers",
                    "2",
                    "--worker-class",
                    "gevent",
                    "--worker-connections",
                    "1000",
                    "service:create_app()",
                ],
            )
        else:
            self._spawn(
                "web",
                [
                    sys.executable,
                    "-m",
                    "flask",
                    "--app",
                    "service",
                    "run",
                    "--host",
                    self.bind_address("web"),
                    "--port",
                    str(self.web_port),
                    "--no-reload",
                    "--with-threads",
                ],
            )
        self.web_url = f"http://{self.reach_address('web')}:{self.web_port}"
        wait_http(self.web_url + "/healthz", timeout=STARTUP_TIMEOUT_S)

    def start_worker(self, spec: WorkerSpec, index: int = 0) -> subprocess.Popen:
        import secrets

        name = spec.name or f"w{index}-{spec.queues.replace(',', '-')}"
        # unique per process, not per host: a restarted worker (or another stack's of the
        # same name on a shared broker) never answers for this one
        self.node_names[name] = f"{self.node_name(name)}-{secrets.token_hex(3)}"
        queue_names = ",".join(self.broker_queue(queue) for queue in spec.queues.split(","))
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            spec.app,
            "worker",
            "-Q",
            queue_names,
            "-P",
            spec.pool,
            "-c",
            str(spec.concurrency),
            "-n",
            f"{self.node_names[name]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            spec.loglevel,
        ]
        if spec.wrap is not None:
            cmd = spec.wrap(cmd)
        proc = self._spawn(name, cmd)
        return proc

    def wait_workers_ready(self, timeout: float = 2 * 60.0) -> None:
        """Block until every started worker answers a control ping."""
        names = {self.node_names[name] for name in self.processes if name in self.node_names}
        if not names:
            return
        from celery import Celery

        from service.celery_app import celery_config
        from service.config import load_settings

        probe = Celery("devstack-probe")
        probe.conf.update(celery_config(load_settings(self.base_env), self.redis_url))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                replies = probe.control.ping(timeout=0.5) or []
                answered = {node.split("@", 1)[0] for reply in replies for node in reply}
                if names <= answered:
                    return
                for name in self.processes:
                    if name in self.node_names and self.processes[name].poll() is not None:
                        raise RuntimeError(
                            f"worker {name} exited ({self.processes[name].returncode}); "
                            f"see {self.var_dir}/{name}.log"
                        )
            raise RuntimeError(f"workers {sorted(names)} not ready within {timeout}s")
        finally:
            probe.close()

    def start_scheduler(self, name: str = "scheduler") -> subprocess.Popen:
        return self._spawn(name, [sys.executable, "-m", "sync.scheduler"])

    def start_streams(self, name: str = "streams", env: dict | None = None) -> subprocess.Popen:
        """A ``streams`` process (``env``: variables of its own on top of the stack's)."""
        return self._spawn(name, [sys.executable, "-m", "sync.streams"], env=env)

    def _spawn(
        self, name: str, cmd: list, capture: bool = False, env: dict | None = None
    ) -> subprocess.Popen:
        log = open(self.var_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child process writes to it after we return
        proc = subprocess.Popen(
            self.command_prefix(name) + cmd,
            cwd=ROOT,
            env={**self.process_env(name), **(env or {})},
            start_new_session=True,
            stdout=subprocess.PIPE if capture else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.processes[name] = proc
        return proc


def allow_plain_http_oauth(env: dict) -> None:
    """Let oauthlib accept http:// in the processes started with ``env`` when the
    providers it names over plain HTTP are all the local simulator (loopback).

    Set once for the whole process, before it starts: real providers are https and
    production never sets it (``sync.oauth``). An operator's own setting stays.
    """
    urls = [env.get(f"{provider.upper()}_API_URL") or "" for provider in PROVIDERS]
    plain = [url for url in urls if url.lower().startswith("http://")]
    if plain and all(is_loopback(url) for url in plain):
        env.setdefault(PLAIN_HTTP_OAUTH_VAR, "1")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def network_ids(web_url: str, http, user_id: str, provider: str) -> list[str]:
    """A user's stored network for ``provider``, read as the main app reads it
    (``GET /v1/users/<user>/networks/<provider>``, every page); [] if none."""
    ids, cursor = [], None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = http.get(
            f"{web_url}/v1/users/{user_id}/networks/{provider}", params=params, timeout=30
        )
        if response.status_code == 404:
            return ids
        response.raise_for_status()
        body = response.json()
        ids += [c["id"] for c in body["connections"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


def delete_broker_queues(broker_url: str, names: list[str]) -> None:
    """Remove a stack's own queues from a shared broker (RabbitMQ); gone ones are skipped."""
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=5) as conn:
            channel = conn.channel()
            for queue in names:
                try:
                    channel.queue_delete(queue)
                except Exception:  # noqa: BLE001 - already gone: the channel is closed
                    channel = conn.channel()
    except Exception:  # noqa: BLE001 - the broker went away: nothing to clean on it
        pass


def signed_login_headers(
    body: bytes,
    *,
    secret: str | None = None,
    timestamp: float | None = None,
    delivery: str | None = "new",
    content_type: str = "application/json",
) -> dict:
    """The headers the main app signs a login webhook with (dev secret unless given).

    ``delivery``: "new" for a fresh delivery id, None to send none, else that id.
    """
    import secrets

    from service.config import DEV_WEBHOOK_SECRET
    from sync.signatures import sign

    headers = {
        "Content-Type": content_type,
        "X-Netsync-Signature": sign(
            secret or DEV_WEBHOOK_SECRET, body, int(time.time()) if timestamp is None else timestamp
        ),
    }
    if delivery is not None:
        headers["X-Netsync-Delivery"] = secrets.token_hex(8) if delivery == "new" else delivery
    return headers


def login_body(user_id: str, accounts: list[dict]) -> bytes:
    """A login webhook body from simulator-style accounts (provider, id, token and
    optionally refresh_token / expires_at / token_secret / relations, and
    ``instance_url``: the login's ``instance``, a federated account's server URL)."""
    optional = ("refresh_token", "expires_at", "token_secret", "relations", "instance_url")
    return json.dumps(
        {
            "user_id": user_id,
            "accounts": [
                {
                    "provider": a["provider"],
                    "account_id": a["id"],
                    "access_token": a["token"],
                    **{
                        "instance" if k == "instance_url" else k: a[k]
                        for k in optional
                        if a.get(k) is not None
                    },
                }
                for a in accounts
            ],
        }
    ).encode()


def send_login(
    web_url: str, user_id: str, accounts: list[dict], delivery: str | None = None, http=requests
) -> requests.Response:
    """POST a signed login webhook (dev secret) as the main app would."""
    body = login_body(user_id, accounts)
    return http.post(
        f"{web_url}/webhooks/login",
        data=body,
        headers=signed_login_headers(body, delivery=delivery or "new"),
        timeout=30,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _read_line(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if marker in line:
            return line
        if proc.poll() is not None:
            raise RuntimeError(f"process exited before printing {marker!r}")
    raise RuntimeError(f"no {marker!r} within {timeout}s")


def _drain(proc: subprocess.Popen, path: Path) -> None:
    """Keep reading a child's stdout so it never blocks on a full pipe."""
    import threading

    def pump():
        with open(path, "ab") as sink:
            for chunk in iter(proc.stdout.readline, b""):
                sink.write(chunk)

    threading.Thread(target=pump, daemon=True).start()


def temp_var_dir(prefix: str = "netsync-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
