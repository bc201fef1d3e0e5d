"""Run the simulator inside a test process, and drive its ``/_sim/`` endpoints.

``run_simulator(scenario)`` serves the app from a background thread on a
free port (no subprocess start-up cost) and yields a ``RunningSimulator``
with the base URL and small helpers for faults, accounts, stats and truth.
Usable from any test suite::

    with run_simulator({"accounts": [...]}) as sim:
        os.environ["GITHUB_API_URL"] = sim.url("github")
        sim.add_faults({"kind": "outage", "provider": "github", "at_call": 3})

``run_simulator_process(scenario, directory=...)`` runs ``python -m simulator``
as a real process instead and yields the same helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from .app import make_app


class FakeClock:
    """A settable epoch clock for ``make_app(clock=...)``: tests move time by hand."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RunningSimulator:
    """A simulator served on ``base_url``, with helpers for its control API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def url(self, provider: str, path: str = "") -> str:
        """Base URL of a provider (what ``<PROVIDER>_API_URL`` should be), plus ``path``."""
        return f"{self.base_url}/{provider}{path}"

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.base_url}/_sim{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise ValueError(f"{method} /_sim{path}: {response.status_code} {response.text}")
        return response.json()

    def add_faults(self, *faults: dict) -> list[dict]:
        return self._control("POST", "/faults", json={"add": list(faults)})["faults"]

    def set_faults(self, *faults: dict) -> list[dict]:
        return self._control("POST", "/faults", json={"faults": list(faults)})["faults"]

    def clear_faults(self) -> None:
        self._control("POST", "/faults", json={"clear": True})

    def faults(self) -> list[dict]:
        return self._control("GET", "/faults")["faults"]

    def put_accounts(self, *accounts: dict) -> dict:
        return self._control("POST", "/accounts", json={"accounts": list(accounts)})

    def reset(self, accounts: bool = False, scenario: dict | None = None) -> dict:
        body: dict = {"accounts": accounts}
        if scenario is not None:
            body = {"scenario": scenario}
        return self._control("POST", "/reset", json=body)

    def stats(self) -> dict:
        return self._control("GET", "/stats")

    def calls(self, **filters: Any) -> list[dict]:
        return self._control("GET", "/calls", params=filters)["calls"]

    def truth(
        self,
        provider: str,
        account_id: str,
        relation: str | None = None,
        instance: str | None = None,
    ) -> dict:
        params = {"relation": relation} if relation else {}
        if instance:
            params["instance"] = instance
        return self._control("GET", f"/truth/{provider}/{account_id}", params=params)

    def tokens(self, **filters: Any) -> list[dict]:
        return self._control("GET", "/tokens", params=filters)["tokens"]

    def change(
        self,
        provider: str,
        account_id: str,
        relation: str | None = None,
        add: int | list | None = None,
        remove: list | None = None,
        instance: str | None = None,
    ) -> dict:
        """``POST /_sim/changes``: ``{"added": [ids], "removed": [ids], "count"}``."""
        body: dict = {"provider": provider, "account_id": account_id}
        changes = (("relation", relation), ("add", add), ("remove", remove), ("instance", instance))
        for name, value in changes:
            if value is not None:
                body[name] = value
        return self._control("POST", "/changes", json=body)


@contextmanager
def run_simulator_process(
    scenario: dict | None = None,
    *,
    directory: str | os.PathLike,
    python: str = sys.executable,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
) -> Iterator[RunningSimulator]:
    """``python -m simulator --port 0`` as a real process (its own event loop and
    GIL, as clients meet it), with ``scenario`` written to ``directory``; stopped
    with SIGTERM on exit. Its output goes to ``directory/simulator.log``."""
    folder = Path(directory)
    scenario_file = folder / "scenario.json"
    scenario_file.write_text(json.dumps(scenario or {}))
    log = open(folder / "simulator.log", "w+", encoding="utf-8")  # noqa: SIM115 - the child process writes to it after we return
    process = subprocess.Popen(
        [
            python,
            "-m",
            "simulator",
            "--host",
            host,
            "--port",
            "0",
            "--scenario",
            str(scenario_file),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = _first_line(process, timeout)
        if not line.startswith("simulator listening on "):
            log.seek(0)
            raise RuntimeError(f"simulator did not start: {line!r} {log.read()[-2000:]}")
        running = RunningSimulator(line.rsplit(" ", 1)[1].strip())
        try:
            yield running
        finally:
            running.http.close()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        log.close()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The process's first stdout line, or '' if none comes within ``timeout``."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


@contextmanager
def run_simulator(
    scenario: dict | None = None,
    *,
    clock: Callable[[], float] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[RunningSimulator]:
    """Serve ``make_app(scenario)`` on a free port in a daemon thread."""
    app = make_app(scenario, **({"clock": clock} if clock else {}))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
            state["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="simulator", daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in state:
        raise state["error"]
    running = RunningSimulator(f"http://{host}:{state['port']}")
    try:
        yield running
    finally:
        running.http.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
