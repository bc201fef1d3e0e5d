"""Redis round trips per page: ``python -m bench.roundtrips [--size N] [--provider P]``.

Starts a stack whose page worker (``--webhooks N``: the web role, under
gunicorn as the Procfile runs it) runs with redis-py's
``send_packed_command`` counted (one call = one round trip: a single
command or a whole pipeline), each call named by the netsync function that
made it (the first frame in ``state/``, ``sync/``, ``service/``), or by
kombu/Celery when no netsync frame is on the stack (the broker: consuming,
acking, publishing). Syncs one account, then prints the round trips per
page by caller, and the commands Redis ran per page (``INFO commandstats``,
every process of the stack: web, scheduler and worker included).

A diagnostic, not one of ``make bench``'s figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_OURS = tuple(str(ROOT / d) + os.sep for d in ("state", "sync", "service", "providers"))

_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()
_owner = {"pid": None}


def _site(frame) -> str:
    broker = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_OURS):
            script = frame.f_locals.get("self") if frame.f_code.co_name == "__call__" else None
            if name.endswith("lua.py") and script is not None:
                return f"script {script.name}.lua"
            return f"{os.path.relpath(name, ROOT)}:{frame.f_code.co_name}"
        if broker is None and (
            f"{os.sep}kombu{os.sep}" in name or f"{os.sep}celery{os.sep}" in name
        ):
            broker = f"broker ({name.rsplit(os.sep, 2)[-2]}:{frame.f_code.co_name})"
        frame = frame.f_back
    return broker or "other"


def _dumper(out_dir: Path) -> None:
    path = out_dir / f"{os.getpid()}.json"
    while True:
        time.sleep(0.25)
        with _lock:
            data = dict(_counts)
        path.write_text(json.dumps(data))


def install(out_dir: str) -> None:
    """Count every round trip of this process (and its forked children) into ``out_dir``."""
    import redis.connection

    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        if _owner["pid"] != os.getpid():  # first call in this (possibly forked) process
            _owner["pid"] = os.getpid()
            with _lock:
                _counts.clear()
            threading.Thread(target=_dumper, args=(Path(out_dir),), daemon=True).start()
        site = _site(sys._getframe(1))
        with _lock:
            _counts[site] += 1
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted


BOOT = (
    "import sys, runpy; sys.path.insert(0, {root!r}); import bench.roundtrips as r; "
    "r.install({out!r}); module = sys.argv[2]; sys.argv = [module] + sys.argv[3:]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def wrap_for(out_dir: Path):
    """``python -m <module> ...`` (a Celery worker, gunicorn) with its round trips counted."""

    def wrap(cmd: list[str]) -> list[str]:
        assert cmd[1] == "-m", cmd
        return [cmd[0], "-c", BOOT.format(root=str(ROOT), out=str(out_dir))] + cmd[1:]

    return wrap


def collect(out_dir: Path) -> collections.Counter:
    total: collections.Counter = collections.Counter()
    for path in out_dir.glob("*.json"):
        try:
            total.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    return total


def commandstats(client) -> dict:
    return {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in client.info("commandstats").items()
    }


#: an account id each provider accepts, where the bench's default ("rt-<size>") is not one
ACCOUNT_IDS = {"twitter": "2244994945", "facebook": "100000000020000", "bluesky": "rt.bsky.social"}
#: what the benchmark measures is round trips, not a provider's quota
UNBOUND_QUOTA = "1000000/3600/token"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants alive now (a prefork pool's children)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in [pid] + _descendants(pid):
        try:
            with open(f"/proc/{proc}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return children + [d for c in children for d in _descendants(c)]


def redis_cpu_seconds(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(
    size: int,
    provider: str = "github",
    pool: str = "prefork",
    concurrency: int = 2,
    env: dict | None = None,
    count: bool = True,
) -> dict:
    """One sync; with ``count``, the worker's round trips by caller (the counting itself
    costs CPU: compare CPU per page of runs without it)."""
    import redis

    from bench import api as bench_api
    from devtools.devstack import DevStack, WorkerSpec, temp_var_dir

    out_dir = Path(tempfile.mkdtemp(prefix="netsync-roundtrips-"))
    import providers

    # a provider that announces its limits is gated by them (the simulator announces
    # none here: the documented prior, far above one sync); a configured quota there
    # would be a cap of its own, with its own round trips (``sync.outbound``)
    announces = bool(providers.provider_classes()[provider].ANNOUNCED_RULES)
    env = {**({} if announces else {f"QUOTA_{provider.upper()}": UNBOUND_QUOTA}), **(env or {})}
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-rt-"),
        scheduler=True,
        env=env,
        # nor the provider's real limits in the simulator (Mastodon: 300 paging calls
        # per 15 min; Facebook: 200 an hour)
        scenario={"rate_limits": {provider: []}},
        workers=[
            WorkerSpec(
                "normal,whale",
                pool=pool,
                concurrency=concurrency,
                name="pages",
                wrap=wrap_for(out_dir) if count else None,
            )
        ],
    )
    with stack:
        client = redis.Redis.from_url(stack.redis_url)
        time.sleep(1.0)
        idle = collect(out_dir)
        before = commandstats(client)
        worker_pid = stack.processes["pages"].pid
        cpu_before, redis_before = cpu_seconds(worker_pid), redis_cpu_seconds(client)
        account = {
            "provider": provider,
            "id": ACCOUNT_IDS.get(provider, f"rt-{size}"),
            "size": size,
            "token": "tok-rt",
        }
        bench_api.add_account(stack, account)
        started = time.monotonic()
        record = bench_api.wait_final(
            stack, bench_api.login(stack, "rt-user", account), timeout=900
        )
        seconds = time.monotonic() - started
        after = commandstats(client)
        cpu, redis_cpu = (
            cpu_seconds(worker_pid) - cpu_before,
            redis_cpu_seconds(client) - redis_before,
        )
        time.sleep(1.0)  # the dumpers' last write
        counted = collect(out_dir)
    assert record["status"] == "succeeded", record
    pages = int(record["pages_fetched"])
    counted.subtract(idle)
    sites = {site: n for site, n in counted.most_common() if n > 0}
    ours = sum(n for site, n in sites.items() if not site.startswith(("broker", "other")))
    commands = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    commands = {name: n for name, n in sorted(commands.items(), key=lambda kv: -kv[1]) if n > 0}
    cpu_figures = {
        "worker_cpu_ms_per_page": round(1000 * cpu / pages, 2),
        "redis_cpu_ms_per_page": round(1000 * redis_cpu / pages, 2),
        "cpu_instrumented": count,
    }
    if not count:
        return {
            "provider": provider,
            "size": size,
            "pages": pages,
            "seconds": round(seconds, 2),
            **cpu_figures,
        }
    return {
        "provider": provider,
        "size": size,
        "pages": pages,
        "seconds": round(seconds, 2),
        **cpu_figures,
        "round_trips_worker": sum(sites.values()),
        "round_trips_per_page": round(sum(sites.values()) / pages, 2),
        "netsync_round_trips_per_page": round(ours / pages, 2),
        "per_page_by_site": {site: round(n / pages, 3) for site, n in sites.items()},
        "redis_commands_per_page": round(sum(commands.values()) / pages, 2),
        "commands_per_page": {name: round(n / pages, 3) for name, n in commands.items()},
    }


def run_webhooks(count: int) -> dict:
    """Round trips per signed login webhook (one new user, one GitHub account), in the
    web role as the Procfile runs it (gunicorn, gevent), sent one at a time."""
    import redis
    import requests

    from bench.ingest import start_gunicorn
    from devtools.devstack import (
        DevStack,
        login_body,
        signed_login_headers,
        stop_process,
        temp_var_dir,
    )

    out_dir = Path(tempfile.mkdtemp(prefix="netsync-roundtrips-web-"))
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-rt-web-"),
        workers=[],
        web=False,
        scheduler=False,
        env={"LOG_LEVEL": "WARNING"},
    )
    with stack:
        proc, url = start_gunicorn(
            stack, type("Wrap", (), {"wrap": staticmethod(wrap_for(out_dir))})
        )
        try:
            client = redis.Redis.from_url(stack.redis_url)
            http = requests.Session()
            for i in range(5):  # warm-up: imports, connections, scripts
                body = login_body(
                    f"rt-warm-{i}",
                    [{"provider": "github", "id": f"warm-{i}", "token": f"tok-warm-{i}"}],
                )
                http.post(
                    f"{url}/webhooks/login", data=body, headers=signed_login_headers(body)
                ).raise_for_status()
            time.sleep(1.0)
            idle = collect(out_dir)
            before = commandstats(client)
            for i in range(count):
                body = login_body(
                    f"rt-user-{i}", [{"provider": "github", "id": f"acct-{i}", "token": f"tok-{i}"}]
                )
                answer = http.post(
                    f"{url}/webhooks/login", data=body, headers=signed_login_headers(body)
                )
                assert answer.status_code == 202, answer.text
            after = commandstats(client)
            time.sleep(1.0)
            counted = collect(out_dir)
        finally:
            stop_process(proc)
    counted.subtract(idle)
    sites = {site: n for site, n in counted.most_common() if n > 0}
    commands = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    commands = {name: n for name, n in sorted(commands.items(), key=lambda kv: -kv[1]) if n > 0}
    return {
        "webhooks": count,
        "round_trips_per_webhook": round(sum(sites.values()) / count, 2),
        "per_webhook_by_site": {site: round(n / count, 3) for site, n in sites.items()},
        "redis_commands_per_webhook": round(sum(commands.values()) / count, 2),
        "commands_per_webhook": {name: round(n / count, 3) for name, n in commands.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.roundtrips", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--provider", default="github")
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="no counting: only the worker's and Redis' CPU per page",
    )
    parser.add_argument(
        "--webhooks",
        type=int,
        default=0,
        help="instead: round trips per signed login webhook, over this many",
    )
    args = parser.parse_args(argv)
    result = (
        run_webhooks(args.webhooks)
        if args.webhooks
        else run(args.size, args.provider, count=not args.cpu_only)
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
