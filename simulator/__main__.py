"""``python -m simulator --port 8900 --scenario FILE.json [--host 127.0.0.1]``.

Prints ``simulator listening on http://HOST:PORT`` once the socket is bound
(with ``--port 0``, the port the OS picked) and exits cleanly on SIGTERM or
SIGINT. Exit status 2: bad arguments or an invalid scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web

from .app import make_app
from .scenario import ScenarioError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--scenario", help="scenario JSON file (default: empty scenario)")
    parser.add_argument(
        "--log-limit", type=int, default=200_000, help="calls kept for /_sim/calls (default 200000)"
    )
    return parser.parse_args(argv)


async def serve(app: web.Application, host: str, port: int) -> None:
    # in-flight calls (a latency fault may hold one for minutes) get 1 s to finish
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_port = runner.addresses[0][1]
    print(f"simulator listening on http://{host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = None
    try:
        if args.scenario:
            with open(args.scenario, encoding="utf-8") as fh:
                scenario = json.load(fh)
        app = make_app(scenario, log_limit=args.log_limit)
    except (OSError, json.JSONDecodeError, ScenarioError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
