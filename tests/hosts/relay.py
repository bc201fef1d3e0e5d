"""A TCP relay between two sites: a delay each way, and a link that can be cut and healed.

``python -m tests.hosts.relay --listen HOST:PORT --to HOST:PORT [--delay-ms N]``
(``--to unix:PATH`` for a Unix socket, the embedded PostgreSQL's) prints
``relay listening on HOST:PORT`` once bound (``PORT`` 0 picks one) and runs
until SIGTERM. ``tc netem`` is not available on this kernel, so distance is
made here: every chunk read is written on ``delay`` later, in order, in each
direction (a round trip through the relay costs ``2 × delay``).

SIGUSR1 cuts the link, SIGUSR2 heals it. While cut, nothing is forwarded either
way and nothing is refused or reset: bytes wait, as TCP retransmissions would
in a real partition, and go through on heal; a connection opened meanwhile is
accepted and then hears nothing (where a real partition would leave it
connecting: either way the client's own timeout is what ends its wait).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time


class Link:
    """The relay's state: its delay, and whether it is cut."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.open = asyncio.Event()
        self.open.set()

    def cut(self) -> None:
        self.open.clear()

    def heal(self) -> None:
        self.open.set()


async def pump(reader, writer, link: Link) -> None:
    """Read from one side, write to the other ``delay`` later, in order; EOF passes too."""
    line: asyncio.Queue = asyncio.Queue()

    async def read_side():
        while True:
            data = await reader.read(65536)
            await line.put((time.monotonic() + link.delay_s, data))
            if not data:
                return

    async def write_side():
        while True:
            due, data = await line.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await link.open.wait()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read_side(), write_side())
    except (ConnectionError, OSError):
        writer.close()


async def serve(listen: str, to: str, link: Link) -> None:
    host, port = listen.rsplit(":", 1)

    async def connect():
        if to.startswith("unix:"):
            return await asyncio.open_unix_connection(to[len("unix:") :])
        target_host, target_port = to.rsplit(":", 1)
        return await asyncio.open_connection(target_host, int(target_port))

    async def on_client(client_reader, client_writer):
        await link.open.wait()  # a connection made while cut hears nothing until heal
        try:
            server_reader, server_writer = await connect()
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, link),
            pump(server_reader, client_writer, link),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            writer.close()

    server = await asyncio.start_server(on_client, host, int(port), backlog=512)
    bound = server.sockets[0].getsockname()
    print(f"relay listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, link.cut)
    loop.add_signal_handler(signal.SIGUSR2, link.heal)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts.relay")
    parser.add_argument("--listen", required=True, help="HOST:PORT (PORT 0 picks a free one)")
    parser.add_argument("--to", required=True, help="HOST:PORT or unix:PATH")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added each way")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.to, Link(args.delay_ms / 1000.0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
