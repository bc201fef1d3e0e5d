"""``python -m sync.streams``: the ``streams`` role (see ``sync.streams``), until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from sync.scheduler import load_app
from sync.streams.role import StreamsRole

DEFAULT_APP = "service.make_celery:celery_app"


async def _serve(role: StreamsRole) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await role.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync.streams", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--app", default=DEFAULT_APP, help="Celery app, module:attribute")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    celery_app = load_app(args.app)
    svc = celery_app.netsync_services
    if svc.settings.twitter_activity_token:
        from state.credentials import SECRETS_IN_USE

        SECRETS_IN_USE.add(svc.settings.twitter_activity_token)
    asyncio.run(_serve(StreamsRole(svc, celery_app.conf.broker_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
