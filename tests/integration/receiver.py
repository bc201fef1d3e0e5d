"""A real HTTP receiver for callbacks, in the test process: scripted answers, every request kept."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    at: float
    headers: dict
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class CallbackReceiver:
    """Answers each POST with the next scripted answer for its ``user_id`` (default 200)."""

    def __init__(self):
        self.received: list[Received] = []
        self.scripts: dict[str, list[tuple[int, dict]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers = receiver._answer(body, dict(self.headers))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, body: bytes, headers: dict) -> tuple[int, dict]:
        with self._lock:
            self.received.append(Received(time.time(), headers, body))
            try:
                user = json.loads(body).get("user_id")
            except ValueError:
                user = None
            script = self.scripts.get(user) or []
            return script.pop(0) if script else (200, {})

    def script(self, user_id: str, *answers: tuple[int, dict]) -> None:
        self.scripts[user_id] = list(answers)

    def for_user(self, user_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.json.get("user_id") == user_id]

    def wait_for(self, user_id: str, n: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.for_user(user_id)
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{user_id}: {len(self.for_user(user_id))} callbacks, wanted {n}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class SentryReceiver:
    """Stands in for Sentry's ingest endpoint: keeps every event the SDKs send.

    ``dsn`` is what processes get as ``SENTRY_DSN``; envelopes arrive at
    ``/api/<project>/envelope/`` (gzip-compressed by the SDK), one JSON header
    line, then an item header line and its payload, per item.
    """

    def __init__(self):
        self.events: list[dict] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                import gzip

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._keep(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _keep(self, body: bytes) -> None:
        lines = body.split(b"\n")
        with self._lock:
            self.raw.append(body)
            for header, payload in zip(lines[1::2], lines[2::2]):
                try:
                    if json.loads(header).get("type") == "event":
                        self.events.append(json.loads(payload))
                except ValueError:
                    continue

    def wait_for(self, predicate, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if predicate(event):
                        return event
            time.sleep(0.05)
        raise AssertionError(f"no such Sentry event within {timeout}s ({len(self.events)} events)")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
